"""The runner lock: a second runner on one state is refused, naming the holder, across processes.

The holder is a real second process, so the flock semantics are the kernel's, not a mock's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgkit import PostgresServer

from service.errors import StateError
from service.ledger import State
from service.ledger.lock import LEADER_KEY, FileLock, held, runner_lock

HOLDER = """\
import sys
from service.ledger import State
from service.ledger.lock import runner_lock
lock = runner_lock(State(sys.argv[1]))
lock.acquire(sys.argv[2])
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the runner lock of ``url`` until told to release it."""
    state = State(url)  # create the database before the other process opens it
    state.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, "digest --frequency weekly"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "released\n"


def test_a_second_runner_is_refused_naming_the_holder(
    state: State, holder: subprocess.Popen[str]
) -> None:
    lock = runner_lock(state)
    with pytest.raises(StateError) as refused:
        lock.acquire("run")
    message = str(refused.value)
    assert f"pid {holder.pid} " in message
    assert "`bantin digest --frequency weekly`" in message
    assert state.describe() in message
    if isinstance(lock, FileLock):
        assert lock.path == Path(state.describe() + ".lock")
        assert str(lock.path) in message
    else:  # several hosts share a PostgreSQL state: the holder's host is named too
        assert f"host {socket.gethostname()}" in message and "last heartbeat" in message
    release(holder)
    if isinstance(lock, FileLock):
        assert lock.path.read_text() == ""  # released: the file names nobody
    with held(lock, "run"):
        assert lock.alive()
        if isinstance(lock, FileLock):
            assert lock.path.read_text().startswith(f"pid {os.getpid()} (`bantin run`")


def test_a_leader_that_loses_its_connection_knows_it(postgres: PostgresServer) -> None:
    """PostgreSQL: the advisory lock lives and dies with its connection; alive() says so."""
    state = State(postgres.new_database())
    lock = runner_lock(state)
    lock.acquire("run")
    assert lock.alive()
    with state.db.tx() as conn:  # what a database restart does to every session
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            f"WHERE locktype = 'advisory' AND objid = {LEADER_KEY & 0xFFFFFFFF}"
        )
    assert not lock.alive()
    other = runner_lock(state)
    other.acquire("run")  # the lock went with the connection: another can lead
    other.release()
    state.close()


def test_a_killed_holder_leaves_the_lock_free(state: State, holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait(timeout=10)
    lock = runner_lock(state)
    lock.acquire("run")
    lock.release()
    lock.release()  # twice is harmless


def test_held_releases_when_the_block_raises(state: State) -> None:
    lock = runner_lock(state)
    with pytest.raises(RuntimeError), held(lock, "digest"):
        raise RuntimeError("the run failed")
    other = runner_lock(state)
    other.acquire("run")  # free again
    other.release()
