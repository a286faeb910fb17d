"""The pace of sending: spacing by smtp.max_rate, halving on a throttling reply, climbing back.

A fake clock and a fake sleep drive the Pace: nothing sleeps for real, and every figure is
exact. The last tests put it in front of a real aiosmtpd server that answers "421 4.7.0 Try
again later, rate limited" to its first messages, alone and under a whole DigestRun.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from smtpserver import Recorder, running_server

from service.content.slug import category
from service.ledger import State
from service.mail.compose import Composer
from service.mail.pace import Pace, PacedTransport, is_throttle
from service.mail.run import DigestRun, run_digest
from service.mail.subscribers import read_entries
from service.mail.transport import MemoryTransport, Outcome, SmtpTransport
from service.model import Article
from service.settings import load_settings

KEY = b"unsubscribe key for pace tests.."
T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


class FakeTime:
    """Monotonic seconds that move only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (421, "4.7.0 Try again later, rate limited", True),
        (421, "Service not available, closing transmission channel", True),
        (454, "Throttling failure: Maximum sending rate exceeded.", True),
        (451, "4.7.1 Please slow down", True),
        (450, "4.2.1 The user you are trying to contact is receiving mail at a rate", True),
        (452, "4.5.3 Too many recipients", True),
        (450, "4.2.0 greylisted, try again in 5 minutes", False),
        (451, "4.3.0 temporary failure, separate queue", False),
        (550, "5.7.1 rate limit exceeded, message rejected", False),  # permanent: not a pace
        (None, "connection reset", False),
    ],
)
def test_which_replies_ask_for_a_slower_pace(code: int | None, text: str, expected: bool) -> None:
    assert is_throttle(code, text) is expected


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_without_a_limit_nothing_waits() -> None:
    time = FakeTime()
    pace = Pace(None, clock=time.clock, sleep=time.sleep)

    async def go() -> None:
        for _ in range(100):
            await pace.acquire()

    run(go())
    assert time.sleeps == [] and pace.rate() is None


def test_max_rate_spaces_messages_across_every_sender() -> None:
    time = FakeTime()
    pace = Pace(4.0, clock=time.clock, sleep=time.sleep)
    starts: list[float] = []

    async def sender() -> None:
        for _ in range(5):
            starts.append(await pace.acquire())

    async def go() -> None:
        await asyncio.gather(*(sender() for _ in range(4)))

    run(go())
    assert sorted(starts) == [1000.0 + n * 0.25 for n in range(20)]
    assert time.now == pytest.approx(1000.0 + 19 * 0.25)


def test_a_throttle_halves_the_rate_for_a_while_then_it_climbs_back() -> None:
    time = FakeTime()
    pace = Pace(10.0, clock=time.clock, sleep=time.sleep, hold=60, step=10, increase=1.0)
    started = run(pace.acquire())
    assert pace.observe(421, "4.7.0 Try again later, rate limited", started)
    assert pace.rate() == 5.0 and pace.throttles == 1
    time.now += 59.9
    assert pace.rate() == 5.0  # held
    time.now += 0.1
    assert pace.rate() == 6.0  # then +1 every 10 s
    time.now += 30
    assert pace.rate() == 9.0
    time.now += 10
    assert pace.rate() == 10.0  # back to smtp.max_rate, and no longer throttled
    time.now += 1000
    assert pace.rate() == 10.0


def test_refusals_of_messages_already_in_flight_cut_only_once() -> None:
    time = FakeTime()
    pace = Pace(8.0, clock=time.clock, sleep=time.sleep)

    async def burst() -> list[float]:
        return [await pace.acquire() for _ in range(4)]

    starts = run(burst())
    for started in starts:  # all four were sent before the relay said anything
        assert pace.observe(421, "4.7.0 rate limited", started)
    assert pace.rate() == 4.0 and pace.throttles == 1
    # a message sent after the cut and refused again: the rate halves again
    later = run(pace.acquire())
    assert pace.observe(451, "4.7.1 slow down", later)
    assert pace.rate() == 2.0 and pace.throttles == 2
    # other failures change nothing
    assert not pace.observe(550, "5.1.1 user unknown", run(pace.acquire()))
    assert not pace.observe(450, "4.2.0 greylisted", run(pace.acquire()))
    assert pace.rate() == 2.0


def test_the_rate_never_falls_below_the_floor() -> None:
    time = FakeTime()
    pace = Pace(1.0, clock=time.clock, sleep=time.sleep, floor=0.2)
    for _ in range(10):
        pace.observe(421, "slow down", run(pace.acquire()))
    assert pace.rate() == 0.2


def test_without_a_limit_a_throttle_halves_the_rate_that_was_sent() -> None:
    time = FakeTime()
    pace = Pace(None, clock=time.clock, sleep=time.sleep, hold=30, step=10)

    async def send(count: int, gap: float) -> float:
        started = 0.0
        for _ in range(count):
            started = await pace.acquire()
            time.now += gap
        return started

    last = run(send(100, 0.1))  # 10 messages a second over the last 10 s
    assert pace.observe(454, "Throttling failure: Maximum sending rate exceeded", last)
    assert pace.rate() == 5.0
    before = len(time.sleeps)
    run(send(3, 0))
    assert time.sleeps[before:] == [pytest.approx(0.2)] * 3  # 5 a second now
    time.now += 30 + 5 * 10  # the hold, then five steps of 1/s: back at 10, unlimited again
    assert pace.rate() is None


class Throttling(Recorder):
    """Answers MAIL FROM of its first ``refuse`` messages with a 421 and hangs up."""

    def __init__(self, refuse: int) -> None:
        super().__init__()
        self.refuse = refuse
        self.refused = 0

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refused < self.refuse:
            self.refused += 1
            asyncio.get_running_loop().call_later(0.01, server.transport.close)
            return "421 4.7.0 Try again later, rate limited"
        return await super().handle_MAIL(server, session, envelope, address, options)


PEOPLE = [f"nguoi{n}@example.org" for n in range(12)]


def throttling_server(refuse: int) -> Any:
    return running_server(recorder=Throttling(refuse))


def test_a_relay_that_throttles_gets_everything_once_at_a_lower_rate(project: Path) -> None:
    settings = load_settings(project / "config" / "bantin.toml")
    time = FakeTime()
    pace = Pace(20.0, clock=time.clock, sleep=time.sleep)
    with throttling_server(refuse=5) as server:
        smtp = settings.smtp.model_copy(
            update={"port": server.port, "security": "none", "concurrency": 3, "timeout": 10}
        )
        transport = PacedTransport(SmtpTransport(smtp), pace)

        async def send(address: str) -> Outcome:
            return await transport.send(
                "bantin@tinh.example.gov.vn", address, b"Subject: x\r\n\r\nx\r\n"
            )

        async def go() -> list[Outcome]:
            try:
                return await asyncio.gather(*(send(a) for a in PEOPLE))
            finally:
                await transport.close()

        outcomes = run(go())
        assert all(o.ok for o in outcomes), outcomes
        assert server.recorder.refused == 5
        assert Counter(server.recipients()) == Counter(PEOPLE)  # each exactly once
    assert pace.throttles >= 1 and pace.rate() is not None and pace.rate() < 20.0
    assert transport.deferred >= 1 and transport.gave_up == 0


def test_a_digest_run_through_a_throttling_relay_sends_each_digest_once(project: Path) -> None:
    config = project / "config" / "bantin.toml"
    published = [
        Article(
            id="lich-tiep",
            slug="lich-tiep",
            title="Thông báo lịch tiếp công dân",
            date=T0 - timedelta(days=1),
            category=category("Thông báo"),
            summary="Nội dung.",
            content_html="<p>Nội dung.</p>",
            source="lich-tiep.md",
        )
    ]
    with throttling_server(refuse=6) as server:
        config.write_text(
            '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
            '[mail]\ntransport = "smtp"\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n'
            "timeout = 10\nconcurrency = 2\nmax_rate = 50\n",
            encoding="utf-8",
        )
        settings = load_settings(config)
        settings.mail.subscribers_file.write_text(
            "".join(f'[[subscriber]]\nemail = "{p}"\n' for p in PEOPLE), encoding="utf-8"
        )
        state = State(settings.state.url, create=True)
        entries = read_entries(settings.mail.subscribers_file)
        first = DigestRun(
            state,
            Composer(settings, KEY),
            MemoryTransport(),
            "daily",
            [],
            entries,
            clock=lambda: T0,
        )
        asyncio.run(run_digest(first))  # they subscribe; the article comes after
        time = FakeTime()
        pace = Pace(settings.smtp.max_rate, clock=time.clock, sleep=time.sleep)
        transport = PacedTransport(SmtpTransport(settings.smtp), pace)
        digest = DigestRun(
            state,
            Composer(settings, KEY),
            transport,
            "daily",
            published,
            read_entries(settings.mail.subscribers_file),
            retry_delays=(),
            clock=lambda: T0 + timedelta(hours=1),
        )
        report = asyncio.run(run_digest(digest))
        assert report.ok and report.sent == len(PEOPLE), report.summary()
        assert server.recorder.refused == 6
        assert Counter(server.recipients()) == Counter(PEOPLE)
        assert state.deliveries.pending() == []
    assert pace.throttles >= 1 and transport.deferred >= 1 and transport.gave_up == 0
