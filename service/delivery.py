"""A digest run: claim in the ledger, compose, send concurrently, record every outcome.

The subscribers file is streamed in chunks: each chunk's digests are committed as pending,
composed and queued (the queue is bounded, so memory stays flat in the number of subscribers),
and each message is marked sent on the server's 250. Temporary failures are retried with
backoff within the run and otherwise stay pending for the next one; permanent failures are
recorded with the server's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.digest import Composer, select
from service.errors import BantinError
from service.mailer import Outcome, Transport
from service.metrics import Metrics
from service.model import Article, Frequency, Subscriber
from service.pool import ComposePool
from service.replies import shape
from service.state import Claim, Delivery, State
from service.subscribers import Entry

log = logging.getLogger("bantin.digest")

CHUNK = 128  # subscribers per ledger transaction; small enough not to stall the HTTP server
GIVE_UP_AFTER = 20  # network failures in a row, with nothing accepted, end the sending
# the same policy refusal for this many recipients in a row is the server's, not theirs
BREAKER = 5


@dataclass(slots=True)
class RunReport:
    frequency: str
    dry_run: bool = False
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    cancelled: int = 0
    subscribers: int = 0
    invalid: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why sending stopped early, if it did
    suspended: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The run went through: deferred messages wait in the ledger, they are no failure."""
        return self.stopped is None

    def summary(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        verb = "would send" if self.dry_run else "sent"
        line = (
            f"bantin digest {self.frequency}: {self.sent} {verb}, {self.deferred} deferred, "
            f"{self.failed} failed, {self.subscribers} subscribers read"
        )
        if self.invalid:
            line += f" ({self.invalid} invalid skipped)"
        line += f", {self.seconds:.1f} s, {rate:.0f} messages/s"
        if self.stopped:
            line += f"; stopped early: {self.stopped}"
        return line


Progress = Callable[[RunReport], None]


def as_if_recorded(
    state: State, published: Sequence[Article], top: int
) -> tuple[list[tuple[int, Article]], int]:
    """For runs that record nothing (dry runs, previews): the articles not yet in the ledger,
    numbered after ``top`` as a real run would number them now, and the sequence an unseen
    subscriber would then start at (a real run records articles before it reads subscribers).
    """
    seen = state.seen_articles(a.id for a in published)
    unseen = [a for a in published if a.id not in seen]
    return [(top + n, a) for n, a in enumerate(unseen, start=1)], top + len(unseen)


@dataclass(frozen=True, slots=True)
class _Job:
    delivery: Delivery
    subscriber: Subscriber
    data: asyncio.Future[bytes]


class DigestRun:
    """One run over the subscribers file for one frequency."""

    def __init__(
        self,
        state: State,
        composer: Composer,
        transport: Transport,
        *,
        metrics: Metrics | None = None,
        progress: Progress | None = None,
        retry_delays: Sequence[float] = (2.0, 10.0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        processes: int = 0,
    ) -> None:
        self.state = state
        self.composer = composer
        self.transport = transport
        self.metrics = metrics
        self.progress = progress
        self.retry_delays = retry_delays
        self.processes = processes  # worker processes for composing (see pool.py); 0 = inline
        self._pool = ComposePool(composer, (), 0)
        self._failing: set[str] = set()  # addresses with permanent failures to clear on a 250
        self._acks: list[tuple[int, str, bool]] = []
        self._acked: asyncio.Future[None] | None = None
        self.clock = clock
        self._network_failures = 0
        self._chain: list[tuple[_Job, Outcome]] = []  # suspect refusals held (see _record)
        self._chain_shape: str | None = None
        self._tripped: set[str] = set()  # refusal shapes that stopped this run
        self._start: int | None = None  # where unseen subscribers start, in a dry run
        self.report: RunReport | None = None

    def stop(self, reason: str) -> None:
        """Send nothing more: what is in flight finishes, the rest stays pending for later."""
        if self.report is not None and self.report.stopped is None:
            self.report.stopped = reason

    async def run(
        self,
        frequency: Frequency,
        published: Sequence[Article],
        entries: Iterable[Entry],
        *,
        dry_run: bool = False,
    ) -> RunReport:
        """Send the due digests of ``frequency``; ``published`` is every published article now."""
        started = time.monotonic()
        now = self.clock()
        report = self.report = RunReport(frequency, dry_run=dry_run)
        by_id = {a.id: a for a in published}
        if not dry_run:
            self.state.record_articles(by_id, now)
        top = self.state.last_seq()
        # every frequency's cursors, not just this one's: the ledger still holds the old
        # frequency of a subscriber who changed it in the file since the last run
        low = self.state.min_cursor()
        fresh = [
            (seq, by_id[i])
            for seq, i in self.state.articles_after(top if low is None else low)
            if i in by_id
        ]
        self._start = None
        if dry_run:
            unrecorded, self._start = as_if_recorded(self.state, published, top)
            fresh += unrecorded
        pending: dict[str, list[Delivery]] = {}
        if not dry_run:
            for delivery in self.state.pending():
                pending.setdefault(delivery.email, []).append(delivery)

        needed = {a.id: a for _, a in fresh}
        for deliveries in pending.values():
            needed.update((i, by_id[i]) for d in deliveries for i in d.article_ids if i in by_id)
        self._pool = ComposePool(self.composer, needed.values(), 0 if dry_run else self.processes)
        # bounded: memory stays flat however many subscribers there are
        queue: asyncio.Queue[_Job | None] = asyncio.Queue(
            maxsize=self.transport.concurrency * 4 + 8 * self.processes
        )
        retry: list[tuple[Delivery, Subscriber]] = []
        async with self._sending(queue, report, retry):
            chunk: list[Subscriber] = []
            file_ok = True
            for entry in entries:
                if entry.subscriber is None:
                    report.invalid += 1
                    file_ok = False
                    if entry.problem:
                        log.warning("not mailed: %s", entry.problem)
                    continue
                chunk.append(entry.subscriber)
                if len(chunk) >= CHUNK:
                    await self._chunk(
                        chunk, frequency, fresh, top, pending, queue, report, by_id, now, dry_run
                    )
                    chunk = []
                if report.stopped:
                    break
            if chunk and not report.stopped:
                await self._chunk(
                    chunk, frequency, fresh, top, pending, queue, report, by_id, now, dry_run
                )
            if file_ok and not report.stopped:
                for deliveries in pending.values():
                    for delivery in deliveries:
                        self.state.cancel(
                            delivery.id, "address removed from the subscribers file", now
                        )
                        report.cancelled += 1
        try:
            await self._retry(queue, report, retry, by_id, now)
        finally:
            await asyncio.to_thread(self._pool.close)
        report.seconds = time.monotonic() - started
        if self.progress:
            self.progress(report)
        return report

    async def _retry(
        self,
        queue: asyncio.Queue[_Job | None],
        report: RunReport,
        retry: list[tuple[Delivery, Subscriber]],
        by_id: dict[str, Article],
        now: datetime,
    ) -> None:
        """Send the deferred messages again after each delay; what still fails stays pending."""
        for delay in self.retry_delays:
            if not retry or report.stopped:
                break
            await asyncio.sleep(delay)
            again, retry[:] = list(retry), []
            report.deferred -= len(again)
            async with self._sending(queue, report, retry):
                for delivery, subscriber in again:
                    await self._enqueue(delivery, subscriber, queue, report, by_id, now)

    @contextlib.asynccontextmanager
    async def _sending(
        self,
        queue: asyncio.Queue[_Job | None],
        report: RunReport,
        retry: list[tuple[Delivery, Subscriber]],
    ) -> AsyncIterator[None]:
        """Senders, one per connection, for the jobs queued inside; all done on leaving."""
        workers = [
            asyncio.create_task(self._worker(queue, report, retry))
            for _ in range(self.transport.concurrency)
        ]
        try:
            yield
        finally:
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
            self.finish_chain(report, retry)

    async def _chunk(
        self,
        chunk: list[Subscriber],
        frequency: Frequency,
        fresh: Sequence[tuple[int, Article]],
        top: int,
        pending: dict[str, list[Delivery]],
        queue: asyncio.Queue[_Job | None],
        report: RunReport,
        by_id: dict[str, Article],
        now: datetime,
        dry_run: bool,
    ) -> None:
        states = self.state.sync_subscribers(chunk, now, record=not dry_run, start=self._start)
        report.subscribers += len(chunk)
        claims: list[Claim] = []
        advance: list[str] = []
        lookup: dict[str, Subscriber] = {}
        for subscriber in chunk:
            lookup[subscriber.key] = subscriber
            status = states[subscriber.key]
            if status.failures:
                self._failing.add(subscriber.key)
            for delivery in pending.pop(subscriber.key, []):
                if status.active:
                    await self._enqueue(delivery, subscriber, queue, report, by_id, now)
                else:
                    self.state.cancel(delivery.id, "unsubscribed or suspended", now)
                    report.cancelled += 1
            if subscriber.frequency != frequency or not status.active:
                continue
            advance.append(subscriber.key)
            chosen = select(status.cursor, fresh, subscriber)
            if chosen:
                claims.append(Claim(subscriber, frequency, tuple(a.id for a in chosen)))
        if dry_run:
            for claim in claims:
                articles = [by_id[i] for i in claim.article_ids if i in by_id]
                self.composer.compose(
                    claim.subscriber, articles, frequency, "<dry-run@bantin>", now
                )
                report.sent += 1
            return
        for delivery in self.state.claim(claims, advance, top, self.composer.domain, now):
            await self._enqueue(delivery, lookup[delivery.email], queue, report, by_id, now)

    async def _enqueue(
        self,
        delivery: Delivery,
        subscriber: Subscriber,
        queue: asyncio.Queue[_Job | None],
        report: RunReport,
        by_id: dict[str, Article],
        now: datetime,
    ) -> None:
        if report.stopped:
            return
        articles = [by_id[i] for i in delivery.article_ids if i in by_id]
        if not articles:
            self.state.cancel(delivery.id, "its articles are no longer published", now)
            report.cancelled += 1
            return
        articles.sort(key=lambda a: (a.date, a.id), reverse=True)
        data = self._pool.compose(
            subscriber, articles, delivery.frequency, delivery.message_id, now
        )
        await queue.put(_Job(delivery, subscriber, data))
        if data.done():
            # Composed inline: CPU work on the loop the HTTP server shares; let requests in.
            await asyncio.sleep(0)

    async def _ack(self, delivery: Delivery) -> None:
        """Record a 250 before this connection sends anything else.

        Acknowledgements that arrive in the same turn of the loop share one commit: a worker
        waits for it, so at most one accepted message per connection is unrecorded at any
        moment, which is what a kill -9 can make arrive twice.
        """
        self._acks.append((delivery.id, delivery.email, delivery.email in self._failing))
        if self._acked is None:
            self._acked = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush_acks)
        await asyncio.shield(self._acked)

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        done, self._acked = self._acked, None
        assert done is not None
        try:
            self.state.mark_sent_many(acks, self.clock())
        except BaseException as exc:
            done.set_exception(exc)
            return
        for _, email, _ in acks:
            self._failing.discard(email)
        done.set_result(None)

    async def _worker(
        self,
        queue: asyncio.Queue[_Job | None],
        report: RunReport,
        retry: list[tuple[Delivery, Subscriber]],
    ) -> None:
        while (job := await queue.get()) is not None:
            if report.stopped:
                job.data.cancel()
                continue  # left pending in the ledger for the next run
            try:
                data = await job.data
            except BantinError as exc:  # a template that fails: the operator must fix it
                self.stop(str(exc))
                log.error("digest for %s not composed: %s", job.subscriber.email, exc)
                continue
            except Exception as exc:  # a worker process died: nothing is lost, all stays pending
                self.stop(f"composing failed: {exc.__class__.__name__}: {exc}")
                log.exception("digest for %s not composed", job.subscriber.email)
                continue
            outcome = await self.transport.send(self.composer.sender, job.subscriber.email, data)
            if outcome.ok:
                await self._ack(job.delivery)
            self._record(job, outcome, report, retry)
            if self.progress:
                self.progress(report)

    def _record(
        self,
        job: _Job,
        outcome: Outcome,
        report: RunReport,
        retry: list[tuple[Delivery, Subscriber]],
    ) -> None:
        if self.metrics and outcome.seconds:
            self.metrics.smtp_seconds.observe(outcome.seconds)
        if outcome.ok:
            self._settle_chain(report, retry)
            report.sent += 1
            self._network_failures = 0
            if self.metrics:
                self.metrics.digests_sent.inc()
            return
        verdict = outcome.verdict
        if verdict.scope == "server":
            self._defer(job, outcome, report)
            self._server_fault(outcome, verdict.advice, report)
            return
        if verdict.scope == "message":
            self._defer(job, outcome, report, retry)
            self._network_failures += 1
            if self._network_failures >= GIVE_UP_AFTER:
                self.stop(f"the mail server kept failing ({outcome.reply}); the rest stays pending")
            return
        if not verdict.suspect:
            self._settle_chain(report, retry)
            self._blame(job, outcome, report, retry)
            return
        key = shape(outcome.code, outcome.reply)
        if key in self._tripped:  # in flight when the breaker tripped on this very refusal
            self._defer(job, outcome, report)
            return
        if key != self._chain_shape:
            self._settle_chain(report, retry)
            self._chain_shape = key
        self._chain.append((job, outcome))
        if len({j.delivery.email for j, _ in self._chain}) >= BREAKER:
            self._trip(report)

    def _blame(
        self,
        job: _Job,
        outcome: Outcome,
        report: RunReport,
        retry: list[tuple[Delivery, Subscriber]],
    ) -> None:
        """A refusal of this recipient: permanent ones count towards suspension."""
        if not outcome.permanent:
            self._defer(job, outcome, report, retry)
            return
        delivery = job.delivery
        suspended = self.state.mark_failed(
            delivery.id, delivery.email, outcome.code, outcome.reply, self.clock()
        )
        report.failed += 1
        self._failing.add(delivery.email)
        log.warning("refused: %s: %s %s", job.subscriber.email, outcome.code, outcome.reply)
        if suspended:
            report.suspended.append(delivery.email)
            log.warning(
                "suspended %s after repeated refusals; `bantin resume %s` lifts it",
                delivery.email,
                delivery.email,
            )
        if self.metrics:
            self.metrics.failed(outcome.reason)

    def _defer(
        self,
        job: _Job,
        outcome: Outcome,
        report: RunReport,
        retry: list[tuple[Delivery, Subscriber]] | None = None,
    ) -> None:
        """Leave the delivery pending; with ``retry``, try it again later in this run."""
        delivery = job.delivery
        self.state.mark_deferred(delivery.id, outcome.code, outcome.reply, self.clock())
        report.deferred += 1
        if retry is not None:
            retry.append((delivery, job.subscriber))  # recomposed on retry: no bytes held
        if self.metrics:
            self.metrics.deferred(outcome.reason)
        log.info("deferred: %s: %s %s", job.subscriber.email, outcome.code or "", outcome.reply)

    def _settle_chain(
        self, report: RunReport, retry: list[tuple[Delivery, Subscriber]] | None
    ) -> None:
        """The held refusals were not one server-wide refusal: each is its recipient's."""
        chain, self._chain, self._chain_shape = self._chain, [], None
        for job, outcome in chain:
            self._blame(job, outcome, report, retry if retry is not None else [])

    def _trip(self, report: RunReport) -> None:
        """The same refusal for recipient after recipient: the server's, not theirs."""
        chain, self._chain, self._chain_shape = self._chain, [], None
        for job, outcome in chain:
            self._defer(job, outcome, report)
        _, last = chain[-1]
        self._tripped.add(shape(last.code, last.reply))
        count = len({job.delivery.email for job, _ in chain})
        self._server_fault(
            last,
            f"the server gave this same refusal to {count} recipients in a row, so it is "
            "taken as the server's or our configuration's, not theirs",
            report,
        )

    def _server_fault(self, outcome: Outcome, advice: str, report: RunReport) -> None:
        """Stop the run: every message would meet the same fault. Nothing is blamed on anyone."""
        reply = f"{outcome.code} {outcome.reply}" if outcome.code else outcome.reply
        where = getattr(self.transport, "name", "the mail server")
        reason = f"{where}: {reply.strip()} ({outcome.stage}); {advice}; mail stays pending"
        if report.stopped is None:
            log.error("digest %s stopped: %s", report.frequency, reason)
        self.stop(reason)

    def finish_chain(self, report: RunReport, retry: list[tuple[Delivery, Subscriber]]) -> None:
        """At the end of sending: a chain that refused everyone the run tried is the server's."""
        if not self._chain:
            return
        recipients = {job.delivery.email for job, _ in self._chain}
        if report.stopped is not None:
            # the run ended on a fault: refusals it could not tell apart are judged next time
            chain, self._chain, self._chain_shape = self._chain, [], None
            for job, outcome in chain:
                self._defer(job, outcome, report)
        elif len(recipients) >= 2 and report.sent == 0 and report.failed == 0:
            self._trip(report)
        else:
            self._settle_chain(report, retry)
