"""A killed `bantin digest` or `bantin build` leaves no process behind.

Finding 12: the composing and rendering workers (~97 MB each) outlived a kill -9 of their
parent by minutes. Each command here runs in its own session, so every process it starts
shares its process group; after SIGKILL the group must empty within a bounded wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from servicekit import wait_until
from smtpserver import running_server

from service.workers import PARALLEL_MIN


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # pgrp, and not already a zombie
            members.append(int(entry))
    return members


def start(project: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        cwd=project,
        env={k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when_workers_run(process: subprocess.Popen[bytes], what: str) -> None:
    # the command, its forkserver and at least one worker
    wait_until(lambda: len(group_members(process.pid)) >= 3, 60, f"{what}'s worker processes")
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    wait_until(lambda: not group_members(process.pid), 15, f"every process of {what} to end")


def test_a_killed_build_leaves_no_workers(project: Path) -> None:
    (project / "config" / "subscribers.toml").write_text("", encoding="utf-8")
    for n in range(PARALLEL_MIN * 3):
        path = project / "content" / f"{n % 20:02d}" / f"bai-{n:05d}.md"
        path.parent.mkdir(exist_ok=True)
        body = "Đoạn văn bản của thông báo. " * 40
        path.write_text(f"---\ntitle: Bài {n}\ndate: 2024-05-01\n---\n{body}\n", encoding="utf-8")
    kill_when_workers_run(start(project, "build"), "bantin build")


def test_a_killed_digest_leaves_no_workers(project: Path) -> None:
    people = 600  # well past the messages composed in-process before workers start
    with running_server(data_delay=0.05) as server:
        (project / "config" / "bantin.toml").write_text(
            '[site]\ntitle = "Cổng"\nbase_url = "https://tinh.example.gov.vn"\n'
            '[mail]\ntransport = "smtp"\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n',
            encoding="utf-8",
        )
        (project / "config" / "subscribers.toml").write_text(
            "".join(f'[[subscriber]]\nemail = "p{n}@example.org"\n' for n in range(people)),
            encoding="utf-8",
        )
        (project / "content" / "cu.md").write_text(
            "---\ntitle: Cũ\ndate: 2024-05-01\n---\nx\n", encoding="utf-8"
        )
        subprocess.run(
            [sys.executable, "-m", "service", "digest"], cwd=project, check=True, timeout=120
        )
        (project / "content" / "moi.md").write_text(
            "---\ntitle: Mới\ndate: 2024-05-02\n---\nx\n", encoding="utf-8"
        )
        kill_when_workers_run(start(project, "digest"), "bantin digest")
        assert 0 < server.count() < people  # killed mid-send, as meant
