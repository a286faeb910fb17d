"""Plain frozen data shared by every module: articles, categories, subscribers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Frequency = Literal["immediate", "daily", "weekly"]
FREQUENCIES: tuple[Frequency, ...] = ("immediate", "daily", "weekly")


@dataclass(frozen=True, slots=True)
class Category:
    """An article's category: its name for readers, its slug for URLs and subscribers' choices."""

    name: str
    slug: str

    def page_path(self) -> str:
        """The category's page and feeds under the output directory."""
        return f"categories/{self.slug}/"


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
