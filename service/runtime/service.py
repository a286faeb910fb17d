"""`bantin run`: one process, one event loop, the scheduler and the HTTP server side by side.

The service scans the articles every ``scan_interval`` and rebuilds and mails immediate digests
when something changed; mails daily and weekly digests on their cron schedules (catching up
once at start-up on a run it missed); follows edits to the config and subscribers files
(reload.py: a bad edit is refused and the old configuration runs on); and stops cleanly on
SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from service import clock
from service.content.scan import Scan
from service.content.source import Source
from service.errors import ArticleError, BantinError
from service.ledger import State
from service.ledger.lock import held, runner_lock
from service.mail.compose import Composer
from service.mail.compose_workers import default_processes
from service.mail.mime import read_dkim_key
from service.mail.run import DigestRun, run_digest
from service.mail.subscribers import read_entries
from service.mail.transport import transport_for
from service.metrics import Metrics
from service.model import Article, Frequency
from service.publish.build import Builder
from service.publish.websub import ping_hub
from service.runtime.health import Health, stamp
from service.runtime.reload import WATCH_INTERVAL, Reloader
from service.runtime.schedule import Scheduler, cron_trigger, missed
from service.serve.app import create_app
from service.serve.server import HttpServer
from service.settings import Settings
from service.templating import Templates

__all__ = ["STOP_GRACE", "Service", "run_service"]

log = logging.getLogger("bantin.service")

STOP_GRACE = 10.0  # seconds in-flight SMTP transactions get to finish on SIGTERM
RETRY_PENDING_EVERY = 600.0  # seconds between tries of mail the server deferred


class Service:
    """The running service: its jobs, its live configuration, its HTTP server, its health."""

    def __init__(self, settings: Settings, config_file: Path, state: State | None = None) -> None:
        self.settings = settings
        self.config_file = config_file
        self.state = state or State(settings.state.url)
        self.metrics = Metrics()
        self.health = Health()
        self.scheduler = Scheduler(settings.site.zone)
        self.sending = asyncio.Lock()  # one digest run at a time: they share pending deliveries
        # one scan at a time: Source is not thread-safe, and whoever scans first must also be
        # the one who rebuilds and mails the immediate digests
        self.scanning = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.current_run: DigestRun | None = None
        self._last_scan: Scan | None = None
        self._scan_error: str | None = None
        self._immediate_top: int | None = None  # the newest article the immediate run has seen
        self._immediate: asyncio.Task[None] | None = None  # the immediate digest, when running
        self._immediate_again = False  # asked for again while it ran
        self._immediate_articles: list[Article] = []
        self._last_mail = time.monotonic()  # when a digest run last started
        self._rebuild = True
        self._next_due: datetime | None = None
        self._problems: set[str] = set()  # scan problems already logged
        self._page_problems: set[str] = set()  # pages that could not be rendered, logged
        self.reloader = Reloader(
            config_file,
            self.state,
            self.health,
            current=lambda: self.settings,
            apply=self._adopt,
            known_categories=self._known_categories,
        )
        self._apply(settings)
        self._http: HttpServer | None = None
        self._hup: asyncio.Task[None] | None = None  # a reload asked for by SIGHUP

    # -- configuration -----------------------------------------------------------------------

    def _apply(self, settings: Settings) -> None:
        """Make ``settings`` the running configuration (at start and after a good edit).

        All or nothing: every component is built first, and only when all of them could be
        is any of them swapped in; a failure leaves the running configuration untouched.
        """
        site, mail, schedule = settings.site, settings.mail, settings.schedule
        dkim = read_dkim_key(mail.dkim_domain, mail.dkim_selector, mail.dkim_key_file)
        key = self.state.keys.secret_key(settings.server.secret_key)
        source = Source(settings.source.dir, site.zone, *self.state.articles.identities())
        builder = Builder(settings, site.templates_dir)
        composer = Composer(settings, key, dkim)
        templates = Templates(site.templates_dir, zone=site.zone, language=site.language)
        transport_for(settings)  # refuses what it cannot use, before anything is swapped
        for expression in (schedule.daily, schedule.weekly):
            cron_trigger(expression, site.zone)
        self.settings, self.source, self.builder = settings, source, builder
        self.composer, self.templates = composer, templates
        self._rebuild = True  # the next scan job rebuilds everything with the new settings

    def _adopt(self, settings: Settings) -> None:
        """A good edit of the config file: apply it and reschedule."""
        self._apply(settings)
        self._schedule()

    def secret_key(self) -> bytes:
        return self.state.keys.secret_key(self.settings.server.secret_key)

    def _schedule(self) -> None:
        s = self.settings.schedule
        self.scheduler.every("scan", s.scan_interval, self.scan_job, start_now=False)
        self.scheduler.every("watch", WATCH_INTERVAL, self.reloader.watch, start_now=False)
        self.scheduler.cron("digest:daily", s.daily, partial(self.digest_job, "daily"))
        self.scheduler.cron("digest:weekly", s.weekly, partial(self.digest_job, "weekly"))

    def _known_categories(self) -> dict[str, str] | None:
        if self._last_scan is None:
            return None
        return {a.category.slug: a.category.name for a in self._last_scan.articles}

    # -- jobs ----------------------------------------------------------------------------------

    async def scan_job(self) -> Scan | None:
        """Rescan; when something changed (or a scheduled article came due) rebuild and mail.

        Returns the scan, or None when the articles could not be scanned.
        """
        async with self.scanning:
            return await self._scan()

    async def _scan(self) -> Scan | None:
        started = time.monotonic()
        moment = clock.now()
        self.health.begin("scan")
        try:
            scan = await asyncio.to_thread(self.source.scan)
        except BantinError as exc:
            self._scan_error = str(exc)
            self.health.record("scan", False, str(exc), time.monotonic() - started)
            log.error("scan failed: %s", exc)
            return None
        self._scan_error = None
        self.metrics.run_seconds.labels(job="scan").observe(time.monotonic() - started)
        self._report_problems(scan)
        due = self._next_due is not None and self._next_due <= moment
        first = self._last_scan is None
        # scan.changed, not object identity: a scan with problems in it is a new object every
        # time, and every scan goes through here (under self.scanning), so no change is missed
        changed = self._rebuild or due or first or bool(scan.changed)
        self.health.record(
            "scan",
            True,
            f"{len(scan.articles)} articles, {len(scan.changed)} changed",
            time.monotonic() - started,
        )
        self._last_scan = scan
        published = scan.published(moment)
        pending = False
        if changed:
            self._rebuild = False
            self._next_due = scan.next_due(moment)
            await self.build(scan, moment)
            self.state.articles.record(((a.id, a.fingerprint, a.source) for a in published), moment)
            if first:
                # Subscribers are registered after the articles of the first scan, so that a
                # new installation does not mail its back catalogue.
                await self.reloader.reload_subscribers()
            pending = self.state.deliveries.oldest_pending() is not None
        elif time.monotonic() - self._last_mail >= RETRY_PENDING_EVERY:
            # mail deferred by the server waits in the ledger: try it again now and then
            pending = self.state.deliveries.oldest_pending() is not None
        # Not "did this scan record new articles": a daily or weekly run may have recorded them
        # first, and the immediate subscribers must get them all the same.
        top = self.state.articles.last_seq()
        if top != self._immediate_top or pending:
            self._immediate_top = top
            self._mail_immediately(published)
        return scan

    def _mail_immediately(self, published: list[Article]) -> None:
        """Start the immediate digest beside the scans, never in their way: publishing never
        waits for mail. A request while one runs makes it run once more when it ends."""
        self._immediate_articles = published
        if self._immediate is not None and not self._immediate.done():
            self._immediate_again = True
            return
        self._immediate = asyncio.create_task(self._immediate_runs(), name="digest:immediate")

    async def settled(self) -> None:
        """Wait until the immediate digests asked for so far have run (for tests, shutdown)."""
        while self._immediate is not None and not self._immediate.done():
            await asyncio.shield(self._immediate)

    async def _immediate_runs(self) -> None:
        self._immediate_again = True
        while self._immediate_again and not self.stopping.is_set():
            self._immediate_again = False
            await self.digest("immediate", self._immediate_articles)

    def _report_problems(self, scan: Scan) -> None:
        current = {str(p) for p in scan.problems}
        for problem in sorted(current - self._problems):
            log.warning("skipped %s/%s", self.settings.source.dir, problem)
        self._problems = current

    def _report_page_problems(self, problems: tuple[ArticleError, ...]) -> None:
        current = {str(p) for p in problems}
        for problem in sorted(current - self._page_problems):
            log.warning("skipped %s/%s", self.settings.source.dir, problem)
        self._page_problems = current

    async def build(self, scan: Scan, moment: datetime) -> None:
        started = time.monotonic()
        self.health.begin("build")
        try:
            report = await asyncio.to_thread(self.builder.build, scan, moment)
        except BantinError as exc:
            self.health.record("build", False, str(exc), time.monotonic() - started)
            log.error("build failed, the previous files stay: %s", exc)
            return
        seconds = time.monotonic() - started
        self._report_page_problems(report.problems)
        self.metrics.run_seconds.labels(job="build").observe(seconds)
        self.metrics.articles_published.set(report.published)
        detail = (
            f"{report.published} published, {len(report.written)} written, "
            f"{len(report.removed)} removed"
        )
        self.health.record("build", True, detail, seconds)
        if report.written or report.removed:
            log.info("build: %s (%.2f s)", detail, seconds)
        hub = self.settings.feeds.websub_hub
        if report.feeds_written and hub:
            await ping_hub(hub, self.settings.site.base_url, report.feeds_written)

    async def digest_job(self, frequency: Frequency) -> None:
        """A scheduled (or catch-up) digest: rescan first, so it carries the latest articles."""
        started_at = clock.now()
        scan = await self.scan_job()
        if scan is None:
            reason = f"the articles could not be scanned: {self._scan_error}"
            self.health.record(f"digest:{frequency}", False, reason, 0.0)
            self.state.runs.record(f"digest:{frequency}", started_at, clock.now(), False, reason)
            log.error("digest %s not sent: %s", frequency, reason)
            return
        await self.digest(frequency, scan.published(clock.now()))

    async def digest(self, frequency: Frequency, published: list[Article]) -> None:
        if self.stopping.is_set():
            return
        async with self.sending:
            # asked again: a stop may have come while this run waited for the previous one
            if self.stopping.is_set() or not self.reloader.snapshot.exists():
                return
            started = time.monotonic()
            self.health.begin(f"digest:{frequency}")
            self._last_mail = started
            run = DigestRun(
                self.state,
                self.composer,
                transport_for(self.settings),
                frequency,
                published,
                read_entries(self.reloader.snapshot),
                metrics=self.metrics,
                processes=default_processes(),
            )
            self.current_run = run
            try:
                report = await run_digest(run)
            except BantinError as exc:
                self.health.record(
                    f"digest:{frequency}", False, str(exc), time.monotonic() - started
                )
                log.error("digest %s failed: %s", frequency, exc)
                return
            finally:
                self.current_run = None
            seconds = time.monotonic() - started
            self.metrics.run_seconds.labels(job="digest").observe(seconds)
            self.health.record(f"digest:{frequency}", report.ok, report.summary(), seconds)
            # a scheduled run is worth a line even when it had nothing to send
            if (
                frequency != "immediate"
                or report.sent
                or report.deferred
                or report.failed
                or not report.ok
            ):
                log.info("%s", report.summary())

    def catch_up(self) -> None:
        """Run once now each cron digest whose scheduled time passed while we were down."""
        last = {run.kind: run.started for run in self.state.runs.all()}
        moment = clock.now()
        crons: list[tuple[Frequency, str]] = [
            ("daily", self.settings.schedule.daily),
            ("weekly", self.settings.schedule.weekly),
        ]
        for frequency, expression in crons:
            kind = f"digest:{frequency}"
            if missed(expression, self.settings.site.zone, last.get(kind), moment):
                log.info(
                    "catching up on the %s digest missed while the service was down", frequency
                )
                self.scheduler.once(f"catch-up:{frequency}", partial(self.digest_job, frequency))

    # -- HTTP ----------------------------------------------------------------------------------

    async def unsubscribe(self, email: str) -> bool:
        new = self.state.subscribers.unsubscribe(email, clock.now())
        if new:
            log.info("unsubscribed %s", email)
        return new

    def health_report(self, detailed: bool) -> tuple[dict[str, object], bool]:
        """/healthz: ok or failing with the watchdog's reasons; the details (errors, files,
        addresses) only when ``detailed`` (a local request or one with the health token)."""
        moment = clock.now()
        try:
            oldest = self.state.deliveries.oldest_pending()
            problems = self.health.problems(
                moment,
                scan_interval=self.settings.schedule.scan_interval,
                oldest_pending=oldest,
                sending=self.sending.locked(),
            )
        except BantinError as exc:
            oldest, problems = None, [f"the state database cannot be read: {exc}"]
        healthy = not problems
        body: dict[str, object] = {
            "status": "ok" if healthy else "failing",
            "checked": stamp(moment),
            "started": stamp(self.health.started),
            "last_success": {
                name: stamp(job.last_success) for name, job in sorted(self.health.jobs.items())
            },
        }
        if detailed:
            body.update(
                {
                    "problems": problems,
                    "runs": self.health.runs,
                    "config": {"file": str(self.config_file), **self.health.config},
                    "subscribers": {
                        "file": str(self.settings.mail.subscribers_file),
                        **self.health.subscribers,
                    },
                    "pending_deliveries": self._pending_count(),
                    "oldest_pending": stamp(oldest),
                    "next_runs": self.scheduler.next_times(),
                }
            )
        return body, healthy

    def _pending_count(self) -> int | None:
        try:
            return self.state.deliveries.pending_count()
        except BantinError:
            return None

    # -- life cycle ------------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_QuietLoopErrors())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        app = create_app(
            output_dir=self.settings.feeds.output_dir,
            # callables: a live edit of the title, the interval or the templates applies at once
            site_title=lambda: self.settings.site.title,
            max_age=lambda: self.settings.schedule.scan_interval,
            secret_key=self.secret_key,
            unsubscribe=self.unsubscribe,
            health=self.health_report,
            health_token=lambda: self.settings.server.health_token,
            metrics=self.metrics,
            templates=lambda: self.templates,
        )
        server = self.settings.server
        self._http = HttpServer(
            app,
            server.host,
            server.port,
            max_connections=server.max_connections,
            header_timeout=server.header_timeout,
        )
        await self._http.start()
        await self.scan_job()  # before anything else: articles are recorded before subscribers
        if not self.stopping.is_set():  # a SIGTERM during the first scan: straight to shutdown
            self.catch_up()
            self._schedule()
            self.scheduler.start()
            log.info(
                "bantin is running; scans every %d s; Ctrl-C or SIGTERM stops it",
                self.settings.schedule.scan_interval,
            )
        http_task = self._http.task
        stop_task = asyncio.create_task(self.stopping.wait())
        waiting = {stop_task} | ({http_task} if http_task else set())
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        await self.shutdown()
        return 0

    def _on_hup(self) -> None:
        log.info("SIGHUP: reloading the configuration")
        self._hup = asyncio.create_task(self._reload_all(), name="sighup")

    async def _reload_all(self) -> None:
        await self.reloader.reload_config()
        await self.reloader.reload_subscribers()

    def request_stop(self, sig: signal.Signals | None = None) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping", sig.name if sig else "stop requested")
        self.stopping.set()
        # at once, not in shutdown(): the start-up scan's run is awaited before serve() can
        # get to shutdown(), and it must not send on for minutes after a SIGTERM
        if self.current_run is not None:
            self.current_run.interrupt("the service is stopping")

    async def shutdown(self) -> None:
        self.scheduler.pause()
        if self.current_run is not None:
            self.current_run.interrupt("the service is stopping")
        try:
            async with asyncio.timeout(STOP_GRACE):
                # a scan in progress finishes (it may be writing files or the ledger) and
                # so does what is in flight; then nothing touches the state any more
                await self.settled()
                async with self.scanning, self.sending:
                    pass
        except TimeoutError:
            log.warning("in-flight mail did not finish within %.0f s; it stays pending", STOP_GRACE)
        self.scheduler.shutdown()
        if self._http is not None:
            await self._http.stop()
        self.state.close()
        log.info("stopped")


class _QuietLoopErrors:
    """The event loop's own errors (an accept() out of file descriptors, a lost connection),
    logged once a minute per kind with a count, never as a flood of tracebacks."""

    EVERY = 60.0

    def __init__(self) -> None:
        self._said: dict[str, tuple[float, int]] = {}

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message") or "event loop error")
        exception = context.get("exception")
        kind = message.split(":", 1)[0]
        now = time.monotonic()
        said, count = self._said.get(kind, (-self.EVERY, 0))
        if now - said < self.EVERY:
            self._said[kind] = (said, count + 1)
            return
        self._said[kind] = (now, 0)
        repeats = f" ({count} more like it in the last minute)" if count else ""
        detail = f": {exception.__class__.__name__}: {exception}" if exception else ""
        log.error("%s%s%s", message, detail, repeats, exc_info=log.isEnabledFor(logging.DEBUG))


def run_service(settings: Settings, config_file: Path) -> int:
    """Run until SIGTERM/SIGINT; holds the state's runner lock the whole time."""
    state = State(settings.state.url)
    # the lock first: a second instance must stop before it touches anything
    with held(runner_lock(state), "run"):
        return asyncio.run(Service(settings, config_file, state).serve())
