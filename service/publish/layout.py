"""Where things live under the output directory: the feed files and their media types (pure).

The HTTP server needs these names too; keeping them here spares it importing feedgen.
"""

from __future__ import annotations

from service.model import Category

__all__ = [
    "CATEGORIES_PAGE",
    "FEED_FILES",
    "NOT_FOUND_PAGE",
    "STYLESHEET",
    "category_prefix",
    "logo_path",
]

NOT_FOUND_PAGE = "404.html"  # what the server answers for a path that is not there
CATEGORIES_PAGE = "categories/index.html"  # every category, with its feeds
# the pages' stylesheet, in the templates directory; published as assets/style.css (one file
# the browser keeps, rather than 5 KB of CSS inside each of 10,000 pages)
STYLESHEET = "style.css"

FEED_FILES = {
    "rss.xml": "application/rss+xml",
    "atom.xml": "application/atom+xml",
    "feed.json": "application/feed+json",
}


def category_prefix(slug: str) -> str:
    """The directory of a category's feeds and page, under the output directory."""
    return Category("", slug).page_path()


def logo_path(media_type: str) -> str:
    """Where the site's logo is published, by its media type (image/png -> logo.png)."""
    return "logo." + {"image/jpeg": "jpg"}.get(media_type, media_type.rsplit("/", 1)[-1])
