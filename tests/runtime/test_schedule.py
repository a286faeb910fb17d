"""When digests run: cron in the site zone on a fake clock, missed runs, the start-up catch-up.

The pure functions take the clock as a parameter (no real waiting); the catch-up is checked on
the real service with a ledger seeded as if it had been down over a scheduled run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from servicekit import RARE_WEEKLY, Bantin, Mailbox, smtp_server

from service.ledger import State
from service.runtime.schedule import missed, next_run

HCM = ZoneInfo("Asia/Ho_Chi_Minh")
BERLIN = ZoneInfo("Europe/Berlin")
FRIDAY = datetime(2026, 11, 27, 9, 30, tzinfo=HCM)


def test_daily_at_seven_in_ho_chi_minh() -> None:
    first = next_run("0 7 * * *", HCM, FRIDAY)
    assert first == datetime(2026, 11, 28, 7, 0, tzinfo=HCM)
    assert first.astimezone(UTC) == datetime(2026, 11, 28, 0, 0, tzinfo=UTC)
    # strictly after: a run at exactly 07:00 has the next day's as its next
    assert next_run("0 7 * * *", HCM, first) == datetime(2026, 11, 29, 7, 0, tzinfo=HCM)
    assert next_run("0 7 * * *", HCM, first - timedelta(seconds=1)) == first


def test_one_is_monday() -> None:
    when = next_run("0 8 * * 1", HCM, FRIDAY)
    assert when.weekday() == 0
    assert when == datetime(2026, 11, 30, 8, 0, tzinfo=HCM)


@pytest.mark.parametrize("expression", ["0 7 * * 0", "0 7 * * 7", "0 7 * * sun"])
def test_zero_and_seven_are_sunday(expression: str) -> None:
    when = next_run(expression, HCM, FRIDAY)
    assert when.weekday() == 6
    assert when == datetime(2026, 11, 29, 7, 0, tzinfo=HCM)
    following = next_run(expression, HCM, when)
    assert following.weekday() == 6
    assert following - when == timedelta(days=7)


def test_weekdays_by_name_skip_the_weekend() -> None:
    times = [next_run("30 7 * * mon-fri", HCM, FRIDAY)]
    for _ in range(5):
        times.append(next_run("30 7 * * mon-fri", HCM, times[-1]))
    assert [t.strftime("%a") for t in times] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Mon"]
    assert all((t.hour, t.minute) == (7, 30) for t in times)


def test_a_zone_without_dst_keeps_the_utc_hour_all_year() -> None:
    for month in range(1, 13):
        when = next_run("0 7 * * *", HCM, datetime(2026, month, 15, 12, tzinfo=HCM))
        assert when.astimezone(UTC).hour == 0
        assert when.utcoffset() == timedelta(hours=7)


def test_wall_clock_time_holds_across_a_dst_change() -> None:
    # Europe/Berlin springs forward on Sunday 29 March 2026 (CET +01 -> CEST +02).
    before = next_run("0 7 * * *", BERLIN, datetime(2026, 3, 27, 12, tzinfo=BERLIN))
    after = next_run("0 7 * * *", BERLIN, before)
    assert (before.hour, after.hour) == (7, 7)
    assert before.astimezone(UTC).hour == 6
    assert after == datetime(2026, 3, 29, 7, 0, tzinfo=BERLIN)
    assert after.astimezone(UTC).hour == 5


def test_missed_when_the_service_was_down_over_a_scheduled_time() -> None:
    last = datetime(2026, 11, 25, 7, 0, 2, tzinfo=HCM)  # Wednesday's run
    assert missed("0 7 * * *", HCM, last, FRIDAY)  # Thursday's and Friday's were missed
    assert not missed("0 7 * * *", HCM, last, datetime(2026, 11, 26, 6, 59, tzinfo=HCM))
    assert missed("0 7 * * *", HCM, last, datetime(2026, 11, 26, 7, 0, tzinfo=HCM))


def test_nothing_missed_on_a_fresh_install() -> None:
    assert not missed("0 7 * * *", HCM, None, FRIDAY)


def test_nothing_missed_when_the_last_run_came_after_the_latest_fire_time() -> None:
    assert not missed("0 7 * * *", HCM, FRIDAY.replace(hour=7, minute=0, second=1), FRIDAY)
    # a weekly schedule: Monday's run covers the whole week up to the next Monday
    monday = datetime(2026, 11, 23, 7, 0, 5, tzinfo=HCM)
    assert not missed("0 7 * * mon", HCM, monday, FRIDAY)
    assert missed("0 7 * * mon", HCM, monday, datetime(2026, 11, 30, 7, 0, tzinfo=HCM))


def test_missed_compares_instants_across_zones() -> None:
    last = datetime(2026, 11, 26, 23, 59, tzinfo=UTC)  # 06:59 on Friday in Ho Chi Minh City
    assert missed("0 7 * * *", HCM, last, datetime(2026, 11, 27, 0, 0, 1, tzinfo=UTC))
    assert not missed("0 7 * * *", HCM, last, datetime(2026, 11, 26, 23, 59, 59, tzinfo=UTC))


# --- the catch-up at start-up, on the real service ------------------------------------------


@pytest.fixture
def down_over_a_run(project: Path) -> Iterator[tuple[Bantin, Mailbox]]:
    with smtp_server() as (port, mailbox):
        bantin = Bantin(project, port, daily="0 7 * * *", weekly=RARE_WEEKLY)
        bantin.publish("Thông báo lịch tiếp công dân tháng 5")
        bantin.subscribe("hoa@example.org", frequency="daily")
        state = State("sqlite:///var/bantin.db")
        try:
            long_ago = datetime.now(UTC) - timedelta(days=3)
            state.runs.record("digest:daily", long_ago, long_ago, True, "seeded by the test")
        finally:
            state.close()
        try:
            yield bantin, mailbox
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()}")


def test_a_missed_daily_run_happens_once_at_start_up(
    down_over_a_run: tuple[Bantin, Mailbox],
) -> None:
    bantin, _ = down_over_a_run
    started = datetime.now(UTC)
    bantin.start()
    health = bantin.wait(
        lambda: "digest:daily" in ((h := bantin.health()) or {}).get("runs", {}) and h,
        10,
        "the catch-up daily run in /healthz",
    )
    assert health["runs"]["digest:daily"]["ok"] is True
    assert "digest:weekly" not in health["runs"]  # never ran before: nothing to catch up on
    # let the scheduler tick a few times: a second daily run would show now
    bantin.wait(
        lambda: (bantin.health() or {})["runs"]["scan"]["at"] != health["runs"]["scan"]["at"],
        5,
        "another scan",
    )
    log = bantin.log_text()
    assert log.count("catching up on the daily digest") == 1
    assert log.count("catching up on the weekly digest") == 0
    assert log.count("bantin digest daily:") == 1, log
    status = bantin.cli("status")
    assert status.returncode == 0, status.stderr
    assert "seeded by the test" not in status.stdout
    runs = {line.split()[0] for line in status.stdout.splitlines() if line.startswith("  digest:")}
    assert "digest:daily" in runs
    state = State(f"sqlite:///{bantin.root}/var/bantin.db")
    try:
        daily = {run.kind: run for run in state.runs.all()}["digest:daily"]
    finally:
        state.close()
    assert daily.started >= started - timedelta(seconds=1)


def test_a_reload_keeps_the_scan_timer_and_a_new_interval_resets_it() -> None:
    """Each config reload restarted the scan timer: edited more often than scan_interval, the
    articles directory was never scanned again."""
    import asyncio

    from service.runtime.schedule import Scheduler

    async def job() -> None:
        pass

    async def scenario() -> tuple[datetime, datetime, datetime]:
        scheduler = Scheduler(HCM)
        scheduler.start()
        try:
            scheduler.every("scan", 3600, job, start_now=False)
            first = scheduler._scheduler.get_job("scan").next_run_time
            await asyncio.sleep(0)
            scheduler.every("scan", 3600, job, start_now=False)  # a reload, same interval
            kept = scheduler._scheduler.get_job("scan").next_run_time
            scheduler.every("scan", 60, job, start_now=False)  # the interval edited
            changed = scheduler._scheduler.get_job("scan").next_run_time
        finally:
            scheduler.shutdown()
        return first, kept, changed

    first, kept, changed = asyncio.run(scenario())
    assert kept == first
    assert changed < first - timedelta(minutes=50)
