"""Sending a digest run's deliveries: take a batch from the ledger, compose, send, record.

The same loop sends on the host that plans the run and on every host that helps it: each of
``transport.concurrency`` senders takes a small batch of the run's deliveries under a claim
that lapses, composes them (in worker processes for large runs), sends them one by one over
its connection, and records each outcome before it sends again. A ledger that stops answering
for a moment (a database restart) is waited for, up to ``LEDGER_PATIENCE`` seconds; what cannot
be recorded is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from service import clock as wall_clock
from service.errors import BantinError, StateError
from service.ledger import State
from service.ledger.deliveries import Delivery
from service.mail.compose import Composer
from service.mail.compose_workers import ComposeWorkers, Job
from service.mail.events import Change, DigestEvents, changes, read_snapshot, sequences, snapshot
from service.mail.outcomes import Attempt, Outcomes
from service.mail.transport import Transport
from service.model import Article

__all__ = ["BATCH", "LEDGER_PATIENCE", "MAX_BATCH", "Senders"]

log = logging.getLogger("bantin.digest")

# deliveries a sender takes at a time: BATCH at first, so that hosts share a short run evenly,
# then twice as many after each full batch it took, up to MAX_BATCH, so that a long run costs
# the ledger a round trip per 64 messages, not per 8 (on PostgreSQL a take is ~4 ms whatever
# its size)
BATCH = 8
MAX_BATCH = 64
LEDGER_PATIENCE = 30.0  # seconds a sender waits for the ledger to answer again
POLL = 0.5  # seconds between looks at a run whose remaining deliveries are claimed elsewhere


class Gone:
    """What a ledger call gives when the ledger could not be reached: the run is stopped."""


GONE = Gone()


class Senders:
    """The senders of one host for one digest run."""

    def __init__(
        self,
        state: State,
        composer: Composer,
        transport: Transport,
        run: str,
        host: str,
        articles: Mapping[str, Article],
        outcomes: Outcomes,
        composers: ComposeWorkers,
        *,
        clock: Callable[[], datetime],
        planner: bool,
        halted: Callable[[], bool],
        on_sent: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.composer = composer
        self.transport = transport
        self.run = run
        self.host = host
        self.articles = articles
        self.outcomes = outcomes
        self.composers = composers
        self.clock = clock
        self.planner = planner  # the planning host decides that an unknown article is gone
        self.halted = halted
        self.on_sent = on_sent
        self.more = asyncio.Event()  # set when new deliveries were planned
        # long enough for one message at the worst (a connection and its commands, each up to
        # the timeout); renewed as a batch is sent, so a dead host's claims lapse soon
        self.lease = timedelta(seconds=3 * getattr(transport, "timeout", 30.0) + 10)
        # article id -> (revision, events as JSON) it went through, read once per run
        self.history: dict[str, list[tuple[str, str]]] = {}
        self.after = 0  # the highest id this host has taken in the run (Claims.take)

    async def drain(self, planning: Callable[[], bool]) -> None:
        """Send until the run has nothing left to send here (or is halted); ``planning`` says
        whether more deliveries may still come."""
        senders = [
            asyncio.create_task(self._sender(planning), name=f"sender-{n}")
            for n in range(self.transport.concurrency)
        ]
        await asyncio.gather(*senders)
        self.outcomes.finish()

    async def _sender(self, planning: Callable[[], bool]) -> None:
        size = BATCH  # this sender's next take: doubled after each full batch it sent
        while not self.halted():
            batch = await self._ledger(functools.partial(self._take, size))
            if batch is GONE:
                return
            assert isinstance(batch, list)
            size = min(size * 2, MAX_BATCH) if len(batch) == size else BATCH
            if batch:
                await self._send_batch(batch)
                continue
            if planning():
                self.more.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.more.wait(), POLL)
                continue
            waiting = await self._ledger(lambda: self.state.claims.waiting(self.run))
            if waiting is GONE:
                return
            assert isinstance(waiting, tuple)
            count, earliest = waiting
            if count == 0:
                return
            pause = POLL if earliest is None else (earliest - wall_clock.now()).total_seconds()
            await asyncio.sleep(min(max(pause, 0.01), POLL))

    def _take(self, size: int) -> list[Delivery]:
        now = wall_clock.now()  # claims are compared across hosts: the real time, always
        until = now + self.lease
        batch = self.state.claims.take(self.run, self.host, size, until, now, self.after)
        if not batch and self.after:  # what was given back or deferred lies below
            self.after = 0
            batch = self.state.claims.take(self.run, self.host, size, until, now)
        if batch:
            self.after = max(self.after, batch[-1].id)
        return batch

    async def _send_batch(self, batch: list[Delivery]) -> None:
        planned: list[tuple[Delivery, Job]] = []
        give_back: list[int] = []
        # one moment (the Date, and the date the templates print) for the whole batch, composed
        # at once: digests of the same articles at the same moment share one render
        # (mail/renders.py); a moment per message made every digest a render of its own, twice
        moment = self.clock()
        for delivery in batch:
            articles = [self.articles[i] for i in delivery.article_ids if i in self.articles]
            if len(articles) < len(delivery.article_ids):
                if self.planner:  # this host published what is published: the rest is gone
                    await self._cancel(delivery, "its articles are no longer published")
                else:  # this host's copy of the articles may lag: another host sends it
                    give_back.append(delivery.id)
                continue
            events = await self._ledger(functools.partial(self._events, delivery, articles))
            if events is GONE:
                return
            if events is None:  # its sessions moved since; the planning host sends it
                give_back.append(delivery.id)
                continue
            # an update first: the time that changed is what the reader must not miss
            articles.sort(key=lambda a: (a.id in delivery.previous, a.date, a.id), reverse=True)
            job = Job(
                delivery.subscriber,
                articles,
                delivery.frequency,
                delivery.message_id,
                moment,
                delivery.id,  # signs the mailto: unsubscribe fallback
                events,
            )
            planned.append((delivery, job))
        composed = self.composers.compose_many([job for _, job in planned])
        jobs = [(delivery, data) for (delivery, _), data in zip(planned, composed, strict=True)]
        renew_at = wall_clock.now() + self.lease / 2
        for number, (delivery, data) in enumerate(jobs):
            if self.halted():
                for _, left in jobs[number:]:
                    left.cancel()
                give_back += [d.id for d, _ in jobs[number:]]
                break
            if wall_clock.now() >= renew_at:
                rest = [d.id for d, _ in jobs[number:]]
                until = wall_clock.now() + self.lease
                renew = functools.partial(self.state.claims.renew, rest, self.host, until)
                if await self._ledger(renew) is GONE:
                    return
                renew_at = wall_clock.now() + self.lease / 2
            await self._send(delivery, data)
        if give_back:
            await self._ledger(lambda: self.state.claims.release(give_back))

    async def _send(self, delivery: Delivery, data: asyncio.Future[bytes]) -> None:
        attempt = Attempt(delivery, delivery.subscriber)
        try:
            message = await data
        except BantinError as exc:  # a template that fails: the operator must fix it
            self.outcomes.stop(str(exc))
            log.error("digest for %s not composed: %s", attempt.subscriber.email, exc)
            return
        except Exception as exc:  # a worker process died: nothing is lost, all stays pending
            self.outcomes.stop(f"composing failed: {exc.__class__.__name__}: {exc}")
            log.exception("digest for %s not composed", attempt.subscriber.email)
            return
        # with a bounce address, the envelope sender names this delivery (VERP)
        sender = self.composer.envelope_sender(delivery.id, attempt.subscriber.email)
        outcome = await self.transport.send(sender, attempt.subscriber.email, message)
        if outcome.ok and await self._ledger(lambda: self.outcomes.ack(delivery)) is GONE:
            return
        await self._ledger(lambda: self.outcomes.record(attempt, outcome))
        if self.on_sent:
            self.on_sent()

    def _events(self, delivery: Delivery, articles: list[Article]) -> DigestEvents | None:
        """What ``delivery`` says about sessions: the changes of each article sent again, and
        each session's SEQUENCE. A message whose articles' sessions changed since it was
        planned is recorded as carrying them as they are now (the planning host does it;
        another host returns None and leaves the message to it)."""
        with_events = [a for a in articles if a.events or delivery.revisions.get(a.id)]
        if not with_events:
            return DigestEvents({}, {})
        for article in with_events:
            if delivery.revisions.get(article.id, "") == article.event_revision:
                continue
            if not self.planner:
                return None
            self.state.articles.record_events(
                [(article.id, article.event_revision, snapshot(article.events))], self.clock()
            )
            self.history.pop(article.id, None)
            self.state.deliveries.restamp(delivery.id, article.id, article.event_revision)
        updates: dict[str, tuple[Change, ...]] = {}
        sequence: dict[tuple[str, str], int] = {}
        for article in with_events:
            history = self.history.get(article.id)
            if history is None:
                history = self.history[article.id] = self.state.articles.event_history(article.id)
            previous = delivery.previous.get(article.id)
            if previous is not None:
                before = next((read_snapshot(e) for r, e in history if r == previous), ())
                updates[article.id] = tuple(changes(before, article.events))
            for uid, number in sequences(history, article).items():
                sequence[article.id, uid] = number
        return DigestEvents(updates, sequence)

    async def _cancel(self, delivery: Delivery, reason: str) -> None:
        await self._ledger(lambda: self.state.deliveries.cancel(delivery.id, reason, self.clock()))
        self.outcomes.report.cancelled += 1

    async def _ledger(self, call: Callable[[], Any]) -> Any:
        """``call()`` (awaited if it is a coroutine), waiting for a ledger that is briefly away;
        GONE, with the run stopped, if it stays away or fails for good."""
        deadline = time.monotonic() + LEDGER_PATIENCE
        pause = 0.2
        while True:
            try:
                result = call()
                if isinstance(result, Awaitable):
                    return await result
                return result
            except StateError as exc:
                if not exc.transient or time.monotonic() + pause > deadline or self.halted():
                    self.outcomes.stop(
                        f"{exc}; the run stopped and its mail stays pending for the next one"
                    )
                    log.error("digest stopped: %s", exc)
                    return GONE
                log.warning("the state database is away (%s); trying again", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
