"""A digest run whose state database fails mid-run ends, exit 1, and loses nothing.

Finding 6: a database locked for longer than the busy timeout killed the sender tasks on the
failed save; the bounded queue then blocked, the run hung forever and held the runner lock.
Here another process really holds the SQLite database locked mid-send.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from servicekit import wait_until
from smtpserver import running_server

from service import cli
from service.ledger import State, db
from service.mail import senders

PEOPLE = [f"p{n:02d}@example.org" for n in range(8)]
LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()  # held until the test closes our stdin
"""


def configure(project: Path, port: int) -> Path:
    config = project / "config" / "bantin.toml"
    config.write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        '[mail]\ntransport = "smtp"\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\ntimeout = 5\n'
        "concurrency = 1\n",
        encoding="utf-8",
    )
    (project / "config" / "subscribers.toml").write_text(
        "".join(f'[[subscriber]]\nemail = "{p}"\n' for p in PEOPLE), encoding="utf-8"
    )
    return config


def publish(project: Path, name: str) -> None:
    (project / "content" / f"{name}.md").write_text(
        f"---\ntitle: Tin {name}\ndate: 2024-05-01\n---\nNội dung.\n", encoding="utf-8"
    )


def test_a_database_locked_mid_send_stops_the_run_and_loses_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 200)  # the 10 s of production, shortened
    monkeypatch.setattr(senders, "LEDGER_PATIENCE", 1.0)  # and the 30 s a sender waits
    with running_server(data_delay=0.2) as server:
        config = configure(project, server.port)
        publish(project, "cu")
        assert cli.main(["--config", str(config), "digest"]) == 0
        publish(project, "moi")
        result: dict[str, int] = {}
        run = threading.Thread(
            target=lambda: result.setdefault("code", cli.main(["--config", str(config), "digest"])),
            daemon=True,
        )
        run.start()
        wait_until(lambda: server.count() >= 1, 20, "the first message to arrive")
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(project / "var" / "bantin.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline() == "locked\n"
            run.join(30)
            assert not run.is_alive(), "the run hung on the locked database"
        finally:
            assert locker.stdin is not None
            locker.stdin.close()
            locker.wait(10)
        assert result["code"] == 1
        output = capsys.readouterr()
        assert "stopped early" in output.out and "database is locked" in output.out
        assert "Traceback" not in output.err and "[SQL:" not in output.out + output.err
        sent_before = server.count()

        # the lock is gone: the next run sends the rest; only what was in flight repeats
        assert cli.main(["--config", str(config), "digest"]) == 0
        assert sorted(set(server.recipients())) == PEOPLE
        assert len(server.recipients()) - len(PEOPLE) <= 1
        assert server.count() > sent_before
    state = State("sqlite:///var/bantin.db")
    try:
        assert state.counts()["pending"] == 0
    finally:
        state.close()
