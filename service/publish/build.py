"""A build: published articles to every output file, rendering only what changed.

The builder remembers which article each page was rendered from; since the source returns the
same Article object for an unchanged file, a rebuild after one edit renders that one page, the
index, and the small feeds, and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from service import workers
from service.content.scan import Scan
from service.errors import ArticleError, ConfigError, TemplateError
from service.model import Article
from service.publish.feeds import FeedSpec, feed_files
from service.publish.layout import (
    CATEGORIES_PAGE,
    FEED_FILES,
    NOT_FOUND_PAGE,
    category_prefix,
    logo_path,
)
from service.publish.output import Output
from service.publish.pages import Pages
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

    def __init__(self, settings: Settings, templates_dir: Path) -> None:
        self.settings = settings
        self.templates_dir = templates_dir
        self.output = Output(settings.feeds.output_dir)
        logo = read_logo(settings.site)  # ConfigError: a bad logo stops start-up or a reload
        media_type = settings.site.logo_type
        self.logo = (logo_path(media_type), logo) if logo and media_type else None
        self.pages = Pages(
            Templates(templates_dir, zone=settings.site.zone, language=settings.site.language),
            settings,
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

    def build(self, scan: Scan, now: datetime) -> BuildReport:
        """Write every file for the articles of ``scan`` published at ``now``.

        ConfigError when the output directory cannot be written, TemplateError for a template.
        """
        try:
            return self._build(scan, now)
        except OSError as exc:
            where = exc.filename or self.settings.feeds.output_dir
            raise ConfigError(
                self.settings.feeds.output_dir,
                f"cannot write {where} ({exc.strerror or exc}); "
                "check [feeds] output_dir and its permissions",
            ) from exc

    def _build(self, scan: Scan, now: datetime) -> BuildReport:
        self._forget_pages_if_templates_changed()
        settings = self.settings
        limit = settings.feeds.max_items
        published = scan.published(now)
        written: list[str] = []
        produced: set[str] = set()

        # Article pages first, by object identity: the source hands back the same object for
        # an unchanged file, so set arithmetic on ids finds the few pages to render. An article
        # whose page cannot be rendered is left out of every feed and list, so nothing links
        # to a page that was not written.
        current = {id(a): a for a in published}
        self._failed = {key: error for key, error in self._failed.items() if key in current}
        stale = [
            a for key, a in current.items() if key not in self._pages and key not in self._failed
        ]
        pages_written, failures, fault = self._write_pages(stale)
        if fault is not None and len(failures) == len(stale):
            # every page fails alike, and not on a limit its content hits: the template's fault
            raise fault
        self._failed.update(failures)
        for key in self._failed:
            current.pop(key, None)
        last = self._pages
        for key in last.keys() - current.keys():
            self._page_paths.discard(last[key].page_path() + "index.html")
        self._page_paths.update(a.page_path() + "index.html" for a in stale if id(a) in current)
        produced |= self._page_paths
        written += pages_written
        self._pages = current

        failed = self._failed
        listed = [a for a in published if id(a) not in failed] if failed else published
        sections = scan.recent_by_category(
            now, limit, skip=(lambda a: id(a) in failed) if failed else None
        )
        ordered = [category for category, _ in sections]
        slices: dict[str, tuple[object, ...]] = {}

        def emit(path: str, data: bytes) -> None:
            produced.add(path)
            if self.output.write(path, data):
                written.append(path)

        def unchanged(prefix: str, key: tuple[object, ...]) -> bool:
            """True if the files under ``prefix`` were built from these very objects last time."""
            slices[prefix] = key
            last = self._slices.get(prefix)
            if (
                last is None
                or len(last) != len(key)
                or any(a is not b for a, b in zip(last, key, strict=True))
            ):
                return False
            produced.update(prefix + name for name in (*FEED_FILES, "index.html"))
            return True

        hub = settings.feeds.websub_hub
        recent = listed[:limit]
        if not unchanged("", (*recent, *ordered)):
            site_spec = FeedSpec(settings.site.title, "", recent)
            for path, data in feed_files(site_spec, settings.site, hub).items():
                emit(path, data)
            emit("index.html", self.pages.index(recent, ordered))
            emit(CATEGORIES_PAGE, self.pages.categories(ordered))
            emit(NOT_FOUND_PAGE, self.pages.not_found())
        else:
            produced.update((CATEGORIES_PAGE, NOT_FOUND_PAGE))
        if self.logo is not None:
            emit(*self.logo)
        for category, recent in sections:
            prefix = category_prefix(category.slug)
            if unchanged(prefix, (category, *recent)):
                continue
            spec = FeedSpec(f"{settings.site.title}: {category.name}", prefix, recent)
            for path, data in feed_files(spec, settings.site, hub).items():
                emit(path, data)
            emit(prefix + "index.html", self.pages.category(category, recent))
        self._slices = slices
        removed = self.output.finish(produced)
        problems = tuple(sorted(failed.values(), key=lambda e: e.path))
        return BuildReport(len(listed), tuple(written), tuple(removed), len(produced), problems)

    def _write_pages(
        self, articles: list[Article]
    ) -> tuple[list[str], dict[int, ArticleError], TemplateError | None]:
        """Render and write article pages; thousands of them (a cold build) on every core.

        Returns the paths written; by article identity, the pages that could not be rendered;
        and, when every failure was the same error and not a resource limit, that error.
        """
        if len(articles) < workers.PARALLEL_MIN or workers.cores() < 2:
            results = [_write_page(self.pages, self.output, a) for a in articles]
        else:
            results = []
            for batch in workers.map_batches(
                _write_page_batch,
                articles,
                initializer=_start_page_worker,
                initargs=(self.settings, self.templates_dir),
            ):
                results += batch
        written: list[str] = []
        failures: dict[int, ArticleError] = {}
        errors: list[TemplateError] = []
        for article, outcome in zip(articles, results, strict=True):
            if isinstance(outcome, TemplateError):
                failures[id(article)] = _unrenderable(article, outcome)
                errors.append(outcome)
            elif outcome:
                written.append(outcome)
        alike = {(e.template, e.reason) for e in errors}
        fault = errors[0] if len(alike) == 1 and not errors[0].limit else None
        return written, failures, fault

    def _forget_pages_if_templates_changed(self) -> None:
        stamp = tuple(
            sorted((str(p), p.stat().st_mtime_ns) for p in self.templates_dir.glob("*.j2"))
        )
        if stamp != self._templates_stamp:
            self._pages = {}
            self._page_paths = set()
            self._slices = {}
            self._failed = {}
            self._templates_stamp = stamp


_worker_pages: tuple[Pages, Output] | None = None


def _start_page_worker(settings: Settings, templates_dir: Path) -> None:
    global _worker_pages
    templates = Templates(templates_dir, zone=settings.site.zone, language=settings.site.language)
    _worker_pages = (Pages(templates, settings), Output(settings.feeds.output_dir))


def _write_page(pages: Pages, output: Output, article: Article) -> str | TemplateError | None:
    """Render and write one article's page: its path if written, None if unchanged, or the
    error that keeps it unpublished."""
    path = article.page_path() + "index.html"
    try:
        data = pages.article(article)
    except TemplateError as exc:
        return exc
    return path if output.write(path, data) else None


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


def _write_page_batch(articles: list[Article]) -> list[str | TemplateError | None]:
    """In a worker process: render and write these article pages."""
    assert _worker_pages is not None, "worker not initialised"
    pages, output = _worker_pages
    return [_write_page(pages, output, article) for article in articles]
