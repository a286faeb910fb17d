"""The real service in a subprocess, a real SMTP server to catch its mail, and bounded waits.

Used by test_service.py and test_schedule.py: start `python -m service run` in a project
directory on free ports, talk to it over HTTP, and read what it mailed. Every wait has a
deadline; a timeout shows the tail of the service's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from smtpserver import Received, Recorder, free_port, running_server

REPO = Path(__file__).resolve().parent.parent
POLL = 0.05


def wait_until(check: Callable[[], Any], timeout: float, what: str, log: Path | None = None) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\n--- service log (tail) ---\n" + "\n".join(
                    log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
                )
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")
        time.sleep(POLL)


# --- SMTP -------------------------------------------------------------------------------------


Mail = Received
Mailbox = Recorder


@contextmanager
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    """A real SMTP server on a free port; ``mailbox.hold()`` keeps messages in flight."""
    with running_server() as server:
        yield server.port, server.recorder


# --- the project and the service ---------------------------------------------------------------

CONFIG = """\
[site]
title = "Cổng thông tin tỉnh"
base_url = "http://127.0.0.1:{port}"
author = "Văn phòng UBND tỉnh"

[schedule]
scan_interval = 1
daily = "{daily}"
weekly = "{weekly}"

[mail]
from = "Bản tin <bantin@tinh.example.gov.vn>"
transport = "smtp"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout = 5
concurrency = {concurrency}

[server]
host = "127.0.0.1"
port = {port}
"""
# Schedules that never fire during a test run, unless a test asks for real ones.
RARE_DAILY = "0 7 1 1 *"
RARE_WEEKLY = "0 7 1 1 *"


def write_atomic(path: Path, text: str) -> None:
    """Write as editors and deploy tools do: the watcher never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def article(title: str, date: str, category: str = "Thông báo") -> str:
    return f"---\ntitle: {title}\ndate: {date}\ncategory: {category}\n---\nNội dung: {title}.\n"


def subscribers_toml(*emails: str, frequency: str = "immediate") -> str:
    return "".join(f'[[subscriber]]\nemail = "{e}"\nfrequency = "{frequency}"\n\n' for e in emails)


@dataclass
class Bantin:
    """One project directory and the `bantin run` process serving it."""

    root: Path
    smtp_port: int
    port: int = field(default_factory=free_port)
    concurrency: int = 2
    daily: str = RARE_DAILY
    weekly: str = RARE_WEEKLY
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)
    _articles: int = 0

    def __post_init__(self) -> None:
        self.log = self.root / "service.log"
        self.write_config()

    # files
    @property
    def config(self) -> Path:
        return self.root / "config" / "bantin.toml"

    @property
    def subscribers_file(self) -> Path:
        return self.root / "config" / "subscribers.toml"

    def config_text(self, **changes: Any) -> str:
        values = {
            "port": self.port,
            "smtp_port": self.smtp_port,
            "concurrency": self.concurrency,
            "daily": self.daily,
            "weekly": self.weekly,
            **changes,
        }
        return CONFIG.format(**values)

    def write_config(self, text: str | None = None) -> None:
        write_atomic(self.config, text if text is not None else self.config_text())

    def subscribe(self, *emails: str, frequency: str = "immediate") -> None:
        write_atomic(self.subscribers_file, subscribers_toml(*emails, frequency=frequency))

    def publish(self, title: str) -> str:
        """A new article file, dated in the past so it is published at once; returns its title."""
        self._articles += 1
        n = self._articles
        write_atomic(
            self.root / "content" / f"bai-{n:03d}.md",
            article(title, f"2024-05-{n:02d}T08:00:00+07:00"),
        )
        return title

    # process
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "service", "--config", str(self.config), *args]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
        env["PYTHONPATH"] = str(REPO)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, *, wait: bool = True) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with self.log.open("ab") as log:
            log.write(b"=== bantin run ===\n")
            self.proc = subprocess.Popen(
                self.command("run"),
                cwd=self.root,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait(self.running, 20, "/healthz to answer after the first scan")

    def running(self) -> bool:
        """Whether /healthz answers and the first scan (and start-up) is over."""
        health = self.health()
        return health is not None and "scan" in health["runs"] and bool(health["next_runs"])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait; SIGKILL if it does not go. Returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def cli(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=self.root,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def wait(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        def alive_check() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the service exited ({self.proc.returncode}) while waiting for {what}\n"
                    f"--- service log ---\n{self.log_text()[-4000:]}"
                )
            return check()

        return wait_until(alive_check, timeout, what, self.log)

    # HTTP
    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5, **kwargs)

    def health(self) -> dict[str, Any] | None:
        try:
            response = self.get("/healthz")
        except httpx.TransportError:
            return None
        body: dict[str, Any] = response.json()
        return body
