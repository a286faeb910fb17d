"""A digest run: claim in the ledger, compose, send concurrently, record every outcome.

The subscribers file is streamed in chunks: each chunk's digests are committed as pending,
composed and queued (the queue is bounded, so memory stays flat in the number of subscribers),
and each message is marked sent on the server's 250. Temporary failures are retried with
backoff within the run and otherwise stay pending for the next one (outcomes.py decides what
each reply means). ``run_digest`` is what `bantin digest` and the service both call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from service import clock as wall_clock
from service.clock import Clock
from service.errors import BantinError, StateError
from service.ledger import State
from service.ledger.deliveries import Claim, Delivery
from service.mail.compose import Composer
from service.mail.compose_workers import ComposeWorkers
from service.mail.mime import message_id
from service.mail.news import Fresh, as_if_recorded, fresh_since, select
from service.mail.outcomes import Attempt, Outcomes, RunReport
from service.mail.subscribers import Entry
from service.mail.transport import Transport
from service.metrics import Metrics
from service.model import Article, Frequency, Subscriber

__all__ = ["CHUNK", "DigestRun", "Progress", "RunReport", "run_digest"]

log = logging.getLogger("bantin.digest")

CHUNK = 128  # subscribers per ledger transaction; small enough not to stall the HTTP server

Progress = Callable[[RunReport], None]


@dataclass(frozen=True, slots=True)
class _Job:
    attempt: Attempt
    data: asyncio.Future[bytes]


class DigestRun:
    """One run over the subscribers file for one frequency. Single use: ``await run()`` once."""

    def __init__(
        self,
        state: State,
        composer: Composer,
        transport: Transport,
        frequency: Frequency,
        published: Sequence[Article],
        entries: Iterable[Entry],
        *,
        dry_run: bool = False,
        metrics: Metrics | None = None,
        progress: Progress | None = None,
        retry_delays: Sequence[float] = (2.0, 10.0),
        clock: Clock = wall_clock.now,
        processes: int = 0,
    ) -> None:
        self.state = state
        self.composer = composer
        self.transport = transport
        self.frequency = frequency
        self.published = published
        self.entries = entries
        self.dry_run = dry_run
        self.progress = progress
        self.retry_delays = retry_delays
        self.clock = clock
        self.processes = processes  # worker processes for composing; 0 = inline
        self.report = RunReport(frequency, dry_run=dry_run)
        self.outcomes = Outcomes(
            state, self.report, where=transport.name, clock=clock, metrics=metrics
        )
        self.now = clock()
        self.by_id = {a.id: a for a in published}
        self.top = 0  # the newest article sequence, once recorded
        self.fresh: Fresh = []
        self.start: int | None = None  # where unseen subscribers start, in a dry run
        self.pending: dict[str, list[Delivery]] = {}
        self.composers = ComposeWorkers(composer, (), 0)
        # bounded: memory stays flat however many subscribers there are
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue(
            maxsize=transport.concurrency * 4 + 8 * processes
        )
        self._ran = False

    def stop(self, reason: str) -> None:
        """Send nothing more, as a fault: what is in flight finishes, the rest stays pending."""
        self.outcomes.stop(reason)

    def interrupt(self, reason: str) -> None:
        """Send nothing more because the process is stopping: not a fault of the run."""
        if self.report.interrupted is None:
            self.report.interrupted = reason

    @property
    def halted(self) -> bool:
        """Sending has stopped, on a fault or an interruption: nothing more is queued."""
        return self.report.stopped is not None or self.report.interrupted is not None

    async def run(self) -> RunReport:
        """Send the due digests; ``published`` is every article published now."""
        if self._ran:
            raise RuntimeError("a DigestRun runs once; make a new one")
        self._ran = True
        started = time.monotonic()
        self._prepare()
        try:
            async with self._sending():
                file_ok = await self._read_subscribers()
                if file_ok and not self.halted:
                    for deliveries in self.pending.values():
                        for delivery in deliveries:
                            self._cancel(delivery, "address removed from the subscribers file")
            await self._retry()
        except StateError as exc:  # the ledger failed while claiming: what is claimed waits
            self._ledger_failed(exc)
        finally:
            await asyncio.to_thread(self.composers.close)
        self.report.seconds = time.monotonic() - started
        if self.progress:
            self.progress(self.report)
        return self.report

    def _prepare(self) -> None:
        """Record the articles, find what is news since the lowest cursor, and what waits."""
        state = self.state
        if not self.dry_run:
            state.articles.record(
                ((a.id, a.fingerprint, a.source) for a in self.published), self.now
            )
        self.top = state.articles.last_seq()
        # every frequency's cursors, not just this one's: the ledger still holds the old
        # frequency of a subscriber who changed it in the file since the last run
        low = state.subscribers.min_cursor()
        self.fresh = fresh_since(state, self.top if low is None else low, self.by_id)
        if self.dry_run:
            unrecorded, self.start = as_if_recorded(state, self.published, self.top)
            self.fresh += unrecorded
        else:
            for delivery in state.deliveries.pending():
                self.pending.setdefault(delivery.email, []).append(delivery)
        needed = {a.id: a for _, a in self.fresh}
        for deliveries in self.pending.values():
            needed.update(
                (i, self.by_id[i]) for d in deliveries for i in d.article_ids if i in self.by_id
            )
        self.composers = ComposeWorkers(
            self.composer, needed.values(), 0 if self.dry_run else self.processes
        )

    async def _read_subscribers(self) -> bool:
        """Claim and queue each chunk of the file; False if an entry of it was invalid."""
        chunk: list[Subscriber] = []
        file_ok = True
        for entry in self.entries:
            if entry.subscriber is None:
                self.report.invalid += 1
                file_ok = False
                if entry.problem:
                    log.warning("not mailed: %s", entry.problem)
                continue
            chunk.append(entry.subscriber)
            if len(chunk) >= CHUNK:
                await self._chunk(chunk)
                chunk = []
            if self.halted:
                return file_ok
        if chunk:
            await self._chunk(chunk)
        return file_ok

    async def _retry(self) -> None:
        """Send the deferred messages again after each delay; what still fails stays pending."""
        retry = self.outcomes.retry
        for delay in self.retry_delays:
            if not retry or self.halted:
                break
            await asyncio.sleep(delay)
            again, retry[:] = list(retry), []
            self.report.deferred -= len(again)
            async with self._sending():
                for attempt in again:
                    await self._enqueue(attempt.delivery, attempt.subscriber)

    @contextlib.asynccontextmanager
    async def _sending(self) -> AsyncIterator[None]:
        """Senders, one per connection, for the jobs queued inside; all done on leaving."""
        senders = [asyncio.create_task(self._sender()) for _ in range(self.transport.concurrency)]
        try:
            yield
        finally:
            for _ in senders:
                await self.queue.put(None)
            await asyncio.gather(*senders)
            self.outcomes.finish()

    async def _chunk(self, chunk: list[Subscriber]) -> None:
        states = self.state.subscribers.sync(
            chunk, self.now, record=not self.dry_run, start=self.start
        )
        self.report.subscribers += len(chunk)
        claims: list[Claim] = []
        advance: list[str] = []
        lookup: dict[str, Subscriber] = {}
        for subscriber in chunk:
            lookup[subscriber.key] = subscriber
            status = states[subscriber.key]
            if status.failures:
                self.outcomes.failing.add(subscriber.key)
            for delivery in self.pending.pop(subscriber.key, []):
                if status.active:
                    await self._enqueue(delivery, subscriber)
                else:
                    self._cancel(delivery, "unsubscribed or suspended")
            if subscriber.frequency != self.frequency or not status.active:
                continue
            advance.append(subscriber.key)
            chosen = select(status.cursor, self.fresh, subscriber)
            if chosen:
                claims.append(Claim(subscriber, self.frequency, tuple(a.id for a in chosen)))
        if self.dry_run:
            for claim in claims:
                articles = [self.by_id[i] for i in claim.article_ids if i in self.by_id]
                self.composer.compose(
                    claim.subscriber, articles, self.frequency, "<dry-run@bantin>", self.now
                )
                self.report.sent += 1
            return
        domain = self.composer.domain
        created = self.state.deliveries.claim(
            claims, advance, self.top, lambda email, ids: message_id(email, ids, domain), self.now
        )
        for delivery in created:
            await self._enqueue(delivery, lookup[delivery.email])

    def _cancel(self, delivery: Delivery, reason: str) -> None:
        self.state.deliveries.cancel(delivery.id, reason, self.now)
        self.report.cancelled += 1

    async def _enqueue(self, delivery: Delivery, subscriber: Subscriber) -> None:
        if self.halted:
            return
        articles = [self.by_id[i] for i in delivery.article_ids if i in self.by_id]
        if not articles:
            self._cancel(delivery, "its articles are no longer published")
            return
        articles.sort(key=lambda a: (a.date, a.id), reverse=True)
        data = self.composers.compose(
            subscriber, articles, delivery.frequency, delivery.message_id, self.now
        )
        await self.queue.put(_Job(Attempt(delivery, subscriber), data))
        if data.done():
            # Composed inline: CPU work on the loop the HTTP server shares; let requests in.
            await asyncio.sleep(0)

    def _ledger_failed(self, exc: StateError) -> None:
        self.stop(f"{exc}; the run stopped and its mail stays pending for the next one")
        log.error("digest %s stopped: %s", self.frequency, exc)

    async def _sender(self) -> None:
        """Send the queued jobs until the sentinel; whatever happens, keep draining the queue
        (a sender that died would leave the bounded queue full and the run waiting forever)."""
        while (job := await self.queue.get()) is not None:
            if self.halted:
                job.data.cancel()
                continue  # left pending in the ledger for the next run
            try:
                await self._send(job)
            except StateError as exc:  # the ledger cannot record: stop, lose nothing
                self._ledger_failed(exc)
            except Exception as exc:
                self.stop(f"sending failed: {exc.__class__.__name__}: {exc}")
                log.exception("digest %s: sending failed", self.frequency)

    async def _send(self, job: _Job) -> None:
        attempt = job.attempt
        try:
            data = await job.data
        except BantinError as exc:  # a template that fails: the operator must fix it
            self.stop(str(exc))
            log.error("digest for %s not composed: %s", attempt.subscriber.email, exc)
            return
        except Exception as exc:  # a worker process died: nothing is lost, all stays pending
            self.stop(f"composing failed: {exc.__class__.__name__}: {exc}")
            log.exception("digest for %s not composed", attempt.subscriber.email)
            return
        outcome = await self.transport.send(self.composer.sender, attempt.subscriber.email, data)
        if outcome.ok:
            await self.outcomes.ack(attempt.delivery)
        self.outcomes.record(attempt, outcome)
        if self.progress:
            self.progress(self.report)


async def run_digest(run: DigestRun) -> RunReport:
    """Run ``run``, close its transport, and record the run in the ledger (not a dry run's).

    A run that raises (the ledger is unusable) is recorded as failed and the error re-raised.
    """
    started = run.clock()
    kind = f"digest:{run.frequency}"
    try:
        report = await run.run()
    except BantinError as exc:
        if not run.dry_run:
            _record_run(run, kind, started, False, str(exc))
        raise
    finally:
        await run.transport.close()
    if not run.dry_run:
        _record_run(run, kind, started, report.ok, report.summary())
    return report


def _record_run(run: DigestRun, kind: str, started: datetime, ok: bool, detail: str) -> None:
    try:
        run.state.runs.record(kind, started, run.clock(), ok, detail)
    except StateError as exc:  # the run's own outcome stands; its record is what is lost
        log.error("digest %s: the run could not be recorded: %s", run.frequency, exc)
