"""Plain frozen data shared by every module: articles, their events, categories, subscribers,
and what the subscription pages show."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

Frequency = Literal["immediate", "daily", "weekly"]
FREQUENCIES: tuple[Frequency, ...] = ("immediate", "daily", "weekly")
EventStatus = Literal["confirmed", "cancelled"]
EVENT_STATUSES: tuple[EventStatus, ...] = ("confirmed", "cancelled")
# Vietnamese day names as written in running text, Monday first (as datetime.weekday counts)
WEEKDAYS_VI = ("thứ Hai", "thứ Ba", "thứ Tư", "thứ Năm", "thứ Sáu", "thứ Bảy", "Chủ nhật")


@dataclass(frozen=True, slots=True)
class Event:
    """One session an article announces (a citizen reception, a meeting): when, where, who.

    ``uid`` is unique within its article: an explicit ``uid:`` from the front matter, else the
    event's position ("1", "2", ...). The calendar UID, which must be unique everywhere, is made
    from it and the article's id by ``Article.event_uid``.
    """

    uid: str
    title: str
    start: datetime  # aware
    end: datetime | None = None  # aware, after start; None: the article gives no end
    location: str | None = None
    host: str | None = None
    status: EventStatus = "confirmed"

    @property
    def cancelled(self) -> bool:
        """Whether the session was called off (it stays listed, marked cancelled)."""
        return self.status == "cancelled"

    @property
    def revision(self) -> str:
        """A digest of what a citizen acts on: start, end, location and status.

        A change of wording (title, host) keeps it; moving the session, changing its place or
        cancelling it changes it. The ledger can compare revisions to tell "the time changed".
        """
        end = self.end.astimezone(UTC).isoformat() if self.end else ""
        significant = "\x1f".join(
            (self.start.astimezone(UTC).isoformat(), end, self.location or "", self.status)
        )
        return hashlib.blake2b(significant.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Category:
    """An article's category: its name for readers, its slug for URLs and subscribers' choices."""

    name: str
    slug: str


@dataclass(frozen=True, slots=True)
class Article:
    """One announcement, parsed, cleaned and sanitised; dates are timezone-aware."""

    id: str  # stable identity: front matter `id`, else the source path without extension
    slug: str
    title: str
    date: datetime
    category: Category
    summary: str  # plain text
    content_html: str  # sanitised HTML
    source: str  # path relative to the source directory, with '/' separators
    updated: datetime | None = None
    author: str | None = None
    url: str | None = None  # an explicit link elsewhere; else the article's own page
    draft: bool = False
    tags: tuple[str, ...] = ()
    fingerprint: str = ""  # of the file's bytes: a file moved unchanged is known again by it
    events: tuple[Event, ...] = ()  # in the order written
    # why the schedule table in the body gave no events (one line per row that does not parse)
    event_problems: tuple[str, ...] = ()

    @property
    def modified(self) -> datetime:
        """When the article last changed: ``updated`` if given, else its date."""
        return self.updated or self.date

    def is_published(self, now: datetime) -> bool:
        """Not a draft, and its date has come by ``now``."""
        return not self.draft and self.date <= now

    def page_path(self) -> str:
        """The article's page under the output directory, without the index.html."""
        return f"articles/{self.slug}/"

    def link(self, base_url: str) -> str:
        """The article's link for readers: its ``url`` if set, else its page under ``base_url``."""
        return self.url or f"{base_url}/{self.page_path()}"

    def guid(self, base_url: str) -> str:
        """The entry id in every feed format: stable when the article is edited or retitled."""
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{base_url}#{self.id}").urn

    def event_uid(self, event: Event, base_url: str) -> str:
        """The event's calendar UID (RFC 5545): unique everywhere, stable when the article or
        the event is edited, as long as the article's id and the event's uid stay."""
        name = uuid.uuid5(uuid.NAMESPACE_URL, f"{base_url}#{self.id}#event-{event.uid}")
        return f"{name}@{urlsplit(base_url).hostname or 'localhost'}"

    @property
    def event_revision(self) -> str:
        """A digest of every event's uid and revision: changes exactly when a session of this
        article is added, removed, moved, relocated or cancelled ("" without events)."""
        if not self.events:
            return ""
        joined = "\x1e".join(f"{e.uid}\x1f{e.revision}" for e in self.events)
        return hashlib.blake2b(joined.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One entry of the subscribers file: address, name, frequency, categories (None: all)."""

    email: str  # as written; compared lower-cased
    name: str | None = None
    frequency: Frequency = "daily"
    categories: frozenset[str] | None = None  # category slugs; None = every category

    @property
    def key(self) -> str:
        """The address lower-cased: how the ledger and subscribers file tell subscribers apart."""
        return self.email.lower()

    def wants(self, article: Article) -> bool:
        """Whether ``article`` is in a category this subscriber asked for."""
        return self.categories is None or article.category.slug in self.categories


def consent_version(text: str) -> str:
    """The fingerprint a consent text is known by: the same text, the same version."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SignupForm:
    """What the subscription form shows: the categories offered (``chosen`` ticked), the
    frequency picked, what was typed, the consent text with its version, and what is wrong."""

    categories: tuple[Category, ...]
    consent: str  # the text the subscriber agrees to, as recorded with their consent
    version: str  # its fingerprint: the form sends it back, so the record names what was shown
    chosen: frozenset[str] = frozenset()  # category slugs ticked
    frequency: Frequency = "daily"
    email: str = ""
    name: str = ""
    errors: Mapping[str, str] = field(default_factory=dict)  # field name -> what is wrong


SignupPage = Literal[
    "form",  # the form, empty or with what was typed and what is wrong in it
    "sent",  # "look in your mailbox": the one answer to every accepted submission
    "limited",  # too many submissions from this client, or confirmation mails overall
    "closed",  # the form is switched off
    "confirm",  # the confirmation link opened: a button, which alone confirms
    "confirmed",
    "expired",  # a confirmation link past its time, or replaced by a newer one
    "invalid",  # a link bantin did not sign
    "preferences",  # the subscriber's own choices, to change; and unsubscribe
    "saved",
    "office",  # the operators' file lists the address: only unsubscribing is done here
    "unsubscribed",
    "refused",  # a form sent from another site (CSRF)
    "error",  # the state could not be reached: try again later
]


@dataclass(frozen=True, slots=True)
class SignupAnswer:
    """A page of the subscription pages to show: which one, its HTTP status, and its data."""

    page: SignupPage
    status: int = 200
    form: SignupForm | None = None
    email: str = ""
    frequency: Frequency | None = None
    category_names: tuple[str, ...] = ()  # the categories chosen, by name; () = all
