"""Articles to HTML pages: the index, one page per article, one page per category; the index and
category pages carry the subscription form when it is on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.content.slug import offered
from service.model import Article, Category, SignupForm, consent_version
from service.publish.layout import category_prefix
from service.settings import Settings
from service.templating import Templates, render_consent

__all__ = ["PAGE_TEMPLATES", "FeedLink", "Pages"]

PAGE_TEMPLATES = ["index.html.j2", "article.html.j2", "category.html.j2"]


@dataclass(frozen=True, slots=True)
class FeedLink:
    """A feed that a page links to: its title, URL and media type."""

    title: str
    url: str
    type: str


class Pages:
    """Renders pages with the operators' templates; every link is absolute under base_url."""

    def __init__(self, templates: Templates, settings: Settings) -> None:
        self.templates = templates
        self.site = settings.site
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

    def index(self, recent: Sequence[Article], categories: Sequence[Category]) -> bytes:
        """The home page: recent articles and categories; TemplateError if it cannot be rendered."""
        return self._render(
            "index.html.j2",
            articles=recent,
            categories=categories,
            signup=self.signup_form(),
            feeds=self.feed_links("", self.site.title),
        )

    def category(self, category: Category, recent: Sequence[Article]) -> bytes:
        """A category's page with its recent articles; TemplateError if it cannot be rendered."""
        prefix = category_prefix(category.slug)
        return self._render(
            "category.html.j2",
            category=category,
            articles=recent,
            signup=self.signup_form(category.slug),
            feeds=self.feed_links(prefix, f"{self.site.title}: {category.name}"),
        )

    def article(self, article: Article) -> bytes:
        """An article's own page; TemplateError if it cannot be rendered."""
        return self._render(
            "article.html.j2",
            article=article,
            feeds=self.feed_links(category_prefix(article.category.slug), article.category.name),
        )

    def _render(self, name: str, **context: object) -> bytes:
        return self.templates.render(
            name, site=self.site, base_url=self.site.base_url, **context
        ).encode()
