"""`bantin run`: one process, one event loop, the scheduler and the HTTP server side by side.

The service scans the articles every ``scan_interval`` and rebuilds when something changed
(publishing.py), mails immediate digests beside the scans and daily and weekly ones on their
cron schedules, catching up once at start-up on a run it missed (mailing.py), follows edits to
the config and subscribers files (reload.py: a bad edit is refused and the old configuration
runs on), answers /healthz from its watchdog (health.py), and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from functools import partial
from pathlib import Path

from service import clock
from service.content.scan import Scan
from service.errors import BantinError
from service.ledger import State
from service.ledger.lock import RunnerLock, held, runner_lock
from service.mail.compose import Composer
from service.mail.run import DigestRun
from service.mail.signups import Desk
from service.metrics import Metrics
from service.model import Category, Frequency
from service.runtime.bounce_reading import BounceReader
from service.runtime.cluster import Leadership
from service.runtime.components import Components
from service.runtime.health import Health, stamp
from service.runtime.helping import Helper
from service.runtime.loop_errors import QuietLoopErrors
from service.runtime.mailing import Mailer
from service.runtime.publishing import Publisher
from service.runtime.reload import WATCH_INTERVAL, Reloader
from service.runtime.schedule import Scheduler, missed
from service.serve.app import create_app
from service.serve.server import HttpServer
from service.settings import Settings
from service.templating import Templates

__all__ = ["RETRY_PENDING_EVERY", "STOP_GRACE", "Service", "run_service"]

log = logging.getLogger("bantin.service")

STOP_GRACE = 10.0  # seconds in-flight SMTP transactions get to finish on SIGTERM
RETRY_PENDING_EVERY = 600.0  # seconds between tries of mail the server deferred
HELP_EVERY = 1.0  # seconds between a standby's looks for runs to help send
HOUSEKEEPING_EVERY = 3600.0  # seconds between erasures of sign-ups and rate counts kept enough


class Service:
    """The running service: its jobs, its live configuration, its HTTP server, its health."""

    def __init__(
        self,
        settings: Settings,
        config_file: Path,
        state: State | None = None,
        lock: RunnerLock | None = None,
    ) -> None:
        """``lock``: the runner lock, already held (a SQLite state's file lock); without one,
        the service takes its role from the ledger's leader lock (PostgreSQL), and on a SQLite
        state it leads."""
        self.config_file = config_file
        self.state = state or State(settings.state.url)
        self.metrics = Metrics()
        self.health = Health()
        self.scheduler = Scheduler(settings.site.zone)
        self.stopping = asyncio.Event()
        self.parts = Components.build(settings, self.state)
        self.host = settings.cluster.name
        held = lock is not None or self.state.db.dialect != "postgresql"
        self.leadership = Leadership(
            self.state,
            self.host,
            lock or runner_lock(self.state, self.host),
            held=held,
            on_lead=self._lead,
            on_follow=self._follow,
        )
        leading = lambda: self.leadership.leading  # noqa: E731
        self.reloader = Reloader(
            config_file,
            self.state,
            self.health,
            current=lambda: self.settings,
            apply=self._adopt,
            known_categories=lambda: self.publisher.known_categories(),
            leading=leading,
        )
        self.publisher = Publisher(
            self.state,
            self.health,
            self.metrics,
            current=lambda: self.parts,
            first_scan_done=self.reloader.reload_subscribers,
            leading=leading,
        )
        self.mailer = Mailer(
            self.state,
            self.health,
            self.metrics,
            current=lambda: self.parts,
            subscribers=self.reloader.snapshot,
            stopping=self.stopping,
            host=self.host,
            # a run planned here gives back this host's claims: its help must be over first
            before=lambda: self.helper.settled(),
        )
        self.helper = Helper(
            self.state,
            self.host,
            self.metrics,
            current=lambda: self.parts,
            articles=self.publisher.published,
            leading=leading,
            stopping=self.stopping,
        )
        self.bounces = BounceReader(
            self.state, self.health, current=lambda: self.parts, key=self.secret_key
        )
        self.signups = Desk(
            self.state,
            settings=lambda: self.settings,
            composer=lambda: self.composer,
            categories=self._categories,
            key=self.secret_key,
        )
        self._immediate_top: int | None = None  # the newest article immediate mail has seen
        self._immediate_sessions: dict[str, str] | None = None  # and the sessions it has seen
        self._http: HttpServer | None = None
        self._hup: asyncio.Task[None] | None = None  # a reload asked for by SIGHUP

    @property
    def settings(self) -> Settings:
        """The configuration in force; a good edit of the config file replaces it whole."""
        return self.parts.settings

    @property
    def composer(self) -> Composer:
        """The digest composer of the configuration in force."""
        return self.parts.composer

    @property
    def current_run(self) -> DigestRun | None:
        """The digest run sending now, if there is one."""
        return self.mailer.current_run

    # -- configuration -----------------------------------------------------------------------

    def _adopt(self, settings: Settings) -> None:
        """A good edit of the config file: swap in all of its parts at once, and reschedule."""
        self.parts = Components.build(settings, self.state)  # raises before anything changes
        self.publisher.rebuild = True  # the next scan rebuilds everything with the new settings
        self._schedule()

    def secret_key(self) -> bytes:
        """The key that signs unsubscribe links: server.secret_key, else the state's own."""
        return self.state.keys.secret_key(self.settings.server.secret_key)

    def _schedule(self) -> None:
        s = self.settings.schedule
        self.scheduler.every("scan", s.scan_interval, self.scan_job, start_now=False)
        self.scheduler.every("watch", WATCH_INTERVAL, self.reloader.watch, start_now=False)
        if self.leadership.shared:
            beat = self.settings.cluster.failover_after / 3
            self.scheduler.every("leadership", beat, self.leadership.check, start_now=False)
            self.scheduler.every("help", HELP_EVERY, self.helper.check, start_now=False)
        if self.leadership.leading:
            self.scheduler.cron("digest:daily", s.daily, partial(self.digest_job, "daily"))
            self.scheduler.cron("digest:weekly", s.weekly, partial(self.digest_job, "weekly"))
        else:
            self.scheduler.remove("digest:daily")
            self.scheduler.remove("digest:weekly")
        if self.leadership.leading:
            self.scheduler.every("housekeeping", HOUSEKEEPING_EVERY, self.housekeeping)
        else:
            self.scheduler.remove("housekeeping")
        if self.leadership.leading and self.bounces.configured():
            interval = self.settings.bounces.poll_interval
            self.scheduler.every("bounces", interval, self.bounces.poll, start_now=True)
        else:
            self.scheduler.remove("bounces")

    async def _lead(self) -> None:
        """This host now leads: register the subscribers, record the articles at the next
        scan, plan anew the runs whose planner died, catch up on missed ones, schedule."""
        await asyncio.to_thread(self.reloader.register)
        self.publisher.rebuild = True
        for orphan in self.state.claims.active():
            log.info("planning the %s digest run its leader left unfinished", orphan.frequency)
            frequency: Frequency = orphan.frequency  # type: ignore[assignment]
            self.scheduler.once(f"resume:{frequency}", partial(self.digest_job, frequency))
        self.catch_up()
        self._schedule()

    async def _follow(self) -> None:
        """This host no longer leads: its run in progress stops; its schedule of runs goes."""
        self.mailer.interrupt("this host no longer leads; the new leader plans the run anew")
        self._schedule()

    # -- jobs ----------------------------------------------------------------------------------

    async def scan_job(self) -> Scan | None:
        """Rescan and rebuild (publishing.py), then ask for immediate mail when there is news
        or mail waits. Returns the scan, or None when the articles could not be scanned."""
        found = await self.publisher.scan()
        if found is None:
            return None
        pending = False
        if found.changed or time.monotonic() - self.mailer.last_start >= RETRY_PENDING_EVERY:
            # mail deferred by the server waits in the ledger: it is tried again now and then
            pending = self.state.deliveries.oldest_pending() is not None
        if not self.leadership.leading:
            return found.scan  # the leader plans the mail; this host helps send it
        # Not "did this scan record new articles": a daily or weekly run may have recorded them
        # first, and the immediate subscribers must get them all the same.
        top = self.state.articles.last_seq()
        # a session moved, relocated or cancelled is news too, to those who got the old one
        sessions = {a.id: a.event_revision for a in found.articles if a.events}
        if top != self._immediate_top or sessions != self._immediate_sessions or pending:
            self._immediate_top, self._immediate_sessions = top, sessions
            self.mailer.immediately(found.articles)
        return found.scan

    async def settled(self) -> None:
        """Wait until the immediate digests asked for so far have run."""
        await self.mailer.settled()

    async def digest_job(self, frequency: Frequency) -> None:
        """A scheduled (or catch-up) digest: rescan first, so it carries the latest articles."""
        started_at = clock.now()
        scan = await self.scan_job()
        if scan is None:
            reason = f"the articles could not be scanned: {self.publisher.error}"
            self.health.record(f"digest:{frequency}", False, reason, 0.0)
            self.state.runs.record(f"digest:{frequency}", started_at, clock.now(), False, reason)
            log.error("digest %s not sent: %s", frequency, reason)
            return
        await self.mailer.run(frequency, scan.published(clock.now()))

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
        """Record the unsubscription of ``email`` (from its signed link); True if it is new."""
        new = self.state.subscribers.unsubscribe(email, clock.now())
        if new:
            log.info("unsubscribed %s", email)
        return new

    def _categories(self) -> list[Category]:
        known = self.publisher.known_categories() or {}
        return [Category(name, slug) for slug, name in known.items()]

    async def housekeeping(self) -> None:
        """Erase what is kept long enough: expired sign-ups, those of people who unsubscribed
        (README: what is stored, for how long), rate counts whose window has passed."""
        moment = clock.now()
        hours = self.settings.subscribe.confirm_hours
        try:
            erased = await asyncio.to_thread(self.state.signups.purge, moment, hours)
            await asyncio.to_thread(self.state.throttles.purge, moment)
        except BantinError as exc:
            log.warning("housekeeping: %s", exc)
            return
        if erased:
            log.info("housekeeping: %d sign-up(s) kept long enough were erased", erased)

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
                sending=self.mailer.sending.locked(),
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
                    "cluster": self.leadership.report(),
                }
            )
        return body, healthy

    def _pending_count(self) -> int | None:
        try:
            return self.state.deliveries.pending_count()
        except BantinError:
            return None

    def _templates(self) -> Templates:
        return self.parts.templates

    # -- life cycle ------------------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until SIGTERM, SIGINT or the HTTP server's end; 0 after a clean stop."""
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(QuietLoopErrors())
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
            templates=self._templates,
            signups=self.signups,
            settings=lambda: self.settings,
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
        await self.leadership.check()  # the role first: only a leader records and plans
        await self.scan_job()  # before anything else: articles are recorded before subscribers
        if not self.stopping.is_set():  # a SIGTERM during the first scan: straight to shutdown
            if self.leadership.leading:
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
        """Stop: at once for the run in progress (it must not send on for minutes)."""
        if not self.stopping.is_set():
            log.info("%s: stopping", sig.name if sig else "stop requested")
        self.stopping.set()
        self.mailer.interrupt()

    async def shutdown(self) -> None:
        """Stop the jobs, give a running scan and in-flight mail STOP_GRACE seconds to finish,
        then stop the HTTP server and close the state."""
        self.scheduler.pause()
        self.mailer.interrupt()
        try:
            async with asyncio.timeout(STOP_GRACE):
                # a scan in progress finishes (it may be writing files or the ledger) and
                # so does what is in flight; then nothing touches the state any more
                await self.mailer.settled()
                await self.helper.settled()
                await self.signups.settled()
                async with self.publisher.scanning, self.mailer.sending, self.bounces.reading:
                    pass
        except TimeoutError:
            log.warning("in-flight mail did not finish within %.0f s; it stays pending", STOP_GRACE)
        self.scheduler.shutdown()
        if self._http is not None:
            await self._http.stop()
        self.leadership.release()
        self.state.close()
        log.info("stopped")


def run_service(settings: Settings, config_file: Path) -> int:
    """Run until SIGTERM/SIGINT. On a SQLite state, hold its file lock the whole time (a second
    instance stops before it touches anything); on PostgreSQL, lead or stand by."""
    state = State(settings.state.url)
    if state.db.dialect == "postgresql":
        return asyncio.run(Service(settings, config_file, state).serve())
    lock = runner_lock(state, settings.cluster.name)
    with held(lock, "run"):
        return asyncio.run(Service(settings, config_file, state, lock).serve())
