"""A rate the relay accepts: ``smtp.max_rate``, halved when the relay says "slow down".

Relays with quotas (Amazon SES, Google Workspace's relay, a provincial ISP's smarthost) refuse
mail sent faster than they allow, with a ``421`` or a 4xx reply that says so ("454 Throttling
failure: Maximum sending rate exceeded", "451 4.7.1 too many messages, slow down"). ``Pace``
spaces messages across every connection of a run (``acquire`` before each one) and adapts the
rate the way TCP does (AIMD): a throttling reply halves it at once, for ``hold`` seconds; then
it climbs back by ``increase`` every ``step`` seconds, up to ``smtp.max_rate`` (or, without a
limit, up to the rate that drew the refusal, where the limit is lifted again). One reply is
reacted to once: refusals of messages that started before the last cut do not cut again.

``PacedTransport`` wraps a Transport: each message waits for its turn, and one that the relay
throttles is tried again at the lower rate (``retries`` times) before its Outcome goes back to
the run: deferred mail stays in the ledger all along, so nothing is lost if the process stops.

Pure apart from the clock and the sleep, which are parameters: tests drive both.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable

from service.mail.transport import Outcome, Transport, transport_for
from service.settings import Settings

__all__ = ["Pace", "PacedTransport", "is_throttle", "paced_transport"]

_THROTTLE = re.compile(
    r"slow(?:ing)?\s+down|\brat(?:e|es|ed)\b|rate[- ]?limit|too\s+many|throttl", re.IGNORECASE
)
_WINDOW = 10.0  # seconds of sends that measure the rate when there is no limit


def is_throttle(code: int | None, text: str) -> bool:
    """Whether a reply asks us to send more slowly: any 421, or a 4xx that says slow down,
    rate, too many, or throttle. Permanent (5xx) refusals never are."""
    if code == 421:
        return True
    return code is not None and 400 <= code < 500 and _THROTTLE.search(text) is not None


class Pace:
    """The sending rate of one run, shared by all its connections (AIMD; see the module).

    ``max_rate`` is messages per second (None: no limit until the relay throttles); ``clock``
    gives monotonic seconds and ``sleep`` waits, both injectable; ``floor`` is the lowest rate.
    """

    def __init__(
        self,
        max_rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        floor: float = 0.2,
        hold: float = 60.0,
        step: float = 10.0,
        increase: float | None = None,
    ) -> None:
        if max_rate is not None and max_rate <= 0:
            raise ValueError("max_rate must be positive, or None for no limit")
        self.ceiling = max_rate
        self.clock = clock
        self.sleep = sleep
        self.floor = min(floor, max_rate) if max_rate else floor
        self.hold = hold
        self.step = step
        self._increase = increase
        self._next = float("-inf")  # the earliest start of the next message
        self._cut_at: float | None = None  # when the rate was last halved
        self._cut_rate = 0.0  # the rate just after that
        self._target = 0.0  # the rate it climbs back to
        self._climb = 0.0  # messages per second added each step
        self._starts: deque[float] = deque()  # recent starts, to measure an unlimited rate
        self.throttles = 0  # replies that halved the rate
        self.waited = 0.0  # seconds spent waiting for a turn

    def rate(self) -> float | None:
        """Messages per second allowed now; None for no limit."""
        now = self.clock()
        if self._cut_at is None:
            return self.ceiling
        steps = int((now - self._cut_at - self.hold) // self.step) + 1
        rate = self._cut_rate + max(0, steps) * self._climb
        if rate >= self._target:
            self._cut_at = None  # recovered: the limit is the configured one again
            return self.ceiling
        return rate

    async def acquire(self) -> float:
        """Wait for this message's turn; returns the moment it may start (pass it to
        ``observe``)."""
        now = self.clock()
        self._starts.append(now)
        while self._starts and self._starts[0] < now - _WINDOW:
            self._starts.popleft()
        rate = self.rate()
        if rate is None:
            return now
        slot = max(now, self._next)
        self._next = slot + 1.0 / rate
        if slot > now:
            self.waited += slot - now
            await self.sleep(slot - now)
        return slot

    def observe(self, code: int | None, text: str, started: float) -> bool:
        """Take a failed message's reply into account; True if it was a throttling reply
        (then the message should be tried again, later). ``started`` is what ``acquire`` gave
        it: a message that started before the last cut (or at it) does not cut again."""
        if not is_throttle(code, text):
            return False
        if self._cut_at is not None and started <= self._cut_at:
            return True
        now = self.clock()
        current = self.rate()
        if current is None:  # no limit: halve what we were actually sending
            current = max(self.floor, len(self._starts) / _WINDOW)
        if self._cut_at is None:
            self._target = self.ceiling if self.ceiling is not None else current
            self._climb = self._increase or max(self.floor, self._target / 10)
        self._cut_rate = max(self.floor, current / 2)
        self._cut_at = now
        self._next = max(self._next, now + 1.0 / self._cut_rate)
        self.throttles += 1
        return True


class PacedTransport:
    """A Transport whose messages wait for their turn at the Pace, and are tried again at the
    lower rate when the relay throttles them (up to ``retries`` times)."""

    def __init__(self, transport: Transport, pace: Pace, retries: int = 5) -> None:
        self.transport = transport
        self.pace = pace
        self.retries = retries
        self.concurrency = transport.concurrency
        self.name = transport.name
        self.timeout: float = getattr(transport, "timeout", 30.0)
        self.deferred = 0  # messages the relay throttled at least once (the run's "waited")
        self.gave_up = 0  # of those, messages still throttled after every retry

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        """Send at the pace; a throttled message is tried again, its last Outcome returned."""
        throttled = False
        for _ in range(self.retries + 1):
            started = await self.pace.acquire()
            outcome = await self.transport.send(sender, recipient, data)
            if outcome.ok or not self.pace.observe(outcome.code, outcome.reply, started):
                break
            throttled = True
        if throttled:
            self.deferred += 1
            self.gave_up += not outcome.ok
        return outcome

    async def close(self) -> None:
        """Close the wrapped transport."""
        await self.transport.close()


def paced_transport(settings: Settings) -> PacedTransport:
    """The transport digest runs send through: the configured one, at a rate the relay takes
    (``smtp.max_rate``, and slower for a while whenever it throttles)."""
    return PacedTransport(transport_for(settings), Pace(settings.smtp.max_rate))
