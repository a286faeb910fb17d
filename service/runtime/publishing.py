"""The scan job's work: scan the articles, and when something changed, build and record them.

One scan at a time (Source is not thread-safe); the scan and the build run on threads, so the
event loop keeps serving HTTP. What a scan finds is reported once, not at every scan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from service import clock
from service.content.scan import Scan
from service.errors import ArticleError, BantinError
from service.ledger import State
from service.metrics import Metrics
from service.model import Article
from service.publish.search import SearchIndexer
from service.publish.websub import ping_hub
from service.runtime.components import Components
from service.runtime.health import Health

__all__ = ["Published", "Publisher"]

log = logging.getLogger("bantin.service")


@dataclass(frozen=True, slots=True)
class Published:
    """What one scan job found: the scan, what is published now, and whether it changed."""

    scan: Scan
    articles: list[Article]
    changed: bool
    first: bool


class Publisher:
    """Scans and builds with the current components; remembers what it last saw."""

    def __init__(
        self,
        state: State,
        health: Health,
        metrics: Metrics,
        *,
        current: Callable[[], Components],
        first_scan_done: Callable[[], Awaitable[None]],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.state = state
        self.health = health
        self.metrics = metrics
        self.current = current
        self.first_scan_done = first_scan_done  # registers the subscribers (no back catalogue)
        self.leading = leading  # only the leader records articles in the ledger
        self.scanning = asyncio.Lock()
        self.last_scan: Scan | None = None
        self.error: str | None = None  # why the last scan failed, if it did
        self.rebuild = True  # the next scan rebuilds everything (this host came to lead)
        # the parts of the last build: a scan with other parts (an edit of the config adopted
        # meanwhile, even while that scan ran) builds with them, though no file changed
        self._built_with: Components | None = None
        self._next_due: datetime | None = None
        self._problems: set[str] = set()  # scan problems already logged
        self._page_problems: set[str] = set()  # pages that could not be rendered, logged
        # a search index that cannot be made is the health's business: /healthz says why
        self.search = SearchIndexer(on_done=partial(health.record, "search"))

    def published(self) -> dict[str, Article]:
        """What the last scan found published now, by id (what this host can compose)."""
        if self.last_scan is None:
            return {}
        return {a.id: a for a in self.last_scan.published(clock.now())}

    def known_categories(self) -> dict[str, str] | None:
        """Slug -> name of the last scan's categories, for checking subscribers; None before it."""
        if self.last_scan is None:
            return None
        return {a.category.slug: a.category.name for a in self.last_scan.articles}

    async def scan(self) -> Published | None:
        """Rescan; when something changed (or a scheduled article came due) build and record.
        None when the articles could not be scanned."""
        async with self.scanning:
            return await self._scan()

    async def _scan(self) -> Published | None:
        parts = self.current()
        started = time.monotonic()
        moment = clock.now()
        self.health.begin("scan")
        try:
            scan = await asyncio.to_thread(parts.source.scan)
        except BantinError as exc:
            self.error = str(exc)
            self.health.record("scan", False, str(exc), time.monotonic() - started)
            log.error("scan failed: %s", exc)
            return None
        self.error = None
        self.metrics.run_seconds.labels(job="scan").observe(time.monotonic() - started)
        self._report(scan.problems, self._problems)
        due = self._next_due is not None and self._next_due <= moment
        first = self.last_scan is None
        # scan.changed, not object identity: a scan with problems in it is a new object every
        # time, and every scan goes through here (under self.scanning), so no change is missed
        changed = (
            self.rebuild or parts is not self._built_with or due or first or bool(scan.changed)
        )
        self.health.record(
            "scan",
            True,
            f"{len(scan.articles)} articles, {len(scan.changed)} changed",
            time.monotonic() - started,
        )
        self.last_scan = scan
        published = scan.published(moment)
        if changed:
            self.rebuild = False
            self._built_with = parts
            self._next_due = scan.next_due(moment)
            await self._build(parts, scan, moment)
            if self.leading():
                self.state.articles.record(
                    ((a.id, a.fingerprint, a.source) for a in published), moment
                )
            if first:
                # Subscribers are registered after the articles of the first scan, so that a
                # new installation does not mail its back catalogue.
                await self.first_scan_done()
        return Published(scan, published, changed, first)

    async def _build(self, parts: Components, scan: Scan, moment: datetime) -> None:
        started = time.monotonic()
        self.health.begin("build")
        try:
            report = await asyncio.to_thread(parts.builder.build, scan, moment)
        except BantinError as exc:
            self.health.record("build", False, str(exc), time.monotonic() - started)
            log.error("build failed, the previous files stay: %s", exc)
            return
        seconds = time.monotonic() - started
        self._report(report.problems, self._page_problems)
        self.metrics.run_seconds.labels(job="build").observe(seconds)
        self.metrics.articles_published.set(report.published)
        detail = (
            f"{report.published} published, {len(report.written)} written, "
            f"{len(report.removed)} removed"
        )
        self.health.record("build", True, detail, seconds)
        if report.written or report.removed:
            log.info("build: %s (%.2f s)", detail, seconds)
        # the search index is rebuilt off the build's path, once builds have been quiet
        self.search.built(
            parts.settings.feeds.output_dir,
            bool(report.written or report.removed),
            parts.settings.search.memory_limit,
        )
        hub = parts.settings.feeds.websub_hub
        if report.feeds_written and hub:
            await ping_hub(hub, parts.settings.site.base_url, report.feeds_written)

    def _report(self, problems: tuple[ArticleError, ...], logged: set[str]) -> None:
        """Log the problems not logged before; forget the ones that went away."""
        current = {str(p) for p in problems}
        directory = self.current().settings.source.dir
        for problem in sorted(current - logged):
            log.warning("skipped %s/%s", directory, problem)
        logged.clear()
        logged.update(current)
