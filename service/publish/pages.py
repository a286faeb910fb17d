"""Articles to HTML pages: the index, one page per article, one per category, the archive;
the index and category pages carry the subscription form when it is on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.content.slug import offered
from service.ical import SequenceOf, stateless_sequence
from service.model import Article, Category, Event, SignupForm, consent_version
from service.publish.archive import archive_page_path
from service.publish.calendars import CALENDAR_FILE, EVENTS_FILE, event_links, json_ld, webcal
from service.publish.layout import category_prefix
from service.publish.search import search_alternates
from service.settings import Settings
from service.templating import Templates, render_consent

__all__ = ["PAGE_TEMPLATES", "CalendarLink", "FeedLink", "Pages"]

PAGE_TEMPLATES = ["index.html.j2", "article.html.j2", "category.html.j2", "archive.html.j2"]


@dataclass(frozen=True, slots=True)
class FeedLink:
    """A feed that a page links to: its title, URL and media type."""

    title: str
    url: str
    type: str


@dataclass(frozen=True, slots=True)
class CalendarLink:
    """A calendar file a page offers: to download (``url``) or subscribe to (``webcal``)."""

    url: str
    webcal: str


class Pages:
    """Renders pages with the operators' templates; every link is absolute under base_url."""

    def __init__(
        self, templates: Templates, settings: Settings, sequence: SequenceOf = stateless_sequence
    ) -> None:
        self.templates = templates
        self.site = settings.site
        self.sequence = sequence  # the SEQUENCE of every event this build publishes
        self.subscribe = settings.subscribe
        self.offered: tuple[Category, ...] = ()

    def offer(self, categories: Sequence[Category]) -> None:
        """The categories the articles have now: the form offers them (or those the operators
        list in ``subscribe.categories``)."""
        now_offered = offered(self.subscribe.categories, categories)
        if now_offered != self.offered:  # the same objects while equal: pages keyed on them
            self.offered = now_offered

    def signup_form(self, category: str | None = None) -> SignupForm | None:
        """The subscription form as a page shows it (``category`` ticked), or None when the
        form is off; TemplateError if its consent text cannot be rendered."""
        if not self.subscribe.enabled:
            return None
        consent = render_consent(self.templates, site=self.site, hours=self.subscribe.confirm_hours)
        chosen = frozenset({category} & {c.slug for c in self.offered}) if category else frozenset()
        return SignupForm(self.offered, consent, consent_version(consent), chosen)

    def feed_links(self, prefix: str, title: str) -> list[FeedLink]:
        """The RSS, Atom and JSON Feed links of the feeds under ``prefix``, titled ``title``."""
        base = f"{self.site.base_url}/{prefix}"
        return [
            FeedLink(f"{title} (RSS)", f"{base}rss.xml", "application/rss+xml"),
            FeedLink(f"{title} (Atom)", f"{base}atom.xml", "application/atom+xml"),
            FeedLink(f"{title} (JSON Feed)", f"{base}feed.json", "application/feed+json"),
        ]

    def calendar_link(self, path: str) -> CalendarLink:
        """The links of the calendar file at ``path`` under the output directory."""
        url = f"{self.site.base_url}/{path}"
        return CalendarLink(url, webcal(url))

    def index(
        self,
        recent: Sequence[Article],
        categories: Sequence[Category],
        upcoming: Sequence[tuple[Article, Event]] = (),
        older: int | None = None,
    ) -> bytes:
        """The home page: recent articles, upcoming events, categories, and a link to archive
        page ``older`` (the newest); TemplateError if it cannot be rendered."""
        return self._render(
            "index.html.j2",
            articles=recent,
            categories=categories,
            signup=self.signup_form(),
            upcoming=upcoming,
            older=self._page_url("", older),
            calendar=self.calendar_link(CALENDAR_FILE),
            feeds=self.feed_links("", self.site.title),
        )

    def category(
        self, category: Category, recent: Sequence[Article], older: int | None = None
    ) -> bytes:
        """A category's page with its recent articles and a link to its newest archive page
        ``older``; TemplateError if it cannot be rendered."""
        prefix = category_prefix(category.slug)
        return self._render(
            "category.html.j2",
            category=category,
            articles=recent,
            signup=self.signup_form(category.slug),
            older=self._page_url(prefix, older),
            calendar=self.calendar_link(prefix + CALENDAR_FILE),
            feeds=self.feed_links(prefix, f"{self.site.title}: {category.name}"),
        )

    def article(self, article: Article) -> bytes:
        """An article's own page, with its events; TemplateError if it cannot be rendered."""
        prefix = category_prefix(article.category.slug)
        return self._render(
            "article.html.j2",
            article=article,
            events=event_links(article, self.site),
            events_file=self.calendar_link(article.page_path() + EVENTS_FILE),
            json_ld=json_ld(article, self.site),
            search_alternates=search_alternates(article.title, article.content_html),
            calendar=self.calendar_link(prefix + CALENDAR_FILE),
            feeds=self.feed_links(prefix, article.category.name),
        )

    def archive(
        self,
        title: str,
        prefix: str,
        number: int,
        articles: Sequence[Article],
        full: bool,
        heading: str = "Các tin đã đăng",
    ) -> bytes:
        """Archive page ``number`` (1 = oldest) of the section under ``prefix``, headed
        ``heading``; ``title`` names its feeds.

        Its links depend only on its number and fullness, never on how many pages there are:
        a full page links the next page up, which always exists (it may be empty), so it is
        never rewritten when newer articles arrive.
        """
        front = f"{self.site.base_url}/{prefix}"
        return self._render(
            "archive.html.j2",
            title=heading,
            number=number,
            articles=articles,
            front=front,
            newer=self._page_url(prefix, number + 1) if full else front,
            older=self._page_url(prefix, number - 1 if number > 1 else None),
            feeds=self.feed_links(prefix, title),
        )

    def _page_url(self, prefix: str, number: int | None) -> str | None:
        if number is None:
            return None
        return f"{self.site.base_url}/{archive_page_path(prefix, number)}"

    def _render(self, name: str, **context: object) -> bytes:
        return self.templates.render(
            name, site=self.site, base_url=self.site.base_url, **context
        ).encode()
