"""``sitemap.xml`` and ``robots.txt``: how search engines find every published page (pure).

Up to 50,000 URLs (the sitemaps.org limit) ``sitemap.xml`` lists them all. Beyond that it is a
sitemap index: ``sitemaps/pages.xml`` holds the home and category pages, and
``sitemaps/articles-<n>.xml`` hold the article pages 10,000 at a time counted from the oldest,
so that a new article rewrites the newest of them and the index, and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from xml.sax.saxutils import escape

from service.model import Article, Category
from service.publish.layout import category_prefix

__all__ = [
    "ARTICLES_PER_FILE",
    "MAX_URLS",
    "ROBOTS",
    "ROBOTS_MARK",
    "SITEMAP",
    "article_chunks",
    "article_url",
    "robots",
    "sitemap_index",
    "urlset",
]

MAX_URLS = 50_000  # in one sitemap file, as sitemaps.org allows
# Past MAX_URLS the articles go into files of this many: a one-file edit then rewrites a
# file of 10,000 lines, not 50,000
ARTICLES_PER_FILE = 10_000
SITEMAP = "sitemap.xml"
ROBOTS = "robots.txt"
# The first line of the robots.txt bantin writes: a robots.txt without it is the operator's own
ROBOTS_MARK = b"# Written by bantin."
_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
_NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def _url(location: str, modified: datetime | None) -> str:
    lastmod = f"<lastmod>{modified.isoformat()}</lastmod>" if modified else ""
    return f"<url><loc>{escape(location)}</loc>{lastmod}</url>\n"


def article_url(base_url: str, article: Article) -> str:
    """The ``<url>`` line of an article's page, with its ``lastmod`` (builds cache these)."""
    return _url(f"{base_url}/{article.page_path()}", article.modified)


def urlset(
    base_url: str,
    articles: Sequence[Article],
    categories: Sequence[Category] = (),
    home: bool = False,
    lines: Callable[[Article], str] | None = None,
) -> bytes:
    """A ``<urlset>`` of the home page (if ``home``), the categories' pages and the articles'
    own pages, each article with its ``lastmod``; ``lines`` gives an article's line (cached)."""
    line = lines or (lambda article: article_url(base_url, article))
    parts = [_HEAD, f"<urlset {_NS}>\n"]
    if home:
        parts.append(_url(f"{base_url}/", None))
    parts += [_url(f"{base_url}/{category_prefix(c.slug)}", None) for c in categories]
    parts += [line(a) for a in articles]
    parts.append("</urlset>\n")
    return "".join(parts).encode("utf-8")


def article_chunks(
    oldest_first: Sequence[Article], size: int = MAX_URLS
) -> list[Sequence[Article]]:
    """The articles, oldest first, in sitemaps of at most ``size`` URLs."""
    return [oldest_first[i : i + size] for i in range(0, len(oldest_first), size)]


def sitemap_index(base_url: str, files: Sequence[tuple[str, datetime | None]]) -> bytes:
    """A ``<sitemapindex>`` of ``files`` (path under the output directory, newest lastmod)."""
    parts = [_HEAD, f"<sitemapindex {_NS}>\n"]
    for path, modified in files:
        lastmod = f"<lastmod>{modified.isoformat()}</lastmod>" if modified else ""
        parts.append(f"<sitemap><loc>{escape(f'{base_url}/{path}')}</loc>{lastmod}</sitemap>\n")
    parts.append("</sitemapindex>\n")
    return "".join(parts).encode("utf-8")


def robots(base_url: str) -> bytes:
    """A ``robots.txt`` that allows everything and names the sitemap."""
    return (
        ROBOTS_MARK
        + (
            " Put your own robots.txt here instead and bantin leaves it alone.\n"
            f"User-agent: *\nAllow: /\n\nSitemap: {base_url}/{SITEMAP}\n"
        ).encode()
    )
