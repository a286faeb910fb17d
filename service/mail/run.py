"""A digest run: plan it in the ledger, send it (with every host that helps), record all.

The planner streams the subscribers file in chunks: each chunk's digests are committed as
pending deliveries of this run (and the waiting deliveries of its subscribers join the run),
so memory stays flat in the number of subscribers. Meanwhile this host's senders (senders.py)
take the run's deliveries in small batches, compose, send and record them; on PostgreSQL the
other hosts help. Each message is marked sent on the server's 250; what fails for a while is
tried again later in the run, then left for the next one (outcomes.py decides what each
reply means). ``run_digest`` is what `bantin digest` and the service both call.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from service import clock as wall_clock
from service.clock import Clock
from service.errors import BantinError, StateError
from service.ledger import State
from service.ledger.deliveries import Claim, Delivery
from service.mail.compose import Composer
from service.mail.compose_workers import ComposeWorkers
from service.mail.events import snapshot
from service.mail.mime import message_id
from service.mail.news import Fresh, as_if_recorded, fresh_since, select
from service.mail.outcomes import Outcomes, RunReport
from service.mail.senders import Senders
from service.mail.subscribers import Entry
from service.mail.transport import Transport
from service.metrics import Metrics
from service.model import Article, Frequency, Subscriber

__all__ = ["CHUNK", "DigestRun", "Progress", "RunReport", "run_digest"]

log = logging.getLogger("bantin.digest")

CHUNK = 128  # subscribers per ledger transaction; small enough not to stall the HTTP server

Progress = Callable[[RunReport], None]


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
        host: str | None = None,
    ) -> None:
        self.state = state
        self.composer = composer
        self.transport = transport
        self.frequency = frequency
        self.published = published
        self.entries = entries
        self.dry_run = dry_run
        self.progress = progress
        self.clock = clock
        self.processes = processes  # worker processes for composing; 0 = inline
        self.host = host or socket.gethostname()
        self.token = uuid.uuid4().hex  # names this run's deliveries in the ledger
        self.report = RunReport(frequency, dry_run=dry_run)
        self.outcomes = Outcomes(
            state,
            self.report,
            where=transport.name,
            clock=clock,
            metrics=metrics,
            retry_delays=retry_delays,
        )
        self.now = clock()
        self.by_id = {a.id: a for a in published}
        self.top = 0  # the newest article sequence, once recorded
        self.fresh: Fresh = []
        # article id -> revision of its sessions, for the articles with sessions still to come:
        # an address sent another revision of one gets it again, as an update
        self.sessions = {
            a.id: a.event_revision
            for a in published
            if any((e.end or e.start) >= self.now for e in a.events)
        }
        self.start: int | None = None  # where unseen subscribers start, in a dry run
        self.waiting: dict[str, list[Delivery]] = {}  # deliveries that wait, by address
        self.composers = ComposeWorkers(composer, (), 0)
        self.senders: Senders | None = None
        self._planning = True
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
        """Whether sending has stopped, as a fault or an interruption."""
        return self.report.stopped is not None or self.report.interrupted is not None

    async def run(self) -> RunReport:
        """Plan and send the due digests; ``published`` is every article published now."""
        if self._ran:
            raise RuntimeError("a DigestRun runs once; make a new one")
        self._ran = True
        started = time.monotonic()
        self._prepare()
        try:
            if self.dry_run:
                await self._plan()
            else:
                await self._plan_and_send()
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
            state.articles.record_events(
                ((a.id, a.event_revision, snapshot(a.events)) for a in self.published if a.events),
                self.now,
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
                self.waiting.setdefault(delivery.email, []).append(delivery)
        self.composers = ComposeWorkers(
            self.composer, self.by_id.values(), 0 if self.dry_run else self.processes
        )

    async def _plan_and_send(self) -> None:
        state = self.state
        state.claims.start(self.token, self.frequency, self.host, self.now)
        self.senders = Senders(
            state,
            self.composer,
            self.transport,
            self.token,
            self.host,
            self.by_id,
            self.outcomes,
            self.composers,
            clock=self.clock,
            planner=True,
            halted=lambda: self.halted,
            on_sent=self._progress,
        )
        try:
            sending = asyncio.create_task(self.senders.drain(lambda: self._planning))
            try:
                await self._plan()
            except StateError as exc:  # the ledger failed while planning: what is planned waits
                self.stop(f"{exc}; the run stopped and its mail stays pending for the next one")
                log.error("digest %s stopped: %s", self.frequency, exc)
            finally:
                self._planning = False
                self.senders.more.set()
            await sending
        finally:
            try:
                counts, hosts = state.claims.totals(self.token)
                state.claims.end(self.token, wall_clock.now())
            except StateError as exc:
                log.error("digest %s: the run could not be closed: %s", self.frequency, exc)
            else:
                self.report.sent = counts.get("sent", 0)
                self.report.failed = counts.get("failed", 0)
                self.report.deferred = counts.get("pending", 0)
                self.report.hosts = hosts

    def _progress(self) -> None:
        if self.progress:
            self.progress(self.report)

    async def _plan(self) -> None:
        """Read the subscribers file a chunk at a time, and plan each chunk's digests."""
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
                return
        if chunk:
            await self._chunk(chunk)
        if file_ok and not self.halted:
            for deliveries in self.waiting.values():
                for delivery in deliveries:
                    self._cancel(delivery, "no longer a subscriber (not in the file, no sign-up)")

    async def _chunk(self, chunk: list[Subscriber]) -> None:
        states = self.state.subscribers.sync(
            chunk, self.now, record=not self.dry_run, start=self.start
        )
        self.report.subscribers += len(chunk)
        chosen: dict[str, tuple[Subscriber, list[str]]] = {}
        advance: list[str] = []
        rejoin: list[Subscriber] = []  # active, with mail that waited since an earlier run
        for subscriber in chunk:
            status = states[subscriber.key]
            if status.failures:
                self.outcomes.failing.add(subscriber.key)
            waited = self.waiting.pop(subscriber.key, [])
            for delivery in waited:
                if not status.active:
                    self._cancel(delivery, "unsubscribed or suspended")
            if status.active and waited:
                rejoin.append(subscriber)
            if subscriber.frequency != self.frequency or not status.active:
                continue
            advance.append(subscriber.key)
            news = [a.id for a in select(status.cursor, self.fresh, subscriber)]
            chosen[subscriber.key] = (subscriber, news)
        claims = self._claims(chosen)
        if self.dry_run:
            for claim in claims:
                articles = [self.by_id[i] for i in claim.article_ids if i in self.by_id]
                self.composer.compose(
                    claim.subscriber, articles, self.frequency, "<dry-run@bantin>", self.now
                )
                self.report.sent += 1
            return
        domain = self.composer.domain
        # what waited joins this run; only those who have such mail are looked up: an update
        # per subscriber, each a scan of every pending row (this run's too), cost more than
        # planning the rest of the chunk
        self.state.claims.verify(rejoin, self.token, self.now)
        self.state.deliveries.claim(
            claims,
            advance,
            self.top,
            lambda email, ids: message_id(email, ids, domain),
            self.now,
            run=self.token,
        )
        if self.senders is not None:
            self.senders.more.set()
        await asyncio.sleep(0)  # let the senders and the HTTP server in between chunks

    def _claims(self, chosen: dict[str, tuple[Subscriber, list[str]]]) -> list[Claim]:
        """The digest of each subscriber: their news, and the articles whose sessions changed
        since they were sent them (updates), with the revision of the sessions of each."""
        owed = self.state.deliveries.updates(list(chosen), self.sessions) if self.sessions else {}
        claims: list[Claim] = []
        for key, (subscriber, ids) in chosen.items():
            previous = {
                article_id: revision
                for article_id, revision in owed.get(key, {}).items()
                if subscriber.wants(self.by_id[article_id]) and article_id not in ids
            }
            wanted = ids + list(previous)
            if not wanted:
                continue
            revisions = {i: self.by_id[i].event_revision for i in wanted if self.by_id[i].events}
            claims.append(Claim(subscriber, self.frequency, tuple(wanted), revisions, previous))
        return claims

    def _cancel(self, delivery: Delivery, reason: str) -> None:
        self.state.deliveries.cancel(delivery.id, reason, self.now)
        self.report.cancelled += 1


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
