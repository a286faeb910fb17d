"""Stopping a command, and closing its output, print no traceback without -v.

The real `bantin` in a subprocess: Ctrl-C as a terminal sends it (SIGINT to the whole process
group, worker processes included), SIGTERM as systemd sends it (to every process), and a
reader that goes away (`bantin status | head -1`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from smtpserver import running_server

Write = Callable[[str, str], Path]
PEOPLE = [f"nguoi{n:03d}@example.org" for n in range(240)]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}


def configure(project: Path, smtp_port: int) -> None:
    (project / "config" / "bantin.toml").write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        '[mail]\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\ntransport = "smtp"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\ntimeout = 20\n'
        "concurrency = 2\n",
        encoding="utf-8",
    )
    (project / "config" / "subscribers.toml").write_text(
        "".join(f'[[subscriber]]\nemail = "{p}"\n' for p in PEOPLE), encoding="utf-8"
    )


def bantin(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("sig", "status", "said"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_a_digest_stopped_mid_send_says_so_in_one_line_and_the_next_run_sends_the_rest(
    project: Path, write: Write, sig: signal.Signals, status: int, said: str
) -> None:
    with running_server(data_delay=0.03) as server:
        configure(project, server.port)
        write("cu.md", "---\ntitle: Tin cũ\ndate: 2024-01-01\n---\nx\n")
        assert bantin(project, "digest").returncode == 0  # everyone seen; nothing sent
        write("moi.md", "---\ntitle: Tin mới\ndate: 2024-01-02\n---\nx\n")
        # its own process group, as a command typed in a terminal has: the signal reaches the
        # worker processes that compose beside the sender too
        sending = subprocess.Popen(
            [sys.executable, "-m", "service", "digest"],
            cwd=project,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while len(server.received) < 90 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(sending.pid, sig)
        _, err = sending.communicate(timeout=30)
        assert sending.returncode == status, err
        assert "Traceback" not in err and "Error" not in err, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines == [
            f"bantin digest: stopped by {said}; what was not sent stays pending, "
            "and the next run sends it"
        ]
        assert 90 <= len(server.received) < len(PEOPLE)

        again = bantin(project, "digest")
        assert again.returncode == 0, again.stderr
        counts = Counter(r.recipient for r in server.received)
    assert set(counts) == set(PEOPLE)
    assert max(counts.values()) <= 2  # at most what was in flight comes twice


def test_status_into_a_closed_pipe_prints_no_traceback(project: Path) -> None:
    (project / "config" / "subscribers.toml").write_text(
        '[[subscriber]]\nemail = "hoa@example.org"\n', encoding="utf-8"
    )
    reader, writer = os.pipe()
    os.close(reader)  # `| head -1` that has already read its line and gone
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service", "status"],
            cwd=project,
            env=env(),
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == 141


def test_status_piped_into_head_gives_its_first_line(project: Path) -> None:
    (project / "config" / "subscribers.toml").write_text(
        "".join(f'[[subscriber]]\nemail = "{p}"\n' for p in PEOPLE[:3]), encoding="utf-8"
    )
    done = subprocess.run(
        f"{sys.executable} -m service status | head -1",
        shell=True,
        cwd=project,
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.startswith("Subscribers: 3 active")
    assert done.stdout.count("\n") == 1
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr
