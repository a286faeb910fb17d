"""The complete archive: pages and RFC 5005 archive feeds numbered from the oldest end (pure).

The front of a section (the site, or one category) is its newest ``per_page`` articles: the
feeds and the index page, as before. Everything older is cut into chunks counted from the
*oldest* article: chunk 1 holds the oldest ``per_page``, chunk 2 the next, and only the newest
chunk can be short. A new article therefore moves one article from the front into the newest
chunk and leaves every full chunk as it was: an archive page or archive feed, once full, never
changes again (unless one of its own articles is edited), so caches and feed archivists can keep
it, and a build rewrites only the chunk that grew.

The front and the chunks together hold every published article exactly once.

Files: ``page/<n>/index.html`` (pages) and ``archive/rss/<n>.xml``, ``archive/atom/<n>.xml``
(RFC 5005 archive documents, marked ``fh:archive``) under the section's directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.model import Article

__all__ = ["Chunk", "archive_feed_path", "archive_page_path", "chunks"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Archive chunk ``number`` (1 = oldest) of a section: its articles, newest first."""

    number: int
    articles: Sequence[Article]
    full: bool


def chunks(listed: Sequence[Article], per_page: int) -> list[Chunk]:
    """The archive chunks of a section whose published articles are ``listed`` (newest
    first): everything after the first ``per_page``, cut from the oldest end, oldest first."""
    total = len(listed)
    rest = total - per_page
    if rest <= 0:
        return []
    found = []
    for number in range(1, (rest + per_page - 1) // per_page + 1):
        oldest = (number - 1) * per_page  # positions counted from the oldest article
        newest = min(number * per_page, rest)
        found.append(
            Chunk(number, listed[total - newest : total - oldest], newest - oldest == per_page)
        )
    return found


def archive_page_path(prefix: str, number: int) -> str:
    """The directory of archive page ``number`` of the section under ``prefix``."""
    return f"{prefix}page/{number}/"


def archive_feed_path(prefix: str, kind: str, number: int) -> str:
    """Archive document ``number`` of the section's ``kind`` ("rss" or "atom") feed."""
    return f"{prefix}archive/{kind}/{number}.xml"
