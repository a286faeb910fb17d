"""Standard 5-field cron expressions: parsed, and their fire times computed (pure).

Operators write cron as crontab(5) defines it: ``minute hour day-of-month month day-of-week``,
where day-of-week 0 and 7 are Sunday and names (``mon-fri``, ``sunday``) work. Fire times are
computed here on the site's wall clock rather than by APScheduler 3.x, whose cron triggers
number weekdays from Monday = 0 (``from_crontab("0 8 * * 1")`` fires on Tuesday), skip a
fire time after clocks spring forward, and repeat one for ever when they go back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # February in a leap year
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # cron numbers them from 0
_FULL_NAMES = {
    full[:3]: full
    for full in [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ]
}
_ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


class CronSyntaxError(ValueError):
    """The expression is not valid 5-field cron; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression; ``next_after`` says when it fires next (pure, correct across DST)."""

    expression: str
    minute: tuple[int, ...]
    hour: tuple[int, ...]
    day: tuple[int, ...] | None  # None = any
    month: tuple[int, ...] | None
    day_of_week: tuple[int, ...] | None  # 0 = Sunday, as in cron

    def matches(self, day: date) -> bool:
        """Whether the expression fires on ``day`` (some hours and minutes of it)."""
        return (
            (self.month is None or day.month in self.month)
            and (self.day is None or day.day in self.day)
            and (self.day_of_week is None or (day.weekday() + 1) % 7 in self.day_of_week)
        )

    def next_after(self, moment: datetime, zone: ZoneInfo) -> datetime:
        """The first time strictly after ``moment`` at which the expression fires in ``zone``.

        Read on the wall clock of ``zone``, as cron does: a time that does not exist (clocks
        spring forward) fires at the same distance past the change (02:30 becomes 03:30); a
        time that comes twice (clocks go back) fires at its first occurrence only. Each answer
        is strictly later than ``moment``, so a scheduler asking again always moves on.
        """
        local = moment.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0)
        start = local + timedelta(minutes=1)
        day = start.date()
        for _ in range(366 * 8 + 1):  # Feb 29 comes every four years, Feb 29 on a Monday rarer
            if self.matches(day):
                for hour in self.hour:
                    for minute in self.minute:
                        wall = datetime.combine(day, time(hour, minute))
                        if wall < start:
                            continue
                        instant = wall.replace(tzinfo=zone)  # fold=0: the first occurrence
                        if instant > moment:
                            return instant.astimezone(UTC).astimezone(zone)  # a real wall time
            day += timedelta(days=1)
        raise ValueError(f"{self.expression!r} never fires")


def parse_cron(expression: str) -> Cron:
    """Parse ``expression``; raise CronSyntaxError naming the bad field."""
    text = " ".join(expression.split())
    text = _ALIASES.get(text.lower(), text)
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronSyntaxError(
            f"{expression!r} has {len(fields)} fields; cron needs 5: "
            "minute hour day-of-month month day-of-week, e.g. '0 7 * * mon'"
        )
    minute = _field(fields[0], "minute", 0, 59, None)
    hour = _field(fields[1], "hour", 0, 23, None)
    day = _field(fields[2], "day-of-month", 1, 31, None)
    month = _field(fields[3], "month", 1, 12, _MONTHS, first_name=1)
    dow = _field(fields[4], "day-of-week", 0, 7, _DAYS)
    if dow is not None:
        dow = tuple(sorted({d % 7 for d in dow}))
        if len(dow) == 7:
            dow = None
    both = not fields[2].startswith("*") and not fields[4].startswith("*")
    if (day is not None and dow is not None) or both:
        # cron ORs the two fields when neither starts with '*' ('1 * 0-6' runs every day):
        # one meaning for both would be a guess, so refuse.
        raise CronSyntaxError(
            f"{expression!r} restricts both day-of-month and day-of-week; "
            "use one of them and '*' for the other"
        )
    if day is not None and not any(
        d <= _DAYS_IN_MONTH[m - 1] for m in (month or range(1, 13)) for d in day
    ):
        raise CronSyntaxError(
            f"{expression!r} never fires: no month it names has day {day[0]}"
            + (" or later" if len(day) > 1 else "")
        )
    return Cron(
        expression=expression,
        minute=minute if minute is not None else tuple(range(60)),
        hour=hour if hour is not None else tuple(range(24)),
        day=day,
        month=month,
        day_of_week=dow,
    )


def _field(
    text: str,
    name: str,
    low: int,
    high: int,
    names: list[str] | None,
    first_name: int = 0,
) -> tuple[int, ...] | None:
    if text == "*":
        return None
    values: set[int] = set()
    for part in text.split(","):
        values.update(_part(part, name, low, high, names, first_name))
    if not values:
        raise CronSyntaxError(f"{name} field {text!r} selects nothing")
    return tuple(sorted(values))


def _part(
    part: str, name: str, low: int, high: int, names: list[str] | None, first_name: int
) -> range:
    step = 1
    stepped = "/" in part
    if stepped:
        part, _, step_text = part.partition("/")
        if not step_text.isdigit() or int(step_text) == 0:
            raise CronSyntaxError(f"{name} field: step {step_text!r} must be a positive number")
        step = int(step_text)
    if part == "*":
        start, stop = low, high
    elif "-" in part:
        a, _, b = part.partition("-")
        start = _value(a, name, low, high, names, first_name)
        stop = _value(b, name, low, high, names, first_name)
        if start > stop:
            raise CronSyntaxError(f"{name} field: range {part!r} runs backwards")
    else:
        start = _value(part, name, low, high, names, first_name)
        stop = high if stepped else start  # "N/step" runs from N to the end of the range
    return range(start, stop + 1, step)


def _value(
    text: str, name: str, low: int, high: int, names: list[str] | None, first_name: int
) -> int:
    if text.isdigit():
        number = int(text)
        if not low <= number <= high:
            raise CronSyntaxError(f"{name} field: {number} is outside {low}-{high}")
        return number
    word = text.lower()
    if names is not None:
        # exactly the abbreviation or the full name: "sunflower" is not Sunday
        for index, short in enumerate(names):
            if word == short or word == _FULL_NAMES.get(short):
                return index + first_name
    allowed = f"{low}-{high}" + (f" or a name like {names[1]!r}" if names else "")
    raise CronSyntaxError(f"{name} field: {text!r} is not a value ({allowed})")
