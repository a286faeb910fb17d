"""Plain frozen data shared by every module: articles, categories, subscribers, and what the
subscription pages show."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Frequency = Literal["immediate", "daily", "weekly"]
FREQUENCIES: tuple[Frequency, ...] = ("immediate", "daily", "weekly")


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
