"""The three ways bounces come in, each end to end: `bantin bounce` on stdin (a subprocess, as
Postfix's pipe runs it), a maildir and a real Dovecot IMAP folder read by the service's poller,
and `bantin run` closing the loop: a digest sent over real SMTP, its bounce built from the
envelope sender the server saw, the address suppressed and skipped by the next run.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bouncekit import BOUNCES, KEY, POLICY, SAMPLES, Ledger, resigned
from dovecot import PASSWORD, USER, running_dovecot
from servicekit import REPO, Bantin, smtp_server

from service.runtime.bounce_reading import BounceReader
from service.runtime.components import Components
from service.runtime.health import Health
from service.settings import Settings, load_settings

HARD = "postfix-user-unknown.eml"
TOKENED = re.compile(rb"bounces\+[a-z2-7]{24,36}@laichau\.example\.gov\.vn")
COMPLAINT = "ses-complaint.eml"


@pytest.fixture
def ledger(project: Path) -> Iterator[Ledger]:
    made = Ledger(project)
    yield made
    made.state.close()


def bantin_bounce(project: Path, data: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
    env["PYTHONPATH"] = str(REPO)
    env["BANTIN_SERVER__SECRET_KEY"] = KEY.decode()
    return subprocess.run(
        [sys.executable, "-m", "service", "bounce"],
        input=data,
        cwd=project,
        env=env,
        capture_output=True,
        timeout=60,
    )


def test_bantin_bounce_reads_stdin_records_and_exits_0(ledger: Ledger, project: Path) -> None:
    hard, complaint = POLICY[HARD][0], POLICY[COMPLAINT][0]
    first, second = ledger.deliver(hard), ledger.deliver(complaint)
    done = bantin_bounce(project, resigned(HARD, first, hard))
    assert done.returncode == 0, done.stderr
    assert f"{hard} bounced (5.1.1" in done.stdout.decode()
    done = bantin_bounce(project, resigned(COMPLAINT, second, complaint))
    assert done.returncode == 0, done.stderr
    assert ledger.suppressed() == {hard: "hard_bounce", complaint: "complaint"}
    assert ledger.unsubscribed() == {complaint}
    # a human's reply is dealt with too (kept in the log, nothing done): still 0, no retry
    human = bantin_bounce(project, (SAMPLES / "human.eml").read_bytes())
    assert human.returncode == 0 and b"nothing done" in human.stdout


def test_bantin_bounce_exits_75_when_the_state_is_unreachable(project: Path) -> None:
    config = project / "config" / "bantin.toml"
    config.write_text(
        config.read_text(encoding="utf-8")
        + '[state]\nurl = "postgresql://bantin:hunter2secret@127.0.0.1:1/bantin"\n',
        encoding="utf-8",
    )
    done = bantin_bounce(project, resigned(HARD, 1, POLICY[HARD][0]))
    assert done.returncode == 75, done.stderr  # EX_TEMPFAIL: the MTA keeps it, tries again
    assert b"hunter2secret" not in done.stderr + done.stdout
    assert b"127.0.0.1:1" in done.stderr


def reader(ledger: Ledger, settings: Settings, health: Health) -> BounceReader:
    parts = Components.build(settings, ledger.state)
    return BounceReader(ledger.state, health, current=lambda: parts, key=lambda: KEY)


def samples_for(ledger: Ledger) -> dict[str, bytes]:
    """Every sample of the policy table, re-signed for a delivery of its own."""
    return {
        name: resigned(name, ledger.deliver(email), email) for name, (email, *_) in POLICY.items()
    }


def expected() -> dict[str, str]:
    return {email: reason for email, _, reason, _ in POLICY.values() if reason}


def test_the_poller_reads_a_maildir_moves_each_message_to_cur_and_acts(
    ledger: Ledger, project: Path
) -> None:
    box = project / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    messages = samples_for(ledger) | {"human.eml": (SAMPLES / "human.eml").read_bytes()}
    for n, data in enumerate(messages.values()):
        (box / "new" / f"17957448{n:02d}.M1P1.mail").write_bytes(data)
    settings = load_settings(project / "config" / "bantin.toml").model_copy(
        update={
            "bounces": ledger.settings.bounces.model_copy(
                update={"maildir": box, "soft_bounce_limit": 3}
            )
        }
    )
    health = Health()
    asyncio.run(reader(ledger, settings, health).poll())
    assert ledger.suppressed() == expected()
    assert os.listdir(box / "new") == []
    cur = sorted(os.listdir(box / "cur"))
    assert len(cur) == len(messages)  # nothing deleted
    assert sum(name.endswith(":2,F") for name in cur) == 1  # the human's mail, for a person
    job = health.jobs["bounces"]
    assert job.ok and f"{len(messages)} by maildir" in job.detail
    asyncio.run(reader(ledger, settings, health).poll())  # nothing new: nothing changes
    assert ledger.suppressed() == expected()


def test_the_poller_reads_an_imap_folder_and_a_refused_login_fails_the_job(
    ledger: Ledger, project: Path
) -> None:
    with running_dovecot() as server:
        for data in samples_for(ledger).values():
            server.append("INBOX", data.replace(b"\n", b"\r\n"))
        imap = {
            "imap_host": "127.0.0.1",
            "imap_port": server.port,
            "imap_tls": "none",
            "imap_username": USER,
            "imap_password": PASSWORD,
        }
        base = ledger.settings.bounces.model_dump() | imap
        good = ledger.settings.model_copy(
            update={"bounces": type(ledger.settings.bounces).model_validate(base)}
        )
        health = Health()
        asyncio.run(reader(ledger, good, health).poll())
        assert ledger.suppressed() == expected()
        assert server.folder("INBOX") == []
        assert len(server.folder("bantin-processed")) == len(POLICY)
        assert health.jobs["bounces"].ok

        wrong = base | {"imap_password": "not the password"}
        bad = ledger.settings.model_copy(
            update={"bounces": type(ledger.settings.bounces).model_validate(wrong)}
        )
        asyncio.run(reader(ledger, bad, health).poll())
        job = health.jobs["bounces"]
        assert not job.ok and "imap_username" in job.detail
        assert "not the password" not in job.detail


def test_bantin_run_reads_the_maildir_and_the_next_digest_skips_the_bounced(
    project: Path,
) -> None:
    box = project / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True)
    dead, alive = "tran.thi.lan@mail.example.vn", "hoa@example.org"
    with smtp_server() as (port, mailbox):
        bantin = Bantin(project, port)
        text = bantin.config_text().replace(
            'transport = "smtp"\n', f'transport = "smtp"\nbounce_address = "{BOUNCES}"\n'
        )
        bantin.write_config(text + f'\n[bounces]\nmaildir = "{box}"\npoll_interval = 10\n')
        bantin.publish("Thông báo lịch tiếp công dân tháng 5")
        bantin.subscribe(dead, alive)
        try:
            bantin.start()
            bantin.publish("Lịch nghỉ Tết Nguyên đán")
            [sent] = bantin.wait(lambda: mailbox.to(dead), 15, "the digest to the dead address")
            assert sent.sender.startswith("bounces+") and sent.sender.endswith(BOUNCES[7:])
            # the relay accepted it; the bounce comes later, to the envelope sender
            bounce = TOKENED.sub(sent.sender.encode(), (SAMPLES / HARD).read_bytes())
            (box / "new" / "1795744800.M1P1.mail").write_bytes(bounce)
            bantin.wait(lambda: not os.listdir(box / "new"), 30, "the poller to read the maildir")
            status = bantin.cli("status")
            assert status.returncode == 0, status.stderr
            suppressed = status.stdout.split("Suppressed:", 1)[1]
            assert dead in suppressed and "hard bounce" in suppressed and "5.1.1" in suppressed
            bantin.publish("Kết quả tuyển dụng công chức")
            bantin.wait(lambda: len(mailbox.to(alive)) == 2, 15, "the second digest")
            assert len(mailbox.to(dead)) == 1
            resumed = bantin.cli("resume", dead)
            assert resumed.returncode == 0 and "no longer suppressed" in resumed.stdout
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()}")
