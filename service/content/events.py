"""An article's events: the front matter's ``events:`` list, or the schedule table in its body.

Pure functions. ``events:`` is validated as strictly as the rest of the front matter (an error
names the file and the event's number). Without it, a table whose header names a time column
(``Thời gian``) and a place column (``Địa điểm``) is read row by row; a row whose time cannot be
read exactly gives no event at all for the article, and the rows that failed are kept as
problems for ``bantin check``: nothing is guessed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import lxml.html

from service.content.markup import one_line, plain_text
from service.errors import ArticleError
from service.model import EVENT_STATUSES, WEEKDAYS_VI, Event, EventStatus

__all__ = ["WEEKDAYS", "events_from_front_matter", "events_from_table", "parse_when"]

DateReader = Callable[[str, ZoneInfo], datetime]

EXAMPLE = "07h30, thứ Ba 15/12/2026"
_KEYS = ("title", "start", "end", "location", "host", "status", "uid")
WEEKDAYS = WEEKDAYS_VI
_WEEKDAY_WORDS = {"hai": 0, "ba": 1, "tư": 2, "năm": 3, "sáu": 4, "bảy": 5}
_WEEKDAY_WORDS.update({str(n): n - 2 for n in range(2, 8)})  # thứ 2 = Monday ... thứ 7

_TOKENS = re.compile(
    r"(?P<date>(?P<d>\d{1,2})[/.-](?P<mo>\d{1,2})[/.-](?P<y>\d{4}))"
    r"|(?P<time>(?P<h>\d{1,2})\s*(?:giờ|h|g|:)\s*(?P<mi>\d{1,2})?(?:\s*phút)?)(?![\w/])"
    r"|(?P<weekday>thứ\s*(?P<wd>hai|ba|tư|năm|sáu|bảy|[2-7])|chủ\s*nhật|cn)(?!\w)"
    r"|(?P<period>sáng|trưa|chiều|tối|đêm)(?!\w)"
    r"|(?P<filler>(?:ngày|lúc|vào|từ|đến|tới|hồi)(?!\w)|[-,;.()–—\s]+)"
)
_AFTERNOON = {"chiều", "tối", "đêm"}


def parse_when(
    text: str, zone: ZoneInfo, day: date | None = None
) -> tuple[datetime, datetime | None]:
    """A Vietnamese time as written in schedules, as (start, end or None), in ``zone``.

    ``07h30, thứ Ba 15/12/2026``, ``14h00 ngày 17/12/2026``, ``8 giờ 30 ngày 15/12/2026``,
    ``Chiều thứ Năm 17/12/2026, từ 14h00 đến 16h30``: one date, one or two times, optional
    weekday (checked against the date), ``sáng``/``chiều``/``tối``. With ``day``, the date may
    be left out (an end written as ``11h30``). ValueError says what cannot be read.
    """
    written = one_line(text)
    flat = unicodedata.normalize("NFC", written).casefold()
    dates: list[date] = []
    times: list[tuple[int, int]] = []
    weekdays: list[int] = []
    periods: list[str] = []
    at = 0
    while at < len(flat):
        match = _TOKENS.match(flat, at)
        if match is None or match.end() == at:
            rest = written[at:].split(" ", 1)[0] or written[at:]
            raise ValueError(f"cannot read {rest!r} in {written!r}; write it like {EXAMPLE!r}")
        at = match.end()
        if match["date"]:
            try:
                dates.append(date(int(match["y"]), int(match["mo"]), int(match["d"])))
            except ValueError:
                raise ValueError(f"{match['date']!r} is not a date") from None
        elif match["time"]:
            hour, minute = int(match["h"]), int(match["mi"] or 0)
            if hour > 23 or minute > 59:
                raise ValueError(f"{match['time'].strip()!r} is not a time of day")
            times.append((hour, minute))
        elif match["weekday"]:
            wd = match["wd"]
            weekdays.append(_WEEKDAY_WORDS[wd] if wd else 6)
        elif match["period"]:
            periods.append(match["period"])
    if len(dates) > 1:
        raise ValueError(f"{written!r} has {len(dates)} dates; write one session per row")
    if not dates and day is None:
        raise ValueError(f"{written!r} has no date (dd/mm/yyyy); write it like {EXAMPLE!r}")
    if not times:
        raise ValueError(f"{written!r} has no time; write it like {EXAMPLE!r}")
    if len(times) > 2:
        raise ValueError(f"{written!r} has {len(times)} times; write a start and at most an end")
    if len(set(periods)) > 1:
        raise ValueError(f"{written!r} says both {periods[0]!r} and {periods[1]!r}")
    when = dates[0] if dates else day
    assert when is not None
    for weekday in weekdays:
        if weekday != when.weekday():
            raise ValueError(
                f"{when:%d/%m/%Y} is a {WEEKDAYS[when.weekday()]}, not {WEEKDAYS[weekday]}; "
                "correct the date or the day"
            )
    moments = []
    for hour, minute in times:
        if periods and periods[0] in _AFTERNOON and hour < 12:
            hour += 12
        elif periods and periods[0] == "sáng" and hour >= 12:
            raise ValueError(f"{written!r}: {hour}h is not in the morning (sáng)")
        moments.append(datetime(when.year, when.month, when.day, hour, minute, tzinfo=zone))
    start, end = moments[0], (moments[1] if len(moments) == 2 else None)
    if end is not None and end <= start:
        raise ValueError(f"{written!r} ends before it starts")
    return start, end


# --- front matter ------------------------------------------------------------------------------


def events_from_front_matter(
    value: Any,
    source: str,
    zone: ZoneInfo,
    title: str,
    parse_date: DateReader,
) -> tuple[Event, ...]:
    """The ``events:`` list: mappings of title, start, end, location, host, status, uid.

    ``parse_date`` reads a date as the front matter's ``date:`` is read; the schedule forms
    (``07h30, thứ Ba 15/12/2026``) work too, and an ``end`` may be a time alone (same day).
    ArticleError names the file and the event (counted from 1).
    """
    if not isinstance(value, list):
        raise ArticleError(
            source, "'events' must be a list of events, each starting with '- start:'"
        )
    events: list[Event] = []
    seen: set[str] = set()
    for number, item in enumerate(value, start=1):
        event = _front_matter_event(item, number, source, zone, title, parse_date)
        if event.uid in seen:
            raise ArticleError(
                source, f"event {number}: uid {event.uid!r} is used by an earlier event"
            )
        seen.add(event.uid)
        events.append(event)
    return tuple(events)


def _front_matter_event(
    item: Any, number: int, source: str, zone: ZoneInfo, title: str, parse_date: DateReader
) -> Event:
    def fail(reason: str) -> ArticleError:
        return ArticleError(source, f"event {number}: {reason}")

    if not isinstance(item, dict):
        raise fail("must be 'key: value' lines (start, end, location, host, status, title, uid)")
    unknown = sorted(str(k) for k in item if k not in _KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}; the keys are {', '.join(_KEYS)}")

    def text(key: str) -> str | None:
        raw = item.get(key)
        if raw is None:
            return None
        if not isinstance(raw, str):
            raise fail(f"'{key}' must be text, not a list or mapping")
        return plain_text(raw) or None

    start_text = text("start")
    if start_text is None:
        raise fail("has no 'start'; add one, like 'start: 15/12/2026 07:30'")
    start, implied_end = _moment(start_text, zone, parse_date, fail, "start")
    end = implied_end
    end_text = text("end")
    if end_text is not None:
        if implied_end is not None:
            raise fail("'start' already gives an end time; remove 'end' or the second time")
        end, _ = _moment(end_text, zone, parse_date, fail, "end", day=start.date())
        if end <= start:
            raise fail(f"'end' {end_text!r} is not after 'start' {start_text!r}")
    status = (text("status") or "confirmed").lower()
    if status not in EVENT_STATUSES:
        raise fail(f"'status' must be confirmed or cancelled, not {status!r}")
    uid = text("uid")
    if uid is not None and (len(uid) > 200 or not uid.isprintable()):
        raise fail("'uid' must be one line of at most 200 characters")
    return Event(
        uid=uid or str(number),
        title=text("title") or title,
        start=start,
        end=end,
        location=text("location"),
        host=text("host"),
        status=_status(status),
    )


def _status(value: str) -> EventStatus:
    return "cancelled" if value == "cancelled" else "confirmed"


def _moment(
    written: str,
    zone: ZoneInfo,
    parse_date: DateReader,
    fail: Callable[[str], ArticleError],
    key: str,
    day: date | None = None,
) -> tuple[datetime, datetime | None]:
    try:
        return parse_date(written, zone), None
    except ValueError:
        pass
    try:
        return parse_when(written, zone, day)
    except ValueError as exc:
        raise fail(f"'{key}': {exc}") from None


# --- the schedule table ------------------------------------------------------------------------


def _column(head: str) -> str | None:
    flat = " ".join(unicodedata.normalize("NFC", head).casefold().split())
    if "thời gian" in flat or "thời điểm" in flat or flat in ("ngày giờ", "giờ, ngày"):
        return "when"
    if "địa điểm" in flat:
        return "location"
    if "người tiếp" in flat or "chủ trì" in flat:
        return "host"
    if "nội dung" in flat:
        return "title"
    return None


def _cell(cells: list[str], columns: dict[str, int], kind: str) -> str | None:
    at = columns.get(kind)
    return (cells[at] or None) if at is not None and at < len(cells) else None


def events_from_table(
    content_html: str, title: str, zone: ZoneInfo
) -> tuple[tuple[Event, ...], tuple[str, ...]]:
    """Events from the schedule tables of an article's (sanitised) HTML, and the problems.

    A table is a schedule when its first row names a time column and a place column. Every
    row of every schedule must parse, or there are no events: the problems then say which
    rows, with their text.
    """
    if "<table" not in content_html:
        return (), ()
    root = lxml.html.fragment_fromstring(content_html, create_parent="div")
    events: list[Event] = []
    problems: list[str] = []
    number = 0
    for table in root.iter("table"):
        rows = [
            [" ".join(cell.text_content().split()) for cell in row if cell.tag in ("td", "th")]
            for row in table.iter("tr")
        ]
        if not rows:
            continue
        columns = {kind: i for i, head in enumerate(rows[0]) if (kind := _column(head))}
        if "when" not in columns or "location" not in columns:
            continue
        for row_number, cells in enumerate(rows[1:], start=1):
            if not any(cells):
                continue
            number += 1

            written = _cell(cells, columns, "when") or ""
            try:
                start, end = parse_when(written, zone)
            except ValueError as exc:
                shown = " | ".join(cells)
                problems.append(f"schedule table row {row_number} ({shown}): {exc}")
                continue
            events.append(
                Event(
                    uid=str(number),
                    title=_cell(cells, columns, "title") or title,
                    start=start,
                    end=end,
                    location=_cell(cells, columns, "location"),
                    host=_cell(cells, columns, "host"),
                )
            )
    if problems:
        return (), tuple(problems)
    return tuple(events), ()
