"""Worker processes: CPU-bound batches (parsing, rendering, composing) spread over the cores.

The service has threads (scans run in one), so plain fork is unsafe: workers start from a
forkserver. A batch job is a picklable function of a list; results come back in order.
Starting workers costs a few hundred milliseconds, so only large jobs use them.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # imported when a pool starts: a build with little to do starts none
    from concurrent.futures import ProcessPoolExecutor

PARALLEL_MIN = 2000  # items below which a job runs in-process: starting workers costs more
BATCH = 250  # items per task: large enough to amortise pickling, small enough to balance

T = TypeVar("T")
R = TypeVar("R")


def cores() -> int:
    """The cores worker processes can use: 1 where they cannot start (see ``_can_start``)."""
    if not _can_start():
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _can_start() -> bool:
    """Workers re-import the main module: impossible for code read from stdin or ``-c``."""
    main = sys.modules.get("__main__")
    if getattr(main, "__spec__", None) is not None:
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def executor(
    processes: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> ProcessPoolExecutor:
    """A pool of ``processes`` workers that end when the process that made them dies."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_start,
        initargs=(os.getpid(), initializer, initargs),
    )


def _start(owner: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    """In each worker: watch the process that made the pool, then run the job's initializer.

    A worker's parent is the forkserver, and the forkserver lives as long as any worker does,
    so neither notices when our process is killed: each worker waits on a pidfd of its owner
    and exits the moment it is gone (the forkserver and resource tracker then follow).
    """
    # Ctrl-C reaches every process of the terminal's group and systemd's SIGTERM every process
    # of the unit: the owner decides when its workers stop, and they end with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(owner,), daemon=True, name="owner-watch").start()
    if initializer is not None:
        initializer(*initargs)


def _exit_with(owner: int) -> None:
    try:
        handle = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(1)
    except (OSError, AttributeError):  # no pidfd (old kernel, not Linux): look every second
        while os.getppid() != 1:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                break
            time.sleep(1)
        os._exit(1)
    select.select([handle], [], [])  # readable once the owner has exited
    os._exit(1)


def map_batches(
    job: Callable[[list[T]], R],
    items: Sequence[T],
    *,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> Iterator[R]:
    """``job(batch)`` for consecutive batches of ``items`` on every core, results in order."""
    with Batches(initializer, initargs) as pool:
        yield from pool.map(job, items)


class Batches:
    """One pool of workers for several batch jobs in a row: started on the first ``map`` (a
    start costs a few hundred milliseconds), shut down on leaving the ``with`` block."""

    def __init__(
        self, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
    ) -> None:
        self.initializer = initializer
        self.initargs = initargs
        self._pool: ProcessPoolExecutor | None = None

    def map(
        self, job: Callable[[list[T]], R], items: Sequence[T], batch: int = BATCH
    ) -> Iterator[R]:
        """``job(batch)`` for consecutive batches of ``batch`` items, results in order."""
        batches = [list(items[i : i + batch]) for i in range(0, len(items), batch)]
        if self._pool is None:
            self._pool = executor(cores(), self.initializer, self.initargs)
        return self._pool.map(job, batches)

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
