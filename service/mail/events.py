"""What a digest says about events: what changed since an address was sent an article, and
the SEQUENCE each event's calendar entry carries (pure, no I/O).

The ledger keeps, for every revision of an article's events, the events as they were
(``snapshot``/``read_snapshot``), and for each address the revision it was sent. An update
compares the two: ``changes(before, after)`` lists the sessions moved, relocated, cancelled,
added or dropped; a change of wording only (title, host) is not a change.

SEQUENCE (RFC 5545) must grow with every significant revision, or a calendar client keeps the
old time: ``sequences(history, article)`` counts the revisions each event went through, and is
never below ``ical.stateless_sequence``, which the published ``.ics`` files may carry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from service.ical import stateless_sequence
from service.model import Article, Event

__all__ = [
    "Change",
    "DigestEvents",
    "changes",
    "read_snapshot",
    "sequences",
    "snapshot",
    "update_label",
]

# what changed, as the digest names it
TIME, PLACE, CANCELLED, RESTORED, ADDED, DROPPED = (
    "thời gian",
    "địa điểm",
    "hủy",
    "tổ chức lại",
    "thêm buổi",
    "bỏ buổi",
)


def snapshot(events: Sequence[Event]) -> str:
    """``events`` as JSON, to be kept in the ledger with their revision."""
    return json.dumps(
        [
            {
                "uid": e.uid,
                "title": e.title,
                "start": e.start.isoformat(),
                "end": e.end.isoformat() if e.end else None,
                "location": e.location,
                "host": e.host,
                "status": e.status,
            }
            for e in events
        ],
        ensure_ascii=False,
        sort_keys=True,
    )


def read_snapshot(text: str) -> tuple[Event, ...]:
    """The events ``snapshot`` wrote."""
    return tuple(
        Event(
            uid=item["uid"],
            title=item["title"],
            start=datetime.fromisoformat(item["start"]),
            end=datetime.fromisoformat(item["end"]) if item["end"] else None,
            location=item["location"],
            host=item["host"],
            status=item["status"],
        )
        for item in json.loads(text)
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One session as an address had it and as it is now (None: it did not / no longer exists),
    and what changed, in the digest's words."""

    before: Event | None
    after: Event | None
    what: tuple[str, ...]

    @property
    def event(self) -> Event:
        """The session as it is now, or as it was if it was dropped."""
        event = self.after or self.before
        assert event is not None
        return event


def changes(before: Sequence[Event], after: Sequence[Event]) -> list[Change]:
    """The sessions whose start, end, place or status differ between ``before`` and ``after``
    (matched by uid), in the order of ``after``, then the dropped ones."""
    old = {e.uid: e for e in before}
    found: list[Change] = []
    for event in after:
        was = old.pop(event.uid, None)
        if was is None:
            found.append(Change(None, event, (ADDED,)))
            continue
        what: list[str] = []
        if (was.start, was.end) != (event.start, event.end):
            what.append(TIME)
        if (was.location or "") != (event.location or ""):
            what.append(PLACE)
        if was.status != event.status:
            what.append(CANCELLED if event.cancelled else RESTORED)
        if what:
            found.append(Change(was, event, tuple(what)))
    found.extend(Change(was, None, (DROPPED,)) for was in old.values())
    return found


def update_label(found: Iterable[Change]) -> str:
    """The line that marks an article sent again: "Cập nhật: thay đổi thời gian và địa điểm"."""
    what: list[str] = []
    for change in found:
        what.extend(w for w in change.what if w not in what)
    if not what:
        return "Cập nhật"
    changed = [w for w in what if w in (TIME, PLACE)]
    others = [w for w in what if w not in (TIME, PLACE)]
    parts = ([f"thay đổi {' và '.join(changed)}"] if changed else []) + others
    return "Cập nhật: " + ", ".join(parts)


def tally(count: int, updated: int) -> str:
    """What a digest of ``count`` articles, ``updated`` of them sent again for a changed
    schedule, holds: "2 tin mới", "1 cập nhật lịch", "2 tin mới và 1 cập nhật lịch"."""
    news = count - updated
    parts = ([f"{news} tin mới"] if news else []) + (
        [f"{updated} cập nhật lịch"] if updated else []
    )
    return " và ".join(parts) or "0 tin mới"


def sequences(history: Sequence[tuple[str, str]], article: Article) -> dict[str, int]:
    """Each event's SEQUENCE (by uid) in ``article`` as it is now: the times the event's start,
    end, place or status changed over ``history`` (the article's (revision, snapshot) pairs,
    oldest first; the current one is taken as last if missing), never below the stateless
    number the published calendars use. A session the article no longer has gets the number
    its cancellation is sent with."""
    seen: dict[str, list[str]] = {}
    for _, text in history:
        for event in read_snapshot(text):
            revisions = seen.setdefault(event.uid, [])
            if not revisions or revisions[-1] != event.revision:
                revisions.append(event.revision)
    numbers: dict[str, int] = {}
    for event in article.events:
        revisions = seen.pop(event.uid, [])
        if not revisions or revisions[-1] != event.revision:
            revisions = [*revisions, event.revision]
        numbers[event.uid] = max(len(revisions) - 1, stateless_sequence(article, event))
    for uid, revisions in seen.items():  # dropped: its cancellation is one revision more
        numbers[uid] = len(revisions)
    return numbers


@dataclass(frozen=True, slots=True)
class DigestEvents:
    """What composing one digest needs beyond its articles: for each article sent again, the
    changes since the address got it; and each event's SEQUENCE, by (article id, uid)."""

    updates: Mapping[str, tuple[Change, ...]]
    sequence: Mapping[tuple[str, str], int]
