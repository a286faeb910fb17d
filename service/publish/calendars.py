"""Events on the published side: which events each calendar holds, and how pages show them.

``service.ical`` writes the iCalendar bytes; this module chooses what goes in them (an
article's own ``events.ics``; the site's and each category's ``calendar.ics`` with the
upcoming and recent events) and makes what pages and feeds carry: the "add to Google
Calendar" link, schema.org Event JSON-LD, the JSON Feed extension, the "upcoming" list.
Pure: ``now`` is a parameter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from markupsafe import Markup

from service.ical import (
    CalendarSpec,
    SequenceOf,
    article_calendar_bytes,
    calendar_bytes,
    description,
    stateless_sequence,
)
from service.model import Article, Event
from service.settings import SiteSettings

__all__ = [
    "CALENDAR_FILE",
    "EVENTS_FILE",
    "RECENT",
    "EventLink",
    "article_calendar",
    "calendar_window",
    "event_links",
    "feed_events",
    "json_ld",
    "section_calendar",
    "upcoming",
    "webcal",
]

EVENTS_FILE = "events.ics"  # beside an article's page
CALENDAR_FILE = "calendar.ics"  # the site's and each category's
RECENT = timedelta(days=365)  # how far back the subscribed calendars reach
MAX_CALENDAR_EVENTS = 1000  # the newest ones, when a calendar would hold more
GOOGLE = "https://calendar.google.com/calendar/render"

Entry = tuple[Article, Event]


@dataclass(frozen=True, slots=True)
class EventLink:
    """One event as a page shows it, with its "add to Google Calendar" link (None if cancelled)."""

    event: Event
    google: str | None


def _end(event: Event) -> datetime:
    return event.end or event.start


def calendar_window(articles: Sequence[Article], now: datetime) -> list[Entry]:
    """The events a subscribed calendar holds: those not ended more than ``RECENT`` ago, by
    start (at most ``MAX_CALENDAR_EVENTS``, the latest)."""
    since = now - RECENT
    chosen = [(a, e) for a in articles for e in a.events if _end(e) >= since]
    chosen.sort(key=lambda pair: (pair[1].start, pair[0].id, pair[1].uid))
    return chosen[-MAX_CALENDAR_EVENTS:]


def upcoming(articles: Sequence[Article], now: datetime, limit: int = 10) -> list[Entry]:
    """Events not yet over at ``now``, soonest first (cancelled ones too, marked so)."""
    chosen = [(a, e) for a in articles for e in a.events if _end(e) >= now]
    chosen.sort(key=lambda pair: (pair[1].start, pair[0].id, pair[1].uid))
    return chosen[:limit]


def article_calendar(
    article: Article, site: SiteSettings, sequence: SequenceOf = stateless_sequence
) -> bytes:
    """The ``events.ics`` of one article: every event it announces."""
    return article_calendar_bytes(article, site.base_url, site.zone, sequence)


def section_calendar(
    name: str,
    prefix: str,
    entries: Sequence[Entry],
    site: SiteSettings,
    sequence: SequenceOf = stateless_sequence,
) -> bytes:
    """The ``calendar.ics`` under ``prefix`` ("" for the site, a category's directory)."""
    spec = CalendarSpec(
        name=name,
        url=f"{site.base_url}/{prefix}",
        zone=site.zone,
        base_url=site.base_url,
        description=site.description,
    )
    return calendar_bytes(spec, entries, sequence)


def webcal(url: str) -> str:
    """``url`` as a webcal:// link, which calendar programs open as a subscription."""
    parts = urlsplit(url)
    return urlunsplit(("webcal", *parts[1:]))


def _google_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def google_link(article: Article, event: Event, site: SiteSettings) -> str:
    """Google Calendar's "create event" link, filled in; without an end, it starts and ends at
    the start (Google then asks), since no end is guessed."""
    dates = f"{_google_time(event.start)}/{_google_time(event.end or event.start)}"
    query = {
        "action": "TEMPLATE",
        "text": event.title,
        "dates": dates,
        "ctz": site.timezone,
        "details": description(article, event, article.link(site.base_url)),
    }
    if event.location:
        query["location"] = event.location
    return f"{GOOGLE}?{urlencode(query)}"


def event_links(article: Article, site: SiteSettings) -> list[EventLink]:
    """The article's events as its page shows them."""
    return [
        EventLink(event, None if event.cancelled else google_link(article, event, site))
        for event in article.events
    ]


def _schema_event(article: Article, event: Event, site: SiteSettings) -> dict[str, object]:
    item: dict[str, object] = {
        "@context": "https://schema.org",
        "@type": "Event",
        "name": event.title,
        "startDate": event.start.isoformat(),
        "eventStatus": "https://schema.org/"
        + ("EventCancelled" if event.cancelled else "EventScheduled"),
        "eventAttendanceMode": "https://schema.org/OfflineEventAttendanceMode",
        "url": article.link(site.base_url),
        "description": description(article, event, article.link(site.base_url)),
        "organizer": {
            "@type": "Organization",
            "name": site.author or site.title,
            "url": f"{site.base_url}/",
        },
    }
    if event.end is not None:
        item["endDate"] = event.end.isoformat()
    if event.location:
        item["location"] = {"@type": "Place", "name": event.location, "address": event.location}
    if event.host:
        item["performer"] = {"@type": "Person", "name": event.host}
    return item


def json_ld(article: Article, site: SiteSettings) -> Markup:
    """A ``<script type="application/ld+json">`` with the article's events as schema.org
    Events ("" without events). ``<``, ``>`` and ``&`` are escaped so no text can close it."""
    if not article.events:
        return Markup("")
    items = [_schema_event(article, e, site) for e in article.events]
    text = json.dumps(items if len(items) > 1 else items[0], ensure_ascii=False, indent=1)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(f'<script type="application/ld+json">\n{text}\n</script>')


def feed_events(
    article: Article, site: SiteSettings, sequence: SequenceOf = stateless_sequence
) -> list[dict[str, object]]:
    """The article's events for the JSON Feed item's ``_bantin`` extension."""
    ics = f"{site.base_url}/{article.page_path()}{EVENTS_FILE}"
    events = []
    for event in article.events:
        item: dict[str, object] = {
            "uid": article.event_uid(event, site.base_url),
            "title": event.title,
            "start": event.start.isoformat(),
            "end": event.end.isoformat() if event.end else None,
            "location": event.location,
            "host": event.host,
            "status": event.status,
            "sequence": sequence(article, event),
            "ics": ics,
        }
        events.append(item)
    return events
