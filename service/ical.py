"""Events to iCalendar (RFC 5545) bytes: the one place that writes calendars (pure).

Both pipelines need it: ``publish`` writes ``events.ics`` and ``calendar.ics`` files, and a
digest can attach the same bytes as a ``text/calendar; method=PUBLISH`` part. It lives in the
core so that neither has to import the other.

Deterministic: the bytes depend only on the events and their articles, never on the clock, so
an unchanged calendar keeps its ETag. DTSTAMP and LAST-MODIFIED are the article's ``modified``
time; times are written in the site's zone with its VTIMEZONE (``add_missing_timezones``:
icalendar writes TZID references without one otherwise, and strict clients refuse that).

SEQUENCE (see ``stateless_sequence``) comes from the article's ``updated:``: publishing keeps
no state. A ledger-backed number can be passed as ``sequence`` instead.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from service.model import Article, Event

if TYPE_CHECKING:  # imported where a calendar is made: a build that makes none never loads it
    from icalendar import Event as VEvent
    from icalendar import Timezone

__all__ = [
    "CalendarSpec",
    "SequenceOf",
    "article_calendar_bytes",
    "calendar_bytes",
    "stateless_sequence",
]

SequenceOf = Callable[[Article, Event], int]
PRODID = "-//bantin//bantin 0.1//VI"
REFRESH = timedelta(hours=1)  # how often a subscribed calendar should be fetched again
_LAST_COVERED = date(2038, 1, 1)  # icalendar's default end of VTIMEZONE transitions
_INT32 = 2**31 - 1  # RFC 5545 INTEGER


def stateless_sequence(article: Article, event: Event) -> int:
    """The event's SEQUENCE without any stored state: whole minutes from the article's
    ``date`` to its ``updated`` (0 when it was never updated).

    Why this and not a content hash: RFC 5545 wants SEQUENCE to grow with each significant
    revision, and a calendar client keeps an event it already has unless the new copy has a
    higher SEQUENCE, or an equal one with a later DTSTAMP. A hash does not grow. The file's
    mtime is no better: it is lost by a checkout or a restore, and the bytes (and ETag) of
    every calendar would change on a machine that merely rebuilt. ``updated:`` is what the
    operator writes when an announcement changes (README: set it when a session moves), it
    only ever moves forward, and a later ``updated`` gives both a higher SEQUENCE and a later
    DTSTAMP. An edit without ``updated:`` keeps the old SEQUENCE and DTSTAMP: subscribed
    calendars still show the change (they replace what they fetched), but a copy imported by
    hand is not updated. A ledger that numbers event revisions can pass its own ``sequence``;
    it should never go below this value, which calendars may already hold.
    """
    if article.updated is None or article.updated <= article.date:
        return 0
    return min(int((article.updated - article.date).total_seconds() // 60), _INT32)


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """One calendar: its name, a description, the page it belongs to, and the site's zone."""

    name: str
    url: str  # the page people see for it (the site, a category, an article)
    zone: ZoneInfo
    base_url: str  # makes the events' UIDs
    description: str = ""


def calendar_bytes(
    spec: CalendarSpec,
    entries: Iterable[tuple[Article, Event]],
    sequence: SequenceOf = stateless_sequence,
) -> bytes:
    """A VCALENDAR (METHOD:PUBLISH) with one VEVENT per (article, event), in the order given.

    Even without events it holds the zone's VTIMEZONE: RFC 5545 wants at least one component,
    and a subscribed calendar that empties out must still parse.
    """
    from icalendar import Calendar, Timezone

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("name", spec.name)  # RFC 7986
    calendar.add("x-wr-calname", spec.name)
    if spec.description:
        calendar.add("description", spec.description)
        calendar.add("x-wr-caldesc", spec.description)
    calendar.add("x-wr-timezone", spec.zone.key)
    calendar.add("url", spec.url)
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})  # RFC 7986
    calendar.add("x-published-ttl", "PT1H")  # the same, for Outlook
    latest = _LAST_COVERED
    events = 0
    for article, event in entries:
        calendar.add_component(_vevent(spec, article, event, sequence(article, event)))
        latest = max(latest, (event.end or event.start).date().replace(month=1, day=1))
        events += 1
    if events:
        # what calendar.add_missing_timezones(last_date=...) does, with each zone made once
        at = len(calendar.timezones)
        for tzid in calendar.get_missing_tzids():
            try:
                zone = _zone(tzid, latest.replace(year=latest.year + 1))
            except ValueError:  # not a zone the provider knows: left out, as icalendar does
                continue
            calendar.subcomponents.insert(at, zone)
            at += 1
    else:
        calendar.add_component(_zone(spec.zone.key, Timezone.DEFAULT_LAST_DATE))
    data: bytes = calendar.to_ical()
    return data


def _zone(tzid: str, last_date: date) -> Timezone:
    """A VTIMEZONE of ``tzid`` covering transitions up to ``last_date``: a copy of one made
    once, since making it takes ~10 ms (every calendar, every article's events.ics)."""
    return copy.deepcopy(_made_zone(tzid, last_date))


@functools.lru_cache(maxsize=64)
def _made_zone(tzid: str, last_date: date) -> Timezone:
    from icalendar import Timezone

    return Timezone.from_tzid(tzid, last_date=last_date)


def article_calendar_bytes(
    article: Article,
    base_url: str,
    zone: ZoneInfo,
    sequence: SequenceOf = stateless_sequence,
) -> bytes:
    """The calendar of one article's events: its ``events.ics``, and the bytes a digest can
    attach as ``text/calendar; charset=utf-8; method=PUBLISH``."""
    spec = CalendarSpec(
        name=article.title,
        url=article.link(base_url),
        zone=zone,
        base_url=base_url,
        description=article.summary,
    )
    return calendar_bytes(spec, [(article, e) for e in article.events], sequence)


def _vevent(spec: CalendarSpec, article: Article, event: Event, sequence: int) -> VEvent:
    stamp = article.modified.astimezone(UTC)
    link = article.link(spec.base_url)
    from icalendar import Event as VEvent

    vevent = VEvent()
    vevent.add("uid", article.event_uid(event, spec.base_url))
    vevent.add("dtstamp", stamp)
    vevent.add("created", article.date.astimezone(UTC))
    vevent.add("last-modified", stamp)
    vevent.add("sequence", sequence)
    vevent.add("dtstart", event.start.astimezone(spec.zone))
    if event.end is not None:
        vevent.add("dtend", event.end.astimezone(spec.zone))
    # clients that ignore STATUS still show the word
    vevent.add("summary", f"[Đã hủy] {event.title}" if event.cancelled else event.title)
    if event.location:
        vevent.add("location", event.location)
    vevent.add("description", description(article, event, link))
    vevent.add("url", link)
    vevent.add("status", "CANCELLED" if event.cancelled else "CONFIRMED")
    vevent.add("categories", [article.category.name])
    return vevent


def description(article: Article, event: Event, link: str) -> str:
    """The text of an event for calendars and links: host, the article's summary, its link."""
    lines = []
    if event.cancelled:
        lines.append("Buổi này đã bị hủy.")
    if event.host:
        lines.append(f"Người tiếp / chủ trì: {event.host}")
    if article.summary:
        lines.append(article.summary)
    lines.append(link)
    return "\n".join(lines)
