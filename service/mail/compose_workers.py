"""Composing workers: digest messages built in worker processes while the loop sends.

Rendering and building a message costs about as much CPU as sending it, and the event loop
also serves HTTP. A large run therefore hands composition to ``os.cpu_count() - 1`` worker
processes (forkserver: the service has threads, so plain fork is unsafe), each holding the
run's articles and its own Composer. Small runs, and the first messages of every run,
compose inline: starting a process costs more than a few messages. The workers are started
on a thread of their own while the messages go on composing inline, never on the event loop:
starting them took 1.2 s, a stall of every HTTP request for as long.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from typing import Any, NamedTuple

from service import workers
from service.mail.compose import NO_EVENTS, Composer
from service.mail.events import DigestEvents
from service.mail.mime import DkimKey
from service.model import Article, Frequency, Subscriber
from service.settings import Settings

log = logging.getLogger("bantin.digest")

INLINE = 64  # messages composed in-process before a run is worth worker processes
# messages handed to a worker at once: handing them over one by one (pickling each, waking the
# pool's thread, a result through the pipe) cost the sending process as much as composing them
GROUP = 8

_composer: Composer | None = None
_articles: dict[str, Article] = {}


def _start_worker(
    settings: Settings, secret_key: bytes, dkim: DkimKey | None, articles: tuple[Article, ...]
) -> None:
    global _composer, _articles
    _composer = Composer(settings, secret_key, dkim)
    _articles = {a.id: a for a in articles}


def _compose_in_worker(
    subscriber: Subscriber,
    ids: tuple[str, ...],
    frequency: Frequency,
    message_id: str,
    now: datetime,
    delivery_id: int | None = None,
    events: DigestEvents = NO_EVENTS,
) -> bytes:
    assert _composer is not None, "worker not initialised"
    articles = [_articles[i] for i in ids]
    return _composer.compose(subscriber, articles, frequency, message_id, now, delivery_id, events)


def _compose_group_in_worker(
    jobs: list[tuple[Any, ...]],
) -> list[bytes | Exception]:
    """Each of ``jobs`` (the arguments of ``_compose_in_worker``) composed: its bytes, or the
    error composing it raised (a template that fails), so one message's error is its own.
    The group is composed at one moment: the templates are looked up once for it."""
    assert _composer is not None, "worker not initialised"
    results: list[bytes | Exception] = []
    with _composer.shared.pinned():
        for job in jobs:
            try:
                results.append(_compose_in_worker(*job))
            except Exception as exc:
                results.append(exc)
    return results


def _settle(futures: list[asyncio.Future[bytes]], group: asyncio.Future[list[Any]]) -> None:
    """Give each message's future its part of a group's outcome (a future given up already,
    as a halted run gives up what it will not send, is left as it is)."""
    if group.cancelled():
        for future in futures:
            future.cancel()
        return
    error = group.exception()
    results = group.result() if error is None else [error] * len(futures)
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class Job(NamedTuple):
    """One message to compose: the arguments of ``ComposeWorkers.compose``."""

    subscriber: Subscriber
    articles: Sequence[Article]
    frequency: Frequency
    message_id: str
    now: datetime
    delivery_id: int | None = None
    events: DigestEvents = NO_EVENTS


def default_processes() -> int:
    """Worker processes a large run composes in: every core but the one that sends."""
    return max(0, workers.cores() - 1)


class ComposeWorkers:
    """``compose()`` returns a future of the message bytes; ``close()`` ends the workers."""

    def __init__(self, composer: Composer, articles: Iterable[Article], processes: int) -> None:
        self.composer = composer
        self.articles = {a.id: a for a in articles}
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        # the pool is started on a thread of its own: starting the forkserver and a worker took
        # 1.2 s here, which on the loop stalled every HTTP request for as long
        self._starter: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the starter thread hands the pool over under it
        self._closed = False
        # this process's composing happens on one thread beside the event loop, never on it:
        # a template that runs to its time budget must not stop the loop (and the HTTP server)
        self._thread: ThreadPoolExecutor | None = None
        self.inline_count = 0  # messages composed in this process
        self.handoffs = 0  # groups of messages handed to the worker processes (compose_many)

    def compose(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        message_id: str,
        now: datetime,
        delivery_id: int | None = None,
        events: DigestEvents = NO_EVENTS,
    ) -> asyncio.Future[bytes]:
        """Start composing one message; the future gives its bytes, or raises (TemplateError).

        The first messages of a run compose on a thread of this process, the rest in the worker
        processes, if there are any. ``delivery_id`` signs the mailto: unsubscribe fallback;
        ``events`` says what changed in the articles sent again and the SEQUENCE numbers.
        """
        loop = asyncio.get_running_loop()
        usable = self.processes > 0 and all(a.id in self.articles for a in articles)
        if usable and self.inline_count >= INLINE and self._starter is None and not self._closed:
            self._starter = ThreadPoolExecutor(1, thread_name_prefix="bantin-compose-start")
            self._starter.submit(self._start_pool)
        if not usable or self._executor is None:  # until the workers are up, here
            self.inline_count += 1
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="bantin-compose")
            return loop.run_in_executor(
                self._thread,
                self.composer.compose,
                subscriber,
                list(articles),
                frequency,
                message_id,
                now,
                delivery_id,
                events,
            )
        ids = tuple(a.id for a in articles)
        return asyncio.wrap_future(
            self._executor.submit(
                _compose_in_worker, subscriber, ids, frequency, message_id, now, delivery_id, events
            )
        )

    def compose_many(self, jobs: Sequence[Job]) -> list[asyncio.Future[bytes]]:
        """``compose`` for each of ``jobs``, the futures in their order. Once the worker
        processes are up, the messages go to them GROUP at a time: one hand-off for several
        messages, each still with a future of its own (a template error fails its own)."""
        executor = self._executor
        if executor is None or not all(a.id in self.articles for job in jobs for a in job.articles):
            return [self.compose(*job) for job in jobs]
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bytes]] = [loop.create_future() for _ in jobs]
        for start in range(0, len(jobs), GROUP):
            group = [
                (j.subscriber, tuple(a.id for a in j.articles), *j[2:])
                for j in jobs[start : start + GROUP]
            ]
            done = asyncio.wrap_future(executor.submit(_compose_group_in_worker, group))
            done.add_done_callback(functools.partial(_settle, futures[start : start + GROUP]))
        self.handoffs += (len(jobs) + GROUP - 1) // GROUP
        return futures

    def _start_pool(self) -> None:
        """Start the worker processes and wait until one has composed nothing: then the pool
        takes messages (a pool that cannot start leaves composing here, as before)."""
        pool = workers.executor(
            self.processes,
            _start_worker,
            (
                self.composer.settings,
                self.composer.secret_key,
                self.composer.dkim,
                tuple(self.articles.values()),
            ),
        )
        try:
            pool.submit(int).result()
        except Exception:  # e.g. a forkserver stopped by the signal that stops the run
            pool.shutdown(wait=False, cancel_futures=True)
            if not self._closed:
                log.warning("compose workers could not start; composing in this process")
            return
        with self._lock:
            if self._closed:  # the run ended while they started: they are not needed
                pool.shutdown(wait=False, cancel_futures=True)
                return
            self._executor = pool

    def close(self) -> None:
        """End the workers and the composing thread: started work ends, the rest is cancelled.

        A pool still starting is not waited for (a stopped run must end at once): it ends as
        soon as it is up, and its workers end with this process in any case."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if self._starter is not None:
            self._starter.shutdown(wait=False)
            self._starter = None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)
            self._thread = None
