"""A build's lists: each section's feeds, first page, archive and calendar, and the sitemap.

A section is the site or one category. Every group of files is keyed by the very objects it
was made from; when a build finds the same objects (the source hands back the same Article for
an unchanged file) the group is neither rendered nor written. That is what keeps a one-file
rebuild of 100,000 articles cheap: of 2,000 archive pages, only the one holding the edited
article is rendered again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from service.model import Article, Category, Event
from service.publish.archive import Chunk, archive_feed_path, archive_page_path, chunks
from service.publish.calendars import CALENDAR_FILE, calendar_window, section_calendar
from service.publish.feeds import FeedSpec, feed_files
from service.publish.layout import FEED_FILES
from service.publish.output import Output
from service.publish.pages import Pages
from service.publish.sitemap import (
    MAX_URLS,
    ROBOTS,
    ROBOTS_MARK,
    SITEMAP,
    article_chunks,
    robots,
    sitemap_index,
    urlset,
)
from service.settings import Settings

__all__ = ["Section", "SectionWriter", "Writes"]

Key = tuple[object, ...]


@dataclass
class Writes:
    """One build's files: those produced (kept), those written (changed), and the objects each
    group of files was made from, compared with the last build's."""

    output: Output
    last: dict[str, Key]
    produced: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)
    keys: dict[str, Key] = field(default_factory=dict)

    def emit(self, path: str, data: bytes) -> None:
        """Produce ``path`` with ``data``; written only if its bytes changed."""
        self.produced.add(path)
        if self.output.write(path, data):
            self.written.append(path)

    def unchanged(self, name: str, key: Key, files: Iterable[str]) -> bool:
        """True if group ``name`` was made from these very objects last time: then ``files``
        count as produced, and nothing is rendered."""
        self.keys[name] = key
        last = self.last.get(name)
        if (
            last is None
            or len(last) != len(key)
            or any(a is not b and a != b for a, b in zip(last, key, strict=True))
        ):
            return False
        self.produced.update(files)
        return True


@dataclass(frozen=True, slots=True)
class Section:
    """The site (prefix "") or a category: its title and its published articles, newest first."""

    prefix: str
    title: str
    listed: Sequence[Article]
    category: Category | None = None


def flat(pairs: Iterable[tuple[Article, Event]]) -> Iterable[object]:
    """(article, event) pairs as one sequence of objects, for keys."""
    for article, event in pairs:
        yield article
        yield event


class SectionWriter:
    """Writes sections through one build's ``Writes``."""

    def __init__(self, settings: Settings, pages: Pages, writes: Writes) -> None:
        self.settings = settings
        self.pages = pages
        self.writes = writes

    def front(
        self, section: Section, render: Callable[[Sequence[Article], int | None], bytes], extra: Key
    ) -> None:
        """The section's feeds and first page (``render(recent, older)``), its archive pages
        and archive feeds. ``extra`` are other objects the first page shows."""
        limit = self.settings.feeds.max_items
        found = chunks(section.listed, limit)
        top = found[-1].number if found else None
        recent = section.listed[:limit]
        names = [section.prefix + name for name in (*FEED_FILES, "index.html")]
        if not self.writes.unchanged(section.prefix, (*recent, *extra, top), names):
            site = self.settings.site
            spec = FeedSpec(section.title, section.prefix, recent, prev_archive=top)
            for path, data in feed_files(spec, site, self.settings.feeds.websub_hub).items():
                self.writes.emit(path, data)
            self.writes.emit(section.prefix + "index.html", render(recent, top))
        for chunk in found:
            self._chunk(section, chunk)
        if found and found[-1].full:  # the page a full page's "newer" link leads to
            self._chunk(section, Chunk(found[-1].number + 1, (), False), feeds=False)

    def _chunk(self, section: Section, chunk: Chunk, feeds: bool = True) -> None:
        prefix, number = section.prefix, chunk.number
        page = archive_page_path(prefix, number) + "index.html"
        files = [page]
        if feeds:
            files += [archive_feed_path(prefix, kind, number) for kind in ("rss", "atom")]
        name = f"{prefix}page/{number}"
        if self.writes.unchanged(name, (*chunk.articles, chunk.full), files):
            return
        articles = chunk.articles
        heading = section.category.name if section.category else "Các tin đã đăng"
        self.writes.emit(
            page,
            self.pages.archive(section.title, prefix, number, articles, chunk.full, heading),
        )
        if feeds:
            spec = FeedSpec(section.title, prefix, articles, archive=number)
            for path, data in feed_files(spec, self.settings.site).items():
                self.writes.emit(path, data)

    def calendar(self, section: Section, with_events: Sequence[Article], now: datetime) -> None:
        """The section's ``calendar.ics``: the events of ``with_events`` in the window."""
        window = calendar_window(with_events, now)
        path = section.prefix + CALENDAR_FILE
        if not self.writes.unchanged(path, (section.title, *flat(window)), [path]):
            site = self.settings.site
            self.writes.emit(path, section_calendar(section.title, section.prefix, window, site))

    def sitemap(self, listed: Sequence[Article], categories: Sequence[Category]) -> None:
        """``sitemap.xml`` (an index of several beyond ``MAX_URLS``), and ``robots.txt`` unless
        the operator put their own there."""
        base = self.settings.site.base_url
        oldest_first = listed[::-1]
        if len(oldest_first) + len(categories) + 1 <= MAX_URLS:
            if not self.writes.unchanged(SITEMAP, (*oldest_first, *categories), [SITEMAP]):
                self.writes.emit(SITEMAP, urlset(base, oldest_first, categories, home=True))
        else:
            files: list[tuple[str, datetime | None]] = [("sitemaps/pages.xml", None)]
            if not self.writes.unchanged(files[0][0], tuple(categories), [files[0][0]]):
                self.writes.emit(files[0][0], urlset(base, (), categories, home=True))
            for number, chunk in enumerate(article_chunks(oldest_first, MAX_URLS), start=1):
                path = f"sitemaps/articles-{number}.xml"
                files.append((path, max(a.modified for a in chunk)))
                if not self.writes.unchanged(path, tuple(chunk), [path]):
                    self.writes.emit(path, urlset(base, chunk))
            self.writes.emit(SITEMAP, sitemap_index(base, files))
        current = self.writes.output.read(ROBOTS)
        if current is None or current.startswith(ROBOTS_MARK):
            self.writes.emit(ROBOTS, robots(base))
        else:
            self.writes.output.disown(ROBOTS)
