"""A build's lists: each section's feeds, first page, archive and calendar, and the sitemap.

A section is the site or one category. Every group of files is keyed by the very objects it
was made from; when a build finds the same objects (the source hands back the same Article for
an unchanged file) the group is neither rendered nor written. That is what keeps a one-file
rebuild of 100,000 articles cheap: of 2,000 archive pages, only the one holding the edited
article is rendered again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from service.model import Article, Category, Event
from service.publish.archive import Chunk, archive_feed_path, archive_page_path, chunks
from service.publish.calendars import CALENDAR_FILE, calendar_window, section_calendar
from service.publish.feeds import FeedSpec, feed_files
from service.publish.layout import FEED_FILES
from service.publish.output import Output, precompressed
from service.publish.pages import Pages
from service.publish.sitemap import (
    ARTICLES_PER_FILE,
    MAX_URLS,
    ROBOTS,
    ROBOTS_MARK,
    SITEMAP,
    article_chunks,
    article_url,
    robots,
    sitemap_index,
    urlset,
)
from service.settings import Settings

__all__ = [
    "Archive",
    "ArchiveBatches",
    "Section",
    "SectionWriter",
    "SitemapMemory",
    "Writes",
    "archive_bytes",
    "article_digest",
    "stable",
]

Key = tuple[object, ...]


Stamp = tuple[int, int]  # a file's (mtime_ns, size)
# a group of files as the build index keeps it across restarts: the digest of what it was made
# from (``stable``), and each of its files with its stamp when written
Saved = tuple[str, tuple[tuple[str, Stamp | None], ...]]


@dataclass
class Writes:
    """One build's files: those produced (kept), those written (changed), and the objects each
    group of files was made from, compared with the last build's.

    After a restart there is no last build in memory: ``saved`` (from the build index) stands in
    for it, by digest of the key (``stable``) and only if every file of the group is as that
    build left it."""

    output: Output
    last: dict[str, Key]
    produced: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)
    keys: dict[str, Key] = field(default_factory=dict)
    saved: dict[str, Saved] = field(default_factory=dict)
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # group -> its files
    made: list[str] = field(default_factory=list)  # the groups made again (tests, benchmarks)

    def emit(self, path: str, data: bytes) -> None:
        """Produce ``path`` with ``data``; written only if its bytes changed."""
        self.produced.add(path)
        if self.output.write(path, data):
            self.written.append(path)

    def unchanged(self, name: str, key: Key, files: Iterable[str]) -> bool:
        """True if group ``name`` was made from these very objects last time: then ``files``
        count as produced, and nothing is rendered."""
        self.keys[name] = key
        self.files[name] = names = tuple(files)
        last = self.last.get(name)
        # tuple equality runs in C and takes the same object as equal without asking it: for
        # 100,000 unchanged articles this is a pointer comparison each
        same = self._as_saved(name, key, names) if last is None else last == key
        if not same:
            self.made.append(name)
            return False
        self.produced.update(names)
        return True

    def _as_saved(self, name: str, key: Key, files: tuple[str, ...]) -> bool:
        saved = self.saved.pop(name, None)
        if saved is None or saved[0] != stable(key):
            return False
        if saved[1] != tuple((f, self.stamp(f)) for f in files):
            return False
        # each file's .gz of that version beside it, or the group is made again and the
        # writes put a missing or stale one right (the file itself is not rewritten)
        return all(
            self.output.gzip_current(f, stamp[0])
            for f, stamp in saved[1]
            if stamp is not None and precompressed(f)
        )

    def stamp(self, path: str) -> Stamp | None:
        """``path``'s (mtime_ns, size) in the output, or None if it is not there."""
        try:
            st = os.stat(os.path.join(self.output.root, path))
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def to_save(self) -> dict[str, Saved]:
        """Every group of this build as the build index keeps it."""
        return {
            name: (stable(key), tuple((f, self.stamp(f)) for f in self.files[name]))
            for name, key in self.keys.items()
        }


def stable(key: Key) -> str:
    """A digest of ``key`` that is the same in another process for the same content: articles
    by what names them (``article_digest``), anything else by its repr (categories, events,
    numbers and strings are dataclasses and plain values)."""
    digest = hashlib.blake2b(digest_size=16)
    for item in key:
        text = article_digest(item) if isinstance(item, Article) else repr(item)
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def article_digest(article: Article) -> str:
    """The article a file was made from, as the build index keeps it.

    An article is its file's bytes (``fingerprint``) parsed from its path in the site's zone by
    this bantin (those two are in the index key), under the id it holds (a moved file may hold
    an earlier one): those name it, at a fraction of the cost of a digest of every field
    (0.8 s of a 1.7 s warm build at 10,000 articles). Without a fingerprint, every field."""
    if not article.fingerprint:
        return hashlib.blake2b(repr(article).encode(), digest_size=16).hexdigest()
    return f"{article.fingerprint} {article.id} {article.slug} {article.source}"


@dataclass
class SitemapMemory:
    """What the builder keeps of the sitemap between builds, so that a one-file edit makes one
    line and not 100,000: each article's line, and each sitemap file's newest lastmod."""

    lines: dict[int, tuple[Article, str]] = field(default_factory=dict)
    lastmods: dict[str, datetime | None] = field(default_factory=dict)


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


@dataclass(frozen=True, slots=True)
class Archive:
    """One archive page to make, with its RSS and Atom archive documents unless not ``feeds``
    (the empty page a full page's "newer" link leads to)."""

    title: str  # names the feeds
    prefix: str
    number: int
    articles: tuple[Article, ...]
    full: bool
    heading: str
    feeds: bool = True


# renders and writes archives elsewhere (worker processes): the paths written, per batch
ArchiveBatches = Callable[[list[Archive]], Iterable[list[str]]]


def archive_files(prefix: str, number: int, feeds: bool = True) -> list[str]:
    """The files of archive page ``number`` under ``prefix``."""
    files = [archive_page_path(prefix, number) + "index.html"]
    if feeds:
        files += [archive_feed_path(prefix, kind, number) for kind in ("rss", "atom")]
    return files


def archive_bytes(archive: Archive, pages: Pages) -> dict[str, bytes]:
    """The files of ``archive`` by path; TemplateError if its page cannot be rendered."""
    prefix, number = archive.prefix, archive.number
    files = {
        archive_page_path(prefix, number) + "index.html": pages.archive(
            archive.title, prefix, number, archive.articles, archive.full, archive.heading
        )
    }
    if archive.feeds:
        spec = FeedSpec(archive.title, prefix, archive.articles, archive=number)
        files.update(feed_files(spec, pages.site))
    return files


class SectionWriter:
    """Writes sections through one build's ``Writes``; archive pages wait in ``archives``
    until ``write_archives``."""

    def __init__(
        self,
        settings: Settings,
        pages: Pages,
        writes: Writes,
        memory: SitemapMemory | None = None,
    ) -> None:
        self.settings = settings
        self.pages = pages
        self.writes = writes
        self.memory = memory or SitemapMemory()
        self.archives: list[Archive] = []

    def _sitemap_line(self, article: Article) -> str:
        lines = self.memory.lines
        known = lines.get(id(article))
        if known is None or known[0] is not article:
            known = lines[id(article)] = (
                article,
                article_url(self.settings.site.base_url, article),
            )
        return known[1]

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
            spec = FeedSpec(
                section.title,
                section.prefix,
                recent,
                prev_archive=top,
                sequence=self.pages.sequence,
            )
            for path, data in feed_files(spec, site, self.settings.feeds.websub_hub).items():
                self.writes.emit(path, data)
            self.writes.emit(section.prefix + "index.html", render(recent, top))
        for chunk in found:
            self._chunk(section, chunk)
        if found and found[-1].full:  # the page a full page's "newer" link leads to
            self._chunk(section, Chunk(found[-1].number + 1, (), False), feeds=False)

    def _chunk(self, section: Section, chunk: Chunk, feeds: bool = True) -> None:
        """Archive page ``chunk`` and its feeds: kept if made from the same objects, else left
        in ``archives`` to render (``write_archives``)."""
        prefix, number = section.prefix, chunk.number
        files = archive_files(prefix, number, feeds)
        name = f"{prefix}page/{number}"
        if self.writes.unchanged(name, (*chunk.articles, chunk.full), files):
            return
        heading = section.category.name if section.category else "Các tin đã đăng"
        self.writes.produced.update(files)
        self.archives.append(
            Archive(
                section.title, prefix, number, tuple(chunk.articles), chunk.full, heading, feeds
            )
        )

    def write_archives(self, batches: ArchiveBatches | None = None) -> None:
        """Render and write the archive pages and feeds left to make, here or, given
        ``batches``, in worker processes (a cold build has one per 50 articles per section:
        a third of its work, most of what is not spread over the cores otherwise)."""
        archives, self.archives = self.archives, []
        if batches is None:
            for archive in archives:
                for path, data in archive_bytes(archive, self.pages).items():
                    self.writes.emit(path, data)
            return
        for written in batches(archives):
            self.writes.written += written

    def calendar(self, section: Section, with_events: Sequence[Article], now: datetime) -> None:
        """The section's ``calendar.ics``: the events of ``with_events`` in the window."""
        window = calendar_window(with_events, now)
        path = section.prefix + CALENDAR_FILE
        if not self.writes.unchanged(path, (section.title, *flat(window)), [path]):
            site = self.settings.site
            data = section_calendar(
                section.title, section.prefix, window, site, self.pages.sequence
            )
            self.writes.emit(path, data)

    def sitemap(self, listed: Sequence[Article], categories: Sequence[Category]) -> None:
        """``sitemap.xml`` (an index of several beyond ``MAX_URLS``), and ``robots.txt`` unless
        the operator put their own there."""
        base = self.settings.site.base_url
        oldest_first = listed[::-1]
        if len(oldest_first) + len(categories) + 1 <= MAX_URLS:
            if not self.writes.unchanged(SITEMAP, (*oldest_first, *categories), [SITEMAP]):
                data = urlset(base, oldest_first, categories, True, self._sitemap_line)
                self.writes.emit(SITEMAP, data)
        else:
            files: list[tuple[str, datetime | None]] = [("sitemaps/pages.xml", None)]
            if not self.writes.unchanged(files[0][0], tuple(categories), [files[0][0]]):
                self.writes.emit(files[0][0], urlset(base, (), categories, home=True))
            lastmods = self.memory.lastmods
            per_file = min(ARTICLES_PER_FILE, MAX_URLS)
            for number, chunk in enumerate(article_chunks(oldest_first, per_file), start=1):
                path = f"sitemaps/articles-{number}.xml"
                unchanged = self.writes.unchanged(path, tuple(chunk), [path])
                if not unchanged or path not in lastmods:
                    lastmods[path] = max(a.modified for a in chunk)
                # after a restart the build index vouches for the file and only the lastmod
                # is to learn again: 50,000 lines are not rendered to find it
                if not unchanged:
                    self.writes.emit(path, urlset(base, chunk, lines=self._sitemap_line))
                files.append((path, lastmods[path]))
            self.writes.emit(SITEMAP, sitemap_index(base, files))
        lines = self.memory.lines
        if len(lines) > 2 * len(listed) + 1000:  # forget the lines of articles gone
            live = {id(a) for a in listed}
            for key in [k for k in lines if k not in live]:
                del lines[key]
        current = self.writes.output.read(ROBOTS)
        if current is None or current.startswith(ROBOTS_MARK):
            self.writes.emit(ROBOTS, robots(base))
        else:
            self.writes.output.disown(ROBOTS)
