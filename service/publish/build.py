"""A build: published articles to every output file, rendering only what changed.

The builder remembers which article each page was rendered from; since the source returns the
same Article object for an unchanged file, a rebuild after one edit renders that one page, the
index, and the small feeds, and nothing else.

Across restarts the same holds through the build index (``index``, content/index.py): for each
page written it keeps a digest of the article it was rendered from and the page file's
(mtime, size), and the same for every group of section files (feeds, lists, archive pages,
calendars) by a digest of what it was made from. The first build after a restart renders only
the pages and groups whose articles differ or whose files are not as they were left; a changed
template, site setting or bantin release makes the index another key's, and every page is
rendered again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from service import workers
from service.content import index as saved_index
from service.content.scan import Scan
from service.errors import ArticleError, ConfigError, TemplateError
from service.ical import SequenceOf, stateless_sequence
from service.model import Article
from service.publish.calendars import EVENTS_FILE, article_calendar, upcoming
from service.publish.layout import (
    CATEGORIES_PAGE,
    NOT_FOUND_PAGE,
    STYLESHEET,
    category_prefix,
    logo_path,
)
from service.publish.output import Output
from service.publish.pages import Pages
from service.publish.search import SEARCH_SCRIPT
from service.publish.sections import (
    Archive,
    ArchiveBatches,
    Saved,
    Section,
    SectionWriter,
    SitemapMemory,
    Writes,
    archive_bytes,
    article_digest,
    flat,
)
from service.settings import Settings, read_logo
from service.templating import Templates


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What a build did: articles published, files written and removed, pages that failed."""

    published: int
    written: tuple[str, ...]
    removed: tuple[str, ...]
    files: int
    problems: tuple[ArticleError, ...] = ()  # articles left out: their page cannot be rendered

    @property
    def feeds_written(self) -> tuple[str, ...]:
        """The feed files written (RSS, Atom, JSON Feed): what the WebSub hub is told about."""
        return tuple(p for p in self.written if p.endswith(("rss.xml", "atom.xml", "feed.json")))


class Builder:
    """Writes the output directory from scans, rendering only what changed since its last build."""

    def __init__(
        self,
        settings: Settings,
        templates_dir: Path,
        sequence: SequenceOf = stateless_sequence,
        index: Path | None = None,
    ) -> None:
        """``sequence`` gives each event's SEQUENCE (default: from the article's ``updated:``);
        a ledger-backed one must be picklable (pages are rendered in worker processes) and
        never below ``stateless_sequence``, which calendars may already hold. ``index``: the
        build index file (see the module)."""
        self.settings = settings
        self.index = index
        self._seeded = index is None  # the build index is read by the first build only
        self._throttle = saved_index.Throttle()
        # page path -> (digest of the article it was rendered from, the file's mtime and size)
        self._stamps: dict[str, tuple[str, tuple[int, int]]] = {}
        # section groups (feeds, lists, archive pages, calendars) as the build index left them
        self._groups: dict[str, Saved] = {}
        self.rendered = 0  # article pages rendered by the last build (tests and benchmarks)
        self.groups_made: list[str] = []  # and its groups of section files made again
        self.templates_dir = templates_dir
        self.output = Output(settings.feeds.output_dir)
        logo = read_logo(settings.site)  # ConfigError: a bad logo stops start-up or a reload
        media_type = settings.site.logo_type
        self.logo = (logo_path(media_type), logo) if logo and media_type else None
        self.pages = Pages(
            Templates(templates_dir, zone=settings.site.zone, language=settings.site.language),
            settings,
            sequence,
        )
        # id -> article of every page written (the objects are held, so ids are not reused)
        self._pages: dict[int, Article] = {}
        self._page_paths: set[str] = set()
        # feed directory -> the objects its feeds and index page were rendered from
        self._slices: dict[str, tuple[object, ...]] = {}
        self._templates_stamp: tuple[tuple[str, int], ...] = ()
        # id -> why the page of that article object could not be rendered (tried again when
        # the article or a template changes)
        self._failed: dict[int, ArticleError] = {}
        self._sitemap = SitemapMemory()

    def build(self, scan: Scan, now: datetime) -> BuildReport:
        """Write every file for the articles of ``scan`` published at ``now``.

        ConfigError when the output directory cannot be written, TemplateError for a template.
        """
        # one pool of workers for the pages and then the archives, started only if needed
        start = (self.settings, self.templates_dir, self.pages.sequence)
        try:
            with workers.Batches(_start_page_worker, start) as pool:
                return self._build(scan, now, pool)
        except OSError as exc:
            where = exc.filename or self.settings.feeds.output_dir
            raise ConfigError(
                self.settings.feeds.output_dir,
                f"cannot write {where} ({exc.strerror or exc}); "
                "check [feeds] output_dir and its permissions",
            ) from exc

    def _build(self, scan: Scan, now: datetime, pool: workers.Batches) -> BuildReport:
        self._forget_pages_if_templates_changed()
        settings = self.settings
        published = scan.published(now)
        written: list[str] = []
        produced: set[str] = set()
        if not self._seeded:
            self._seeded = True
            self._seed(published)

        # Article pages first, by object identity: the source hands back the same object for
        # an unchanged file, so set arithmetic on ids finds the few pages to render. An article
        # whose page cannot be rendered is left out of every feed and list, so nothing links
        # to a page that was not written.
        current = {id(a): a for a in published}
        self._failed = {key: error for key, error in self._failed.items() if key in current}
        stale = [
            a for key, a in current.items() if key not in self._pages and key not in self._failed
        ]
        pages_written, failures, fault = self._write_pages(stale, pool)
        self.rendered = len(stale)
        if fault is not None and len(failures) == len(stale):
            # every page fails alike, and not on a limit its content hits: the template's fault
            raise fault
        self._failed.update(failures)
        for key in self._failed:
            current.pop(key, None)
        last = self._pages
        for key in last.keys() - current.keys():
            self._page_paths.difference_update(_article_files(last[key]))
        for a in stale:
            if id(a) in current:
                self._page_paths.update(_article_files(a))
        produced |= self._page_paths
        written += pages_written
        self._pages = current
        pages_changed = bool(stale or last.keys() - current.keys())

        failed = self._failed
        listed = [a for a in published if id(a) not in failed] if failed else published
        skip = (lambda a: id(a) in failed) if failed else None
        sections = scan.recent_by_category(now, len(listed), skip=skip)  # whole lists
        ordered = [category for category, _ in sections]
        writes = Writes(self.output, self._slices, produced, written, saved=self._groups)
        self._groups = {}  # what the build index said is needed by the first build only
        writer = SectionWriter(settings, self.pages, writes, self._sitemap)
        title = settings.site.title
        with_events = [a for a in listed if a.events]
        soon = upcoming(with_events, now)
        self.pages.offer(ordered)  # the subscription form's categories
        # a category page's form lists the categories offered: a new one renders them again
        form = self.pages.offered if settings.subscribe.enabled else ()
        site = Section("", title, listed)
        writer.front(
            site,
            lambda recent, older: self.pages.index(recent, ordered, soon, older),
            (*ordered, *flat(soon)),
        )
        writer.calendar(site, with_events, now)
        for category, items in sections:
            section = Section(
                category_prefix(category.slug), f"{title}: {category.name}", items, category
            )
            writer.front(
                section, functools.partial(self.pages.category, category), (category, *form)
            )
            own = [a for a in with_events if a.category.slug == category.slug]
            writer.calendar(section, own, now)
        many = sum(len(a.articles) for a in writer.archives) >= workers.PARALLEL_MIN
        writer.write_archives(self._archive_batches(pool) if many and workers.cores() > 1 else None)
        writer.sitemap(listed, ordered)
        # /categories/ and the 404 page: made from the categories alone
        if not writes.unchanged("categories", tuple(ordered), (CATEGORIES_PAGE, NOT_FOUND_PAGE)):
            writes.emit(CATEGORIES_PAGE, self.pages.categories(ordered))
            writes.emit(NOT_FOUND_PAGE, self.pages.not_found())
        if self.logo is not None:
            writes.emit(*self.logo)
        for asset in (SEARCH_SCRIPT, STYLESHEET):  # as the operator's templates have them
            source = self.templates_dir / asset
            if source.is_file():
                writes.emit("assets/" + asset, source.read_bytes())
        self._slices = writes.keys
        self.groups_made = writes.made
        removed = self.output.finish(produced)
        if self.index is not None:
            self._note_pages([a for a in stale if id(a) in current])
            if self._throttle.due(pages_changed or bool(written)):
                self._save_index(writes.to_save())
        problems = tuple(sorted(failed.values(), key=lambda e: e.path))
        return BuildReport(len(listed), tuple(written), tuple(removed), len(produced), problems)

    def _write_pages(
        self, articles: list[Article], pool: workers.Batches
    ) -> tuple[list[str], dict[int, ArticleError], TemplateError | None]:
        """Render and write article pages; thousands of them (a cold build) on every core.

        Returns the paths written; by article identity, the pages that could not be rendered;
        and, when every failure was the same error and not a resource limit, that error.
        """
        if len(articles) < workers.PARALLEL_MIN or workers.cores() < 2:
            results = [_write_page(self.pages, self.output, a) for a in articles]
        else:
            results = []
            for batch in pool.map(_write_page_batch, articles):
                results += batch
        written: list[str] = []
        failures: dict[int, ArticleError] = {}
        errors: list[TemplateError] = []
        for article, outcome in zip(articles, results, strict=True):
            if isinstance(outcome, TemplateError):
                failures[id(article)] = _unrenderable(article, outcome)
                errors.append(outcome)
            else:
                written += outcome
        alike = {(e.template, e.reason) for e in errors}
        fault = errors[0] if len(alike) == 1 and not errors[0].limit else None
        return written, failures, fault

    def _archive_batches(self, pool: workers.Batches) -> ArchiveBatches:
        """Archives rendered and written by ``pool``'s workers: the paths each batch wrote;
        TemplateError if a page cannot be rendered, as when rendered here."""
        per_batch = max(1, workers.BATCH // max(self.settings.feeds.max_items, 1))

        def run(archives: list[Archive]) -> Iterator[list[str]]:
            for batch in pool.map(_write_archive_batch, archives, batch=per_batch):
                for outcome in batch:
                    if isinstance(outcome, TemplateError):
                        raise outcome
                    yield outcome

        return run

    def _index_key(self) -> tuple[object, ...]:
        """What every page depends on besides its article: bantin's code, the settings that
        shape pages (site, feeds, the subscription form), the templates' bytes and where the
        pages are."""
        templates = hashlib.blake2b(digest_size=16)
        for path in sorted(self.templates_dir.rglob("*")):
            if path.is_file():
                templates.update(str(path.relative_to(self.templates_dir)).encode() + b"\0")
                templates.update(path.read_bytes())
        return (
            saved_index.code_version(),
            os.path.realpath(self.settings.feeds.output_dir),
            repr(self.settings.site),
            repr(self.settings.feeds),
            repr(self.settings.subscribe),
            templates.hexdigest(),
        )

    def _page_stamp(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(os.path.join(self.settings.feeds.output_dir, path))
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _seed(self, published: list[Article]) -> None:
        """Take the pages the build index vouches for as written: each one's article must be
        the same (by digest) and its files as they were left (mtime and size, and the .gz of
        that version beside it). An article with sessions is always rendered again: its
        calendar's SEQUENCE may come from the ledger."""
        assert self.index is not None
        try:
            key = self._index_key()
        except OSError:
            return
        loaded = saved_index.load(self.index, key)
        if not (isinstance(loaded, tuple) and len(loaded) == 2):
            return
        saved, self._groups = loaded
        for article in published:
            if article.events:
                continue
            path = article.page_path() + "index.html"
            entry = saved.get(path)
            if entry is None or entry[0] != article_digest(article):
                continue
            if self._page_stamp(path) != entry[1]:
                continue  # edited, removed or replaced since: rendered again
            if not self.output.gzip_current(path, entry[1][0]):
                continue  # its .gz is missing or stale: the write puts it right
            self._pages[id(article)] = article
            self._page_paths.add(path)
            self._stamps[path] = entry

    def _note_pages(self, rendered: list[Article]) -> None:
        """Keep what the build index says of the pages just rendered (saved when due)."""
        for article in rendered:
            if article.events:
                continue  # never skipped (see _seed)
            path = article.page_path() + "index.html"
            stamp = self._page_stamp(path)
            if stamp is not None:
                self._stamps[path] = (article_digest(article), stamp)
        paths = self._page_paths
        self._stamps = {p: e for p, e in self._stamps.items() if p in paths}

    def _save_index(self, groups: dict[str, Saved]) -> None:
        assert self.index is not None
        with contextlib.suppress(OSError):  # a template vanished mid-build: the next build saves
            saved_index.save(self.index, self._index_key(), (self._stamps, groups))

    def _forget_pages_if_templates_changed(self) -> None:
        stamp = tuple(
            sorted((str(p), p.stat().st_mtime_ns) for p in self.templates_dir.glob("*.j2"))
        )
        if stamp != self._templates_stamp:
            self._pages = {}
            self._page_paths = set()
            self._slices = {}
            self._failed = {}
            self._stamps = {}
            self._templates_stamp = stamp


_worker_pages: tuple[Pages, Output] | None = None


def _start_page_worker(settings: Settings, templates_dir: Path, sequence: SequenceOf) -> None:
    global _worker_pages
    templates = Templates(templates_dir, zone=settings.site.zone, language=settings.site.language)
    _worker_pages = (Pages(templates, settings, sequence), Output(settings.feeds.output_dir))


def _article_files(article: Article) -> list[str]:
    """The files written for one article: its page, and its calendar if it has events."""
    page = article.page_path()
    return [page + "index.html", page + EVENTS_FILE] if article.events else [page + "index.html"]


def _write_page(pages: Pages, output: Output, article: Article) -> list[str] | TemplateError:
    """Render and write one article's page (and its events.ics): the paths written, or the
    error that keeps it unpublished."""
    path = article.page_path() + "index.html"
    try:
        data = pages.article(article)
    except TemplateError as exc:
        return exc
    written = [path] if output.write(path, data) else []
    if article.events:
        ics = article.page_path() + EVENTS_FILE
        if output.write(ics, article_calendar(article, pages.site, pages.sequence)):
            written.append(ics)
    return written


def _unrenderable(article: Article, exc: TemplateError) -> ArticleError:
    return ArticleError(
        article.source,
        f"its page cannot be rendered ({exc}); it is left out of the feeds until fixed",
    )


def page_problems(pages: Pages, articles: Iterable[Article]) -> list[ArticleError]:
    """The articles whose page cannot be rendered, as a build would find them (for check)."""
    problems = []
    for article in articles:
        try:
            pages.article(article)
        except TemplateError as exc:
            problems.append(_unrenderable(article, exc))
    return problems


def _write_archive_batch(archives: list[Archive]) -> list[list[str] | TemplateError]:
    """In a worker process: render and write these archive pages and feeds."""
    assert _worker_pages is not None, "worker not initialised"
    pages, output = _worker_pages
    results: list[list[str] | TemplateError] = []
    for archive in archives:
        try:
            files = archive_bytes(archive, pages)
        except TemplateError as exc:
            results.append(exc)
            continue
        results.append([path for path, data in files.items() if output.write(path, data)])
    return results


def _write_page_batch(articles: list[Article]) -> list[list[str] | TemplateError]:
    """In a worker process: render and write these article pages."""
    assert _worker_pages is not None, "worker not initialised"
    pages, output = _worker_pages
    return [_write_page(pages, output, article) for article in articles]
