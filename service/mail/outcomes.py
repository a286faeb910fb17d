"""What each message's outcome does to the ledger and the run's report.

An accepted message is marked sent before its connection sends again. A refusal is judged by
whom it concerns (replies.py): the recipient's own permanent refusals count towards suspending
them, temporary ones are retried; the server's faults stop the run and leave the mail pending.
Policy refusals that name no address are held in a chain (the circuit breaker): the same one for
``BREAKER`` recipients in a row, or for everyone the run tried, is the server's, not theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service import clock as wall_clock
from service.ledger import State
from service.ledger.deliveries import Delivery
from service.mail.replies import shape
from service.mail.transport import Outcome
from service.metrics import Metrics
from service.model import Subscriber

__all__ = ["BREAKER", "GIVE_UP_AFTER", "Attempt", "Outcomes", "RunReport"]

log = logging.getLogger("bantin.digest")

GIVE_UP_AFTER = 20  # network failures in a row, with nothing accepted, end the sending
BREAKER = 5  # the same policy refusal for this many recipients in a row is the server's


@dataclass(slots=True)
class RunReport:
    """What a digest run did, for its summary line, status and health."""

    frequency: str
    dry_run: bool = False
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    cancelled: int = 0
    subscribers: int = 0
    invalid: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why sending stopped early, as a fault, if it did
    interrupted: str | None = None  # why sending stopped early without a fault (a shutdown)
    suspended: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)  # the hosts that sent it (several: shared)

    @property
    def ok(self) -> bool:
        """The run went through: deferred messages wait in the ledger, they are no failure."""
        return self.stopped is None

    def summary(self) -> str:
        """The line a run prints and records: counts, speed, and why it stopped early if it did."""
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        verb = "would send" if self.dry_run else "sent"
        line = (
            f"bantin digest {self.frequency}: {self.sent} {verb}, {self.deferred} deferred, "
            f"{self.failed} failed, {self.subscribers} subscribers read"
        )
        if self.invalid:
            line += f" ({self.invalid} invalid skipped)"
        line += f", {self.seconds:.1f} s, {rate:.0f} messages/s"
        if len(self.hosts) > 1:
            line += f" (sent from {', '.join(self.hosts)})"
        if self.stopped:
            line += f"; stopped early: {self.stopped}"
        elif self.interrupted:
            line += f"; interrupted: {self.interrupted}"
        return line


@dataclass(frozen=True, slots=True)
class Attempt:
    """One message sent once: its ledger row and its recipient."""

    delivery: Delivery
    subscriber: Subscriber


class Outcomes:
    """Records outcomes for one run (or one host's part of it).

    A deferred message is tried again later in the run, after each of ``retry_delays`` (by any
    host of the run), then held for the next run.
    """

    def __init__(
        self,
        state: State,
        report: RunReport,
        *,
        where: str,
        clock: Callable[[], datetime],
        metrics: Metrics | None = None,
        retry_delays: Sequence[float] = (2.0, 10.0),
    ) -> None:
        self.state = state
        self.report = report
        self.where = where  # the transport, for messages: "mail server host:587"
        self.clock = clock
        self.metrics = metrics
        self.retry_delays = retry_delays
        self._tries: dict[int, int] = {}  # delivery id -> temporary failures in this run
        self.failing: set[str] = set()  # addresses with permanent failures to clear on a 250
        self._acks: list[tuple[int, str, bool]] = []
        self._acked: asyncio.Future[None] | None = None
        # PostgreSQL's commit is a round trip over the network: it is waited for on a thread,
        # the loop goes on sending meanwhile, and the 250s that arrive share the next commit.
        # SQLite's (~50 us, no network) costs less than a hand-off to a thread.
        self._off_loop = state.db.dialect != "sqlite"
        self._committing = False
        self._network_failures = 0
        self._chain: list[tuple[Attempt, Outcome]] = []  # suspect refusals held
        self._chain_shape: str | None = None
        self._tripped: set[str] = set()  # refusal shapes that stopped this run

    def stop(self, reason: str) -> None:
        """Send nothing more: what is in flight finishes, the rest stays pending for later."""
        if self.report.stopped is None:
            self.report.stopped = reason

    # -- accepted -------------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        """Record a 250 before this connection sends anything else.

        Acknowledgements that arrive in the same turn of the loop, or while the previous
        commit is on its way (PostgreSQL), share one commit: a sender waits for it, so at most
        one accepted message per connection is unrecorded at any moment, which is what a
        kill -9 can make arrive twice.
        """
        self._acks.append((delivery.id, delivery.email, delivery.email in self.failing))
        if self._acked is None:
            loop = asyncio.get_running_loop()
            self._acked = loop.create_future()
            if not self._committing:
                loop.call_soon(self._flush_acks)
        await asyncio.shield(self._acked)

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, []
        done, self._acked = self._acked, None
        assert done is not None
        if not self._off_loop:
            try:
                self.state.deliveries.mark_sent_many(acks, self.clock())
            except BaseException as exc:
                done.set_exception(exc)
                return
            self._recorded(acks, done)
            return
        self._committing = True
        commit = asyncio.get_running_loop().run_in_executor(
            None, self.state.deliveries.mark_sent_many, acks, self.clock()
        )
        commit.add_done_callback(lambda _: self._committed(commit, acks, done))

    def _committed(
        self,
        commit: asyncio.Future[None],
        acks: list[tuple[int, str, bool]],
        done: asyncio.Future[None],
    ) -> None:
        """A commit made on a thread is over: start the next one if 250s arrived while it was
        on its way, and tell its own senders how it went."""
        self._committing = False
        if self._acked is not None:
            asyncio.get_running_loop().call_soon(self._flush_acks)
        if commit.cancelled():
            done.cancel()
        elif (failure := commit.exception()) is not None:
            done.set_exception(failure)
        else:
            self._recorded(acks, done)

    def _recorded(self, acks: list[tuple[int, str, bool]], done: asyncio.Future[None]) -> None:
        """``acks`` are committed: their addresses' failures are cleared, their senders go on."""
        for _, email, _ in acks:
            self.failing.discard(email)
        done.set_result(None)

    # -- every outcome --------------------------------------------------------------------

    def record(self, attempt: Attempt, outcome: Outcome) -> None:
        """Count ``outcome`` (acked already if accepted) and decide what follows from it."""
        if self.metrics and outcome.seconds:
            self.metrics.smtp_seconds.observe(outcome.seconds)
        if outcome.ok:
            self._settle_chain()
            self.report.sent += 1
            self._network_failures = 0
            if self.metrics:
                self.metrics.digests_sent.inc()
            return
        verdict = outcome.verdict
        if verdict.scope == "server":
            self._defer(attempt, outcome, again=False)
            self._server_fault(outcome, verdict.advice)
            return
        if verdict.scope == "message":
            self._defer(attempt, outcome, again=True)
            self._network_failures += 1
            if self._network_failures >= GIVE_UP_AFTER:
                self.stop(f"the mail server kept failing ({outcome.reply}); the rest stays pending")
            return
        if not verdict.suspect:
            self._settle_chain()
            self._blame(attempt, outcome)
            return
        key = shape(outcome.code, outcome.reply)
        if key in self._tripped:  # in flight when the breaker tripped on this very refusal
            self._defer(attempt, outcome, again=False)
            return
        if key != self._chain_shape:
            self._settle_chain()
            self._chain_shape = key
        self._chain.append((attempt, outcome))
        if len({a.delivery.email for a, _ in self._chain}) >= BREAKER:
            self._trip()

    def finish(self) -> None:
        """At the end of a round of sending: judge the refusals still held."""
        if not self._chain:
            return
        recipients = {a.delivery.email for a, _ in self._chain}
        if self.report.stopped is not None:
            # the run ended on a fault: refusals it could not tell apart are judged next time
            chain, self._chain, self._chain_shape = self._chain, [], None
            for attempt, outcome in chain:
                self._defer(attempt, outcome, again=False)
        elif len(recipients) >= 2 and self.report.sent == 0 and self.report.failed == 0:
            self._trip()
        else:
            self._settle_chain()

    # -- what an outcome means --------------------------------------------------------------

    def _blame(self, attempt: Attempt, outcome: Outcome) -> None:
        """A refusal of this recipient: permanent ones count towards suspension."""
        if not outcome.permanent:
            self._defer(attempt, outcome, again=True)
            return
        delivery = attempt.delivery
        suspended = self.state.deliveries.mark_failed(
            delivery.id, delivery.email, outcome.code, outcome.reply, self.clock()
        )
        self.report.failed += 1
        self.failing.add(delivery.email)
        log.warning("refused: %s: %s %s", attempt.subscriber.email, outcome.code, outcome.reply)
        if suspended:
            self.report.suspended.append(delivery.email)
            log.warning(
                "suspended %s after repeated refusals; `bantin resume %s` lifts it",
                delivery.email,
                delivery.email,
            )
        if self.metrics:
            self.metrics.failed(outcome.reason)

    def _defer(self, attempt: Attempt, outcome: Outcome, *, again: bool) -> None:
        """Leave the delivery pending; ``again``: try it once more later in this run, if its
        retries are not used up (recomposed then: no bytes are held meanwhile)."""
        delivery = attempt.delivery
        now = self.clock()
        tries = self._tries[delivery.id] = self._tries.get(delivery.id, 0) + 1
        retry_at = None
        if again and tries <= len(self.retry_delays):
            # compared with other hosts' clocks: the real time, whatever clock the run reads
            retry_at = wall_clock.now() + timedelta(seconds=self.retry_delays[tries - 1])
        self.state.deliveries.mark_deferred(delivery.id, outcome.code, outcome.reply, now, retry_at)
        self.report.deferred += 1
        if self.metrics:
            self.metrics.deferred(outcome.reason)
        log.info("deferred: %s: %s %s", attempt.subscriber.email, outcome.code or "", outcome.reply)

    def _settle_chain(self) -> None:
        """The held refusals were not one server-wide refusal: each is its recipient's."""
        chain, self._chain, self._chain_shape = self._chain, [], None
        for attempt, outcome in chain:
            self._blame(attempt, outcome)

    def _trip(self) -> None:
        """The same refusal for recipient after recipient: the server's, not theirs."""
        chain, self._chain, self._chain_shape = self._chain, [], None
        for attempt, outcome in chain:
            self._defer(attempt, outcome, again=False)
        _, last = chain[-1]
        self._tripped.add(shape(last.code, last.reply))
        count = len({attempt.delivery.email for attempt, _ in chain})
        self._server_fault(
            last,
            f"the server gave this same refusal to {count} recipients in a row, so it is "
            "taken as the server's or our configuration's, not theirs",
        )

    def _server_fault(self, outcome: Outcome, advice: str) -> None:
        """Stop the run: every message would meet the same fault. Nothing is blamed on anyone."""
        reply = f"{outcome.code} {outcome.reply}" if outcome.code else outcome.reply
        reason = f"{self.where}: {reply.strip()} ({outcome.stage}); {advice}; mail stays pending"
        if self.report.stopped is None:
            log.error("digest %s stopped: %s", self.report.frequency, reason)
        self.stop(reason)
