"""Where things live under the output directory: the feed files and their media types (pure).

The HTTP server needs these names too; keeping them here spares it importing feedgen.
"""

from __future__ import annotations

from service.model import Category

__all__ = ["FEED_FILES", "category_prefix"]

FEED_FILES = {
    "rss.xml": "application/rss+xml",
    "atom.xml": "application/atom+xml",
    "feed.json": "application/feed+json",
}


def category_prefix(slug: str) -> str:
    """The directory of a category's feeds and page, under the output directory."""
    return Category("", slug).page_path()
