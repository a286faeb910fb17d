"""Articles to HTML pages: the index, one page per article, one page per category."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.model import Article, Category
from service.publish.layout import category_prefix, logo_path
from service.settings import Settings
from service.templating import Templates

__all__ = ["PAGE_CONTEXT", "PAGE_TEMPLATES", "FeedLink", "Pages"]

PAGE_TEMPLATES = [
    "index.html.j2",
    "article.html.j2",
    "category.html.j2",
    "categories.html.j2",
    "not_found.html.j2",
]
_EVERY_PAGE = ("site", "base_url", "feeds", "logo_url")
# the variables each page template is given: `bantin check` names any other one it uses
PAGE_CONTEXT = {
    "index.html.j2": (*_EVERY_PAGE, "articles", "categories"),
    "category.html.j2": (*_EVERY_PAGE, "category", "articles"),
    "article.html.j2": (*_EVERY_PAGE, "article"),
    "categories.html.j2": (*_EVERY_PAGE, "categories"),
    "not_found.html.j2": _EVERY_PAGE,
}


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
        media_type = settings.site.logo_type
        self.logo_url = f"{self.site.base_url}/{logo_path(media_type)}" if media_type else None

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
            feeds=self.feed_links("", self.site.title),
        )

    def categories(self, categories: Sequence[Category]) -> bytes:
        """/categories/: every category with its page and feeds; TemplateError if it fails."""
        return self._render(
            "categories.html.j2",
            categories=categories,
            feeds=self.feed_links("", self.site.title),
        )

    def not_found(self) -> bytes:
        """The page the server answers 404 with: the site's own, with its way home."""
        return self._render("not_found.html.j2", feeds=self.feed_links("", self.site.title))

    def category(self, category: Category, recent: Sequence[Article]) -> bytes:
        """A category's page with its recent articles; TemplateError if it cannot be rendered."""
        prefix = category_prefix(category.slug)
        return self._render(
            "category.html.j2",
            category=category,
            articles=recent,
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
            name, site=self.site, base_url=self.site.base_url, logo_url=self.logo_url, **context
        ).encode()
