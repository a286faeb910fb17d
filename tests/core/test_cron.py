"""Standard cron for APScheduler 3.x: 1 is Monday, 0 and 7 are Sunday, errors name the field."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.cron import CronTrigger
from hypothesis import given, settings
from hypothesis import strategies as st

from service.cron import CronSyntaxError, parse_cron

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
START = datetime(2026, 11, 25, 12, 0, tzinfo=ZONE)  # a Wednesday


def fires(expression: str, count: int = 3, start: datetime = START) -> list[datetime]:
    trigger = CronTrigger(**parse_cron(expression).trigger_fields(), timezone=ZONE)
    found: list[datetime] = []
    previous = None
    now = start
    for _ in range(count):
        moment = trigger.get_next_fire_time(previous, now)
        assert moment is not None
        found.append(moment)
        previous, now = moment, moment
        now = moment.replace(second=1)
    return found


def test_one_means_monday() -> None:
    times = fires("0 8 * * 1")
    assert [t.strftime("%A %H:%M") for t in times] == ["Monday 08:00"] * 3
    assert times[0] == datetime(2026, 11, 30, 8, 0, tzinfo=ZONE)
    assert parse_cron("0 8 * * 1").day_of_week == (1,)


@pytest.mark.parametrize("dow", ["0", "7", "sun", "SUN", "Sunday"])
def test_zero_and_seven_and_names_are_sunday(dow: str) -> None:
    times = fires(f"0 7 * * {dow}")
    assert all(t.weekday() == 6 for t in times)
    assert times[0] == datetime(2026, 11, 29, 7, 0, tzinfo=ZONE)


def test_default_schedules() -> None:
    assert fires("0 7 * * *", 2) == [
        datetime(2026, 11, 26, 7, tzinfo=ZONE),
        datetime(2026, 11, 27, 7, tzinfo=ZONE),
    ]
    assert fires("0 7 * * mon", 1) == [datetime(2026, 11, 30, 7, tzinfo=ZONE)]


def test_weekday_ranges_names_and_lists() -> None:
    assert parse_cron("0 7 * * 1-5").day_of_week == (1, 2, 3, 4, 5)
    assert parse_cron("0 7 * * mon-fri").day_of_week == (1, 2, 3, 4, 5)
    assert parse_cron("0 7 * * sat,sun").day_of_week == (0, 6)  # a wrap is written as a list
    assert parse_cron("0 7 * * 5-7").day_of_week == (0, 5, 6)
    assert parse_cron("0 7 * * 0,7").day_of_week == (0,)
    assert parse_cron("0 7 * * 0-7").day_of_week is None
    assert {t.weekday() for t in fires("0 7 * * sat,sun", 4)} == {5, 6}
    assert {t.weekday() for t in fires("0 7 * * 1-5", 10)} == {0, 1, 2, 3, 4}


def test_steps_and_months() -> None:
    cron = parse_cron("*/15 8-17/3 * jan-mar,12 *")
    assert cron.minute == (0, 15, 30, 45)
    assert cron.hour == (8, 11, 14, 17)
    assert cron.month == (1, 2, 3, 12)
    assert parse_cron("5/20 * * * *").minute == (5, 25, 45)
    assert [t.minute for t in fires("*/20 * * * *", 4)] == [0, 20, 40, 0]
    assert fires("30 6 1 1 *", 1) == [datetime(2027, 1, 1, 6, 30, tzinfo=ZONE)]


def test_aliases() -> None:
    assert parse_cron("@daily").trigger_fields() == parse_cron("0 0 * * *").trigger_fields()
    assert fires("@weekly", 1)[0].weekday() == 6


def test_fires_in_the_site_zone() -> None:
    moment = fires("0 7 * * *", 1)[0]
    assert moment.utcoffset() is not None
    assert moment.utcoffset().total_seconds() == 7 * 3600
    assert moment.hour == 7


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("60 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * 32 * *", "day-of-month"),
        ("* * * 13 *", "month"),
        ("* * * foo *", "month"),
        ("* * * * 8", "day-of-week"),
        ("* * * * funday", "day-of-week"),
        ("* * * * sat-sun", "day-of-week"),
        ("*/0 * * * *", "minute"),
        ("*/x * * * *", "minute"),
        ("1,,2 * * * *", "minute"),
        ("-1 * * * *", "minute"),
        ("1-2-3 * * * *", "minute"),
        ("* * * *", "5"),
        ("* * * * * *", "5"),
        ("", "5"),
        ("0 7 1 * mon", "day-of-month and day-of-week"),
    ],
)
def test_bad_expressions_name_the_field(expression: str, field: str) -> None:
    with pytest.raises(CronSyntaxError) as caught:
        parse_cron(expression)
    assert field in str(caught.value)
    assert "\n" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789*/-,@ abcdefghijklmnopqrstuvwxyz", max_size=25))
def test_any_text_parses_into_a_valid_trigger_or_a_cron_syntax_error(text: str) -> None:
    try:
        cron = parse_cron(text)
    except CronSyntaxError as exc:
        assert str(exc)
        return
    CronTrigger(**cron.trigger_fields(), timezone=ZONE)  # APScheduler accepts what we accept


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 7), st.integers(0, 23), st.integers(0, 59))
def test_numeric_weekdays_fire_on_the_cron_day(dow: int, hour: int, minute: int) -> None:
    moment = fires(f"{minute} {hour} * * {dow}", 1)[0]
    assert moment.isoweekday() % 7 == dow % 7  # cron: 0 = Sunday, Python isoweekday: 7
    assert (moment.hour, moment.minute) == (hour, minute)
