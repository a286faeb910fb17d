"""One runner per state: the lock `bantin run` (its leader) and `bantin digest` hold.

A lock is anything with ``acquire(holder)``, ``alive()`` and ``release()``; ``acquire`` raises
StateError naming the current holder. A SQLite state is one host's: a file lock beside the
database. A PostgreSQL state may be shared by several hosts: a session advisory lock held on a
connection of its own (a pooled connection would go back to the pool still holding it, or lose
it when recycled), with a row in ``leaders`` that says who holds it and a heartbeat that shows
the holder is alive.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from service.errors import StateError
from service.ledger import State
from service.ledger.db import Database, database_error
from service.ledger.schema import leaders

__all__ = ["LEADER_KEY", "DatabaseLock", "FileLock", "RunnerLock", "held", "runner_lock"]

LEADER_KEY = 0x62616E74696E01  # the advisory lock of the leader (one per database)


class RunnerLock(Protocol):
    """What keeps a second runner off a state."""

    def acquire(self, holder: str) -> None:
        """Take the lock for ``holder`` (a command line); StateError naming who holds it."""
        ...

    def alive(self) -> bool:
        """Whether the lock is still held (a heartbeat, for a shared database)."""
        ...

    def release(self) -> None:
        """Give the lock up; harmless if not held."""
        ...


class FileLock:
    """An flock on a file; the file says who holds it (pid, command, since when)."""

    def __init__(self, path: Path, describe: str) -> None:
        self.path = path
        self.describe = describe  # the state it protects, for messages
        self._fd: int | None = None

    def acquire(self, holder: str) -> None:
        """Take the lock; StateError naming the holder's pid and command if it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            # the service never finishes by itself: waiting for it is no advice
            advice = (
                "stop the service first (a dry run, preview, status and check need not)"
                if "`bantin run`" in current
                else "wait for it to finish, or stop it first"
            )
            raise StateError(
                f"the state {self.describe} is in use by {current or 'another process'} "
                f"(lock {self.path.absolute()}); {advice}"
            ) from None
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()} (`bantin {holder}`, since {since})\n".encode(), 0)
        self._fd = fd

    def alive(self) -> bool:
        """A file lock lasts as long as the process: held if it was taken."""
        return self._fd is not None

    def release(self) -> None:
        """Empty the file and unlock it; harmless if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class DatabaseLock:
    """A PostgreSQL session advisory lock on a connection of its own, and the leaders row."""

    def __init__(self, db: Database, host: str) -> None:
        self.db = db
        self.host = host
        self._conn: Connection | None = None

    def acquire(self, holder: str) -> None:
        """Take the lock; StateError naming the host, pid and command holding it if taken."""
        try:
            conn = self.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except SQLAlchemyError as exc:
            raise database_error(self.db.describe(), exc) from exc
        try:
            got = conn.exec_driver_sql(f"SELECT pg_try_advisory_lock({LEADER_KEY})").scalar()
            if not got:
                raise StateError(self._held_by())
            moment = datetime.now(UTC)
            conn.execute(delete(leaders).where(leaders.c.name == "leader"))
            conn.execute(
                insert(leaders).values(
                    name="leader",
                    host=self.host,
                    pid=os.getpid(),
                    command=f"bantin {holder}",
                    since=moment,
                    heartbeat=moment,
                )
            )
        except BaseException as exc:
            conn.close()
            if isinstance(exc, SQLAlchemyError):
                raise database_error(self.db.describe(), exc) from exc
            raise
        self._conn = conn

    def _held_by(self) -> str:
        with self.db.tx() as conn:
            row = conn.execute(select(leaders).where(leaders.c.name == "leader")).first()
        if row is None:
            who = "another host (it has not said who yet)"
        else:
            age = (datetime.now(UTC) - row.heartbeat).total_seconds()
            who = (
                f"host {row.host}, pid {row.pid} (`{row.command}`, since "
                f"{row.since.isoformat(timespec='seconds')}, last heartbeat {age:.0f} s ago)"
            )
        return (
            f"the state {self.db.describe()} is led by {who}; run this command there, "
            "or stop that service first"
        )

    def alive(self) -> bool:
        """Beat: refresh the heartbeat on the lock's own connection. False if the connection
        (and with it the lock) is gone: the holder must then stop acting as leader."""
        if self._conn is None:
            return False
        try:
            self._conn.execute(
                update(leaders)
                .where(leaders.c.name == "leader", leaders.c.pid == os.getpid())
                .values(heartbeat=datetime.now(UTC))
            )
        except SQLAlchemyError:
            self._drop()
            return False
        return True

    def release(self) -> None:
        """Unlock and say so in the leaders row; harmless if not held or already lost."""
        conn = self._conn
        if conn is None:
            return
        with suppress(SQLAlchemyError):
            conn.execute(
                delete(leaders).where(leaders.c.name == "leader", leaders.c.pid == os.getpid())
            )
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({LEADER_KEY})")
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(Exception):
                conn.invalidate()  # never back into the pool: the session held the lock
                conn.close()


def runner_lock(state: State, host: str | None = None) -> RunnerLock:
    """The lock that keeps a second runner off ``state``."""
    db = state.db
    if db.dialect == "postgresql":
        return DatabaseLock(db, host or socket.gethostname())
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
