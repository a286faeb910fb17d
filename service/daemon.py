"""`bantin run`: one process, one event loop, the scheduler and the HTTP server side by side.

The service scans the articles every ``scan_interval`` and rebuilds and mails immediate digests
when something changed; mails daily and weekly digests on their cron schedules (catching up
once at start-up on a run it missed); follows edits to the config and subscribers files
(a bad edit is refused and the old configuration runs on); and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from service.build import Builder
from service.delivery import DigestRun
from service.digest import Composer
from service.errors import BantinError, ConfigError
from service.mailer import transport_for
from service.metrics import Metrics
from service.model import Article, Frequency, Subscriber
from service.pool import default_processes
from service.scheduler import Scheduler, missed
from service.settings import Settings, load_settings
from service.sources import Scan, Source
from service.state import State
from service.subscribers import read_entries, validate
from service.templates import Templates
from service.web import HttpServer, create_app

log = logging.getLogger("bantin.service")

STOP_GRACE = 10.0  # seconds in-flight SMTP transactions get to finish on SIGTERM
WATCH_INTERVAL = 2.0  # seconds between looks at the config and subscribers files
# The HTTP server is bound, and serves the output directory it was given, at start-up: a new
# output_dir would be written but never served. These keep their old value until a restart.
RESTART_ONLY = ("server.host", "server.port", "state.url", "feeds.output_dir")


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _get(settings: Settings, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(settings, section), key)


@dataclass
class Health:
    """What /healthz reports: the last run of each job, the reload state, what is pending."""

    started: datetime = field(default_factory=_now)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=lambda: {"ok": True, "error": None})
    subscribers: dict[str, Any] = field(default_factory=lambda: {"ok": True, "error": None})

    def record(self, job: str, ok: bool, detail: str, seconds: float) -> None:
        self.runs[job] = {
            "at": _now().isoformat(timespec="seconds"),
            "ok": ok,
            "detail": detail,
            "seconds": round(seconds, 3),
        }

    @property
    def healthy(self) -> bool:
        return all(run["ok"] for run in self.runs.values())


class Service:
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
        self.snapshot = self.state.lock_path().parent / "subscribers.last-good.toml"
        self._last_scan: Scan | None = None
        self._scan_error: str | None = None
        self._immediate_top: int | None = None  # the newest article the immediate run has seen
        self._rebuild = True
        self._next_due: datetime | None = None
        self._problems: set[str] = set()
        self._stamps: dict[Path, tuple[int, int] | None] = {}
        self._apply(settings)
        self._http: HttpServer | None = None

    # -- configuration -----------------------------------------------------------------------

    def _apply(self, settings: Settings) -> None:
        """Make ``settings`` the running configuration (at start and after a good edit)."""
        self.settings = settings
        self.source = Source(settings.source.dir, settings.site.zone)
        self.builder = Builder(settings, settings.site.templates_dir)
        self.composer = Composer(settings, self.secret_key())
        self.templates = Templates(
            settings.site.templates_dir, zone=settings.site.zone, language=settings.site.language
        )
        self._rebuild = True  # the next scan job rebuilds everything with the new settings
        self._stamps[self.config_file] = _stamp(self.config_file)

    def secret_key(self) -> bytes:
        return self.state.secret_key(self.settings.server.secret_key)

    def _schedule(self) -> None:
        s = self.settings.schedule
        self.scheduler.every("scan", s.scan_interval, self.scan_job, start_now=False)
        self.scheduler.every("watch", WATCH_INTERVAL, self.watch_job, start_now=False)
        self.scheduler.cron("digest:daily", s.daily, partial(self.digest_job, "daily"))
        self.scheduler.cron("digest:weekly", s.weekly, partial(self.digest_job, "weekly"))

    async def watch_job(self) -> None:
        """Reload the config or the subscribers file when either changed on disk."""
        if _stamp(self.config_file) != self._stamps.get(self.config_file):
            self.reload_config()
        path = self.settings.mail.subscribers_file
        if _stamp(path) != self._stamps.get(path):
            self.reload_subscribers()

    def reload_config(self) -> None:
        self._stamps[self.config_file] = _stamp(self.config_file)
        try:
            new = load_settings(self.config_file)
            changed_restart = [
                key for key in RESTART_ONLY if _get(new, key) != _get(self.settings, key)
            ]
            if changed_restart:
                log.warning(
                    "%s: %s changed; that takes effect only after a restart (the rest applies now)",
                    self.config_file,
                    ", ".join(changed_restart),
                )
                old = self.settings
                server = new.server.model_copy(
                    update={"host": old.server.host, "port": old.server.port}
                )
                feeds = new.feeds.model_copy(update={"output_dir": old.feeds.output_dir})
                new = new.model_copy(update={"server": server, "state": old.state, "feeds": feeds})
            old_subscribers = self.settings.mail.subscribers_file
            self._apply(new)
        except BantinError as exc:
            self.health.config = {
                "ok": False,
                "error": str(exc),
                "at": _now().isoformat(timespec="seconds"),
            }
            log.error("config edit refused, the previous configuration runs on: %s", exc)
            return
        self.health.config = {"ok": True, "error": None, "at": _now().isoformat(timespec="seconds")}
        self._schedule()
        log.info("%s reloaded", self.config_file)
        if new.mail.subscribers_file != old_subscribers:
            self.reload_subscribers()

    def reload_subscribers(self) -> None:
        """Adopt the subscribers file if it is valid; otherwise keep the last good copy."""
        path = self.settings.mail.subscribers_file
        self._stamps[path] = _stamp(path)
        known = self._known_categories()
        try:
            count, problems, warnings = validate(path, known)
        except ConfigError as exc:
            problems, warnings, count = [exc], [], 0
        for warning in warnings:
            log.warning("%s", warning)
        if problems:
            for problem in problems:
                log.error("subscribers edit refused: %s", problem)
            self.health.subscribers = {
                "ok": False,
                "error": f"{len(problems)} problem(s), first: {problems[0]}",
                "at": _now().isoformat(timespec="seconds"),
            }
            if not self.snapshot.exists():
                log.error("no earlier good subscribers file: no digests are sent until it is fixed")
            return
        self.snapshot.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.snapshot.with_suffix(".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(self.snapshot)
        self._register_subscribers()
        self.health.subscribers = {
            "ok": True,
            "error": None,
            "count": count,
            "at": _now().isoformat(timespec="seconds"),
        }
        log.info("%s: %d subscribers", path, count)

    def _register_subscribers(self) -> None:
        """Record when each subscriber was first seen, so they get the news from now on."""
        chunk: list[Subscriber] = []
        for entry in read_entries(self.snapshot):
            if entry.subscriber is not None:
                chunk.append(entry.subscriber)
            if len(chunk) >= 500:
                self.state.sync_subscribers(chunk, _now())
                chunk = []
        if chunk:
            self.state.sync_subscribers(chunk, _now())

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
        moment = _now()
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
            self.state.record_articles((a.id for a in published), moment)
            if first:
                # Subscribers are registered after the articles of the first scan, so that a
                # new installation does not mail its back catalogue.
                self.reload_subscribers()
            pending = self.state.counts()["pending"] > 0
        # Not "did this scan record new articles": a daily or weekly run may have recorded them
        # first, and the immediate subscribers must get them all the same.
        top = self.state.last_seq()
        if top != self._immediate_top or pending:
            self._immediate_top = top
            await self.digest("immediate", published)
        return scan

    def _report_problems(self, scan: Scan) -> None:
        current = {str(p) for p in scan.problems}
        for problem in sorted(current - self._problems):
            log.warning("skipped %s/%s", self.settings.source.dir, problem)
        self._problems = current

    async def build(self, scan: Scan, moment: datetime) -> None:
        started = time.monotonic()
        try:
            report = await asyncio.to_thread(self.builder.build, scan, moment)
        except BantinError as exc:
            self.health.record("build", False, str(exc), time.monotonic() - started)
            log.error("build failed, the previous files stay: %s", exc)
            return
        seconds = time.monotonic() - started
        self.metrics.run_seconds.labels(job="build").observe(seconds)
        self.metrics.articles_published.set(report.published)
        detail = (
            f"{report.published} published, {len(report.written)} written, "
            f"{len(report.removed)} removed"
        )
        self.health.record("build", True, detail, seconds)
        if report.written or report.removed:
            log.info("build: %s (%.2f s)", detail, seconds)
        if report.feeds_written and self.settings.feeds.websub_hub:
            await self.ping_hub(report.feeds_written)

    async def ping_hub(self, feeds: tuple[str, ...]) -> None:
        hub = self.settings.feeds.websub_hub
        assert hub is not None
        base = self.settings.site.base_url
        for path in feeds:
            if path.endswith("feed.json"):
                continue
            body = urllib.parse.urlencode(
                {"hub.mode": "publish", "hub.url": f"{base}/{path}"}
            ).encode()
            request = urllib.request.Request(hub, data=body, method="POST")
            try:
                await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
            except OSError as exc:
                log.warning("WebSub hub %s not reached for %s: %s", hub, path, exc)

    async def digest_job(self, frequency: Frequency) -> None:
        """A scheduled (or catch-up) digest: rescan first, so it carries the latest articles."""
        started_at = _now()
        scan = await self.scan_job()
        if scan is None:
            reason = f"the articles could not be scanned: {self._scan_error}"
            self.health.record(f"digest:{frequency}", False, reason, 0.0)
            self.state.record_run(f"digest:{frequency}", started_at, _now(), False, reason)
            log.error("digest %s not sent: %s", frequency, reason)
            return
        await self.digest(frequency, scan.published(_now()))

    async def digest(self, frequency: Frequency, published: list[Article]) -> None:
        if self.stopping.is_set():
            return
        async with self.sending:
            # asked again: a stop may have come while this run waited for the previous one
            if self.stopping.is_set() or not self.snapshot.exists():
                return
            started_at = _now()
            started = time.monotonic()
            transport = transport_for(self.settings)
            run = DigestRun(
                self.state,
                self.composer,
                transport,
                metrics=self.metrics,
                processes=default_processes(),
            )
            self.current_run = run
            entries = read_entries(self.snapshot)
            try:
                report = await run.run(frequency, published, entries)
            except BantinError as exc:
                self.health.record(
                    f"digest:{frequency}", False, str(exc), time.monotonic() - started
                )
                self.state.record_run(f"digest:{frequency}", started_at, _now(), False, str(exc))
                log.error("digest %s failed: %s", frequency, exc)
                return
            finally:
                self.current_run = None
                await transport.close()
            seconds = time.monotonic() - started
            self.metrics.run_seconds.labels(job="digest").observe(seconds)
            ok = report.ok or self.stopping.is_set()
            self.health.record(f"digest:{frequency}", ok, report.summary(), seconds)
            self.state.record_run(f"digest:{frequency}", started_at, _now(), ok, report.summary())
            # a scheduled run is worth a line even when it had nothing to send
            if (
                frequency != "immediate"
                or report.sent
                or report.deferred
                or report.failed
                or not ok
            ):
                log.info("%s", report.summary())

    def catch_up(self) -> None:
        """Run once now each cron digest whose scheduled time passed while we were down."""
        last = {run.kind: run.started for run in self.state.runs()}
        moment = _now()
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
        new = self.state.unsubscribe(email, _now())
        if new:
            log.info("unsubscribed %s", email)
        return new

    def health_report(self) -> tuple[dict[str, object], bool]:
        try:
            pending = self.state.counts()["pending"]
        except BantinError as exc:
            return {"status": "failing", "error": str(exc)}, False
        healthy = self.health.healthy
        body: dict[str, object] = {
            "status": "ok" if healthy else "failing",
            "started": self.health.started.isoformat(timespec="seconds"),
            "runs": self.health.runs,
            "config": {"file": str(self.config_file), **self.health.config},
            "subscribers": {
                "file": str(self.settings.mail.subscribers_file),
                **self.health.subscribers,
            },
            "pending_deliveries": pending,
            "next_runs": self.scheduler.next_times(),
        }
        return body, healthy

    # -- life cycle ------------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
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
            metrics=self.metrics,
            templates=lambda: self.templates,
        )
        self._http = HttpServer(app, self.settings.server.host, self.settings.server.port)
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
        self.reload_config()
        self.reload_subscribers()

    def request_stop(self, sig: signal.Signals | None = None) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping", sig.name if sig else "stop requested")
        self.stopping.set()
        # at once, not in shutdown(): the start-up scan's run is awaited before serve() can
        # get to shutdown(), and it must not send on for minutes after a SIGTERM
        if self.current_run is not None:
            self.current_run.stop("the service is stopping")

    async def shutdown(self) -> None:
        self.scheduler.pause()
        if self.current_run is not None:
            self.current_run.stop("the service is stopping")
        try:
            async with asyncio.timeout(STOP_GRACE):
                # a scan in progress finishes (it may be writing files or the ledger) and
                # so does what is in flight; then nothing touches the state any more
                async with self.scanning, self.sending:
                    pass
        except TimeoutError:
            log.warning("in-flight mail did not finish within %.0f s; it stays pending", STOP_GRACE)
        self.scheduler.shutdown()
        if self._http is not None:
            await self._http.stop()
        self.state.close()
        log.info("stopped")


def run_service(settings: Settings, config_file: Path, *, log_json: bool = False) -> int:
    """Run until SIGTERM/SIGINT; holds the state's runner lock the whole time."""
    state = State(settings.state.url)
    # the lock first: a second instance must stop before it touches anything
    with state.locked("run"):
        return asyncio.run(Service(settings, config_file, state).serve())
