"""Standard cron: 1 is Monday, 0 and 7 are Sunday, DST handled, errors name the field; fire
times as the scheduler's trigger computes them, and as croniter does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from service.cron import CronSyntaxError, parse_cron
from service.runtime.schedule import CronTrigger, next_run

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
START = datetime(2026, 11, 25, 12, 0, tzinfo=ZONE)  # a Wednesday


def fires(expression: str, count: int = 3, start: datetime = START) -> list[datetime]:
    trigger = CronTrigger(expression, ZONE)
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
    daily, midnight = parse_cron("@daily"), parse_cron("0 0 * * *")
    assert (daily.minute, daily.hour, daily.day, daily.month, daily.day_of_week) == (
        midnight.minute, midnight.hour, midnight.day, midnight.month, midnight.day_of_week
    )  # fmt: skip
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


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 7), st.integers(0, 23), st.integers(0, 59))
def test_numeric_weekdays_fire_on_the_cron_day(dow: int, hour: int, minute: int) -> None:
    moment = fires(f"{minute} {hour} * * {dow}", 1)[0]
    assert moment.isoweekday() % 7 == dow % 7  # cron: 0 = Sunday, Python isoweekday: 7
    assert (moment.hour, moment.minute) == (hour, minute)


# --- names match exactly ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        ("0 7 * * sun", "day_of_week", (0,)),
        ("0 7 * * SUNDAY", "day_of_week", (0,)),
        ("0 7 * * Sunday", "day_of_week", (0,)),
        ("0 7 * * sUn", "day_of_week", (0,)),
        ("0 7 * * monday-friday", "day_of_week", (1, 2, 3, 4, 5)),
        ("0 7 * * Sat,sunday", "day_of_week", (0, 6)),
        ("0 7 * jan *", "month", (1,)),
        ("0 7 * JANUARY *", "month", (1,)),
        ("0 7 * september-December *", "month", (9, 10, 11, 12)),
        ("0 7 * may *", "month", (5,)),
    ],
)
def test_names_are_the_abbreviation_or_the_full_name_in_any_case(
    expression: str, field: str, values: tuple[int, ...]
) -> None:
    assert getattr(parse_cron(expression), field) == values


@pytest.mark.parametrize(
    ("expression", "field", "word"),
    [
        ("0 7 * * sunflower", "day-of-week", "sunflower"),
        ("0 7 * * monkey", "day-of-week", "monkey"),
        ("0 7 * * mon-fridays", "day-of-week", "fridays"),
        ("0 7 * * su", "day-of-week", "su"),
        ("0 7 * * tues", "day-of-week", "tues"),
        ("0 7 * * jan", "day-of-week", "jan"),
        ("0 7 * janx *", "month", "janx"),
        ("0 7 * janu *", "month", "janu"),
        ("0 7 * sept *", "month", "sept"),
        ("0 7 * mon *", "month", "mon"),
        ("0 mon * * *", "hour", "mon"),
        ("0 7 * * 1mon", "day-of-week", "1mon"),
    ],
)
def test_a_word_that_only_begins_with_a_name_is_refused(
    expression: str, field: str, word: str
) -> None:
    with pytest.raises(CronSyntaxError) as caught:
        parse_cron(expression)
    assert f"{field} field: {word!r} is not a value" in str(caught.value)


def test_a_step_from_a_weekday_runs_to_sunday_as_seven() -> None:
    # "N/step" is N-7/step, as in cronie (the day-of-week range is 0-7); croniter stops at 6,
    # so day-of-week steps from a number are left out of the comparison below.
    assert parse_cron("0 7 * * 1/2").day_of_week == (0, 1, 3, 5)
    assert parse_cron("0 7 * * 3/2").day_of_week == (0, 3, 5)


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        ("55/1 * * * *", "minute", (55, 56, 57, 58, 59)),
        ("0 0 * 11/1 *", "month", (11, 12)),
    ],
)
def test_a_step_of_one_from_a_number_runs_to_the_end_of_the_range(
    expression: str, field: str, values: tuple[int, ...]
) -> None:
    assert getattr(parse_cron(expression), field) == values
    assert croniter(expression).expanded[["minute", "hour", "day", "month"].index(field)] == list(
        values
    )


# --- the same fire times as croniter ------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
CASES = st.sampled_from([str.lower, str.upper, str.title])


@st.composite
def cron_field(
    draw: st.DrawFn, low: int, high: int, names: list[str] | None = None, first: int = 0
) -> str:
    """One field: '*', or a list of numbers, names, ranges and steps within [low, high]."""
    if draw(st.integers(0, 4)) == 0:
        return "*"

    def value(number: int, named: bool) -> str:
        if not named or names is None:
            return str(number)
        return draw(CASES)(names[number - first])

    def element() -> str:
        kind = draw(st.sampled_from(["one", "range", "range/step", "*/step", "one/step"]))
        step = draw(st.integers(1, high - low))
        if kind == "*/step":
            return f"*/{step}"
        top = high if names is None else first + len(names) - 1  # no name for 7 (Sunday)
        if kind == "one/step" and names is not DAYS:
            # step >= 2: "N/1" is a known bug (see above); day-of-week: see above too
            return f"{draw(st.integers(low, top))}/{max(step, 2)}"
        a = draw(st.integers(low, top))
        named = names is not None and draw(st.booleans())
        if kind in ("one", "one/step") or a == (top if named else high):
            return value(a, named)
        # b > a: croniter 7 reads a range of one value ("5-5") as "*"
        b = draw(st.integers(a + 1, top if named else high))
        text = f"{value(a, named)}-{value(b, named)}"
        return f"{text}/{step}" if kind == "range/step" else text

    return ",".join(element() for _ in range(draw(st.integers(1, 3))))


@st.composite
def cron_expression(draw: st.DrawFn) -> str:
    """Five fields; day-of-month and day-of-week are not both restricted (bantin refuses that
    on purpose: cron ORs the two, APScheduler ANDs them)."""
    day, weekday = draw(cron_field(1, 31)), draw(cron_field(0, 7, DAYS))
    if day != "*" and weekday != "*":
        day, weekday = draw(st.sampled_from([("*", weekday), (day, "*")]))
    fields = [draw(cron_field(0, 59)), draw(cron_field(0, 23)), day]
    return " ".join([*fields, draw(cron_field(1, 12, MONTHS, first=1)), weekday])


MOMENTS = st.datetimes(datetime(2024, 1, 1), datetime(2032, 12, 31), timezones=st.just(UTC))
COUNT = 5


def before_next_dst_change(start: datetime, zone: ZoneInfo) -> datetime:
    """A day before ``zone`` next changes its UTC offset after ``start`` (or a year on).

    APScheduler 3.11 misplaces fire times across a change (the tests below show how), so the
    comparison with croniter stops short of it.
    """
    offset = start.utcoffset()
    for days in range(1, 367):
        if (start + timedelta(days=days)).astimezone(zone).utcoffset() != offset:
            return start + timedelta(days=days - 2)
    return start + timedelta(days=366)


def bantin_times(expression: str, zone: ZoneInfo, start: datetime) -> list[datetime] | None:
    times: list[datetime] = []
    try:
        for _ in range(COUNT):
            times.append(next_run(expression, zone, times[-1] if times else start))
    except ValueError:  # never fires (30 February)
        return None
    return times


def croniter_times(expression: str, start: datetime) -> list[datetime] | None:
    iterator = croniter(expression, start)
    try:
        return [iterator.get_next(datetime) for _ in range(COUNT)]
    except CroniterBadDateError:
        return None


@pytest.mark.parametrize("zone", [ZONE, BERLIN], ids=str)
@settings(max_examples=400)
@given(expression=cron_expression(), start=MOMENTS)
def test_fire_times_agree_with_croniter(zone: ZoneInfo, expression: str, start: datetime) -> None:
    start = start.astimezone(zone)
    try:
        parse_cron(expression)
    except CronSyntaxError as refused:  # only an expression that can never fire is refused
        assert "never fires" in str(refused)
        assert croniter_times(expression, start) is None  # croniter finds no time either
        return
    ours = bantin_times(expression, zone, start)
    theirs = croniter_times(expression, start)
    if ours is None or theirs is None:
        assert ours == theirs, (ours, theirs)
        return
    horizon = before_next_dst_change(start, zone)
    assert [t for t in ours if t < horizon] == [t for t in theirs if t < horizon]
    if zone is ZONE:  # no DST: every fire time is compared
        assert ours == theirs


@pytest.mark.parametrize(
    ("expression", "after"),
    [
        ("0 * * * *", datetime(2026, 3, 28, 23, 30, tzinfo=UTC)),  # hourly across the gap
        ("*/20 1-4 * * *", datetime(2026, 3, 28, 23, 30, tzinfo=UTC)),
        ("0 7 * * *", datetime(2026, 10, 24, 12, tzinfo=UTC)),  # daily, away from the hour
    ],
)
def test_berlin_agrees_with_croniter_across_dst_changes_away_from_the_changed_hour(
    expression: str, after: datetime
) -> None:
    start = after.astimezone(BERLIN)
    assert bantin_times(expression, BERLIN, start) == croniter_times(expression, start)


def test_a_time_in_the_skipped_hour_still_fires_once_that_day() -> None:
    # 29 March 2026: Berlin clocks jump from 02:00 CET to 03:00 CEST, at 01:00 UTC. croniter
    # fires at 03:00 CEST, APScheduler at 03:30 CEST (02:30 read as CET): once, within the hour.
    before = datetime(2026, 3, 28, 12, tzinfo=BERLIN)
    first, second, *_ = bantin_times("30 2 * * *", BERLIN, before) or []
    jump = datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert jump <= first < jump + timedelta(hours=1)
    assert second == datetime(2026, 3, 30, 2, 30, tzinfo=BERLIN)


# Two APScheduler 3.11.3 bugs that reach bantin through next_run and the live scheduler, in
# zones with DST only (the default zone has none). Strict: when a fix lands, these fail and
# the marks go, and before_next_dst_change can let the comparison above run across changes.


@pytest.mark.parametrize(
    ("expression", "after"),
    [
        ("0 0 * * *", datetime(2024, 3, 31, 0, 30)),  # 1 April is skipped
        ("0 0 * * mon", datetime(2024, 3, 25, 12)),  # Monday 1 April
        ("0 0 1 * *", datetime(2026, 3, 1, 12)),  # the whole of April
    ],
)
def test_no_fire_time_is_skipped_after_clocks_spring_forward(
    expression: str, after: datetime
) -> None:
    start = after.replace(tzinfo=BERLIN)
    assert next_run(expression, BERLIN, start) == croniter(expression, start).get_next(datetime)


@pytest.mark.parametrize("expression", ["30 2 * * *", "*/30 * * * *"])
def test_fire_times_move_forward_through_the_repeated_hour(expression: str) -> None:
    # 25 October 2026: Berlin clocks go back from 03:00 CEST to 02:00 CET.
    moment = datetime(2026, 10, 24, 22, tzinfo=UTC).astimezone(BERLIN)
    for _ in range(8):
        following = next_run(expression, BERLIN, moment)
        assert following > moment, (moment, following)
        moment = following


@pytest.mark.parametrize("expression", ["0 7 1 * 0-6", "0 7 1 * sun-sat", "0 7 1-31 * mon"])
def test_both_day_fields_written_out_are_refused_even_when_one_covers_everything(
    expression: str,
) -> None:
    """cron ORs the two when neither starts with '*': '1 * 0-6' runs every day, not on the 1st."""
    with pytest.raises(CronSyntaxError, match="restricts both"):
        parse_cron(expression)
