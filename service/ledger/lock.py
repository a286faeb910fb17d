"""One runner per state: the lock `bantin run` and `bantin digest` hold while they send.

A lock is anything with ``acquire(holder)`` and ``release()``; ``acquire`` raises StateError
naming the current holder. SQLite states use a file lock beside the database.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from service.errors import StateError
from service.ledger import State

__all__ = ["FileLock", "RunnerLock", "held", "runner_lock"]


class RunnerLock(Protocol):
    """The lock that keeps a second runner off a state: anything with acquire and release."""

    def acquire(self, holder: str) -> None:
        """Take it for ``holder`` (a command line); StateError naming the holder if taken."""
        ...

    def release(self) -> None:
        """Let the lock go."""
        ...


class FileLock:
    """An flock on a file; the file says who holds it (pid, command, since when)."""

    def __init__(self, path: Path, describe: str) -> None:
        self.path = path
        self.describe = describe  # the state it protects, for messages
        self._fd: int | None = None

    def acquire(self, holder: str) -> None:
        """Take the lock without waiting and write ``holder`` into the file; StateError naming the
        current holder if another process has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            raise StateError(
                f"the state {self.describe} is in use by {current or 'another process'} "
                f"(lock {self.path}); wait for it to finish, or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} (`bantin {holder}`, since {since})\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the file and unlock it; nothing happens if the lock is not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def runner_lock(state: State) -> RunnerLock:
    """The lock that keeps a second runner off ``state``."""
    db = state.db
    if db.sqlite_path is not None:
        path = db.sqlite_path.with_name(db.sqlite_path.name + ".lock")
    else:
        path = db.home / "bantin.lock"
    return FileLock(path, db.describe())


@contextmanager
def held(lock: RunnerLock, holder: str) -> Iterator[None]:
    """Hold ``lock`` for ``holder`` (a command line) for the block."""
    lock.acquire(holder)
    try:
        yield
    finally:
        lock.release()
