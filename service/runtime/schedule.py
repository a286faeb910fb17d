"""When things run: cron timing (pure, testable with a fake clock) and the APScheduler wiring.

APScheduler 3.x traps handled here (see docs/gotchas.md): its cron triggers, which mishandle
DST changes (we compute fire times ourselves, cron.py), weekday numbering (cron.py translates),
the 1-second default misfire grace (we coalesce and run late jobs whenever they can run),
triggers that ignore the scheduler's zone (every trigger gets ``timezone=``), and a shutdown
that cancels running coroutines (the service stops its runs itself before shutting down).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from service.cron import parse_cron

log = logging.getLogger("bantin.scheduler")

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


class CronTrigger(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger on our own cron arithmetic (cron.Cron.next_after).

    APScheduler 3.11's CronTrigger skips the first early-morning fire time after clocks spring
    forward (agronholm/apscheduler#529) and, in the hour that comes twice when they go back,
    returns the same instant again, so the scheduler's run-time loop never ends (#1021).
    Ours always moves strictly forward and skips nothing.
    """

    def __init__(self, expression: str, zone: ZoneInfo) -> None:
        self.cron = parse_cron(expression)
        self.timezone = zone

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The first fire time after ``previous_fire_time``, else the first at or after ``now``."""
        if previous_fire_time is not None:
            return self.cron.next_after(previous_fire_time, self.timezone)
        return self.cron.next_after(now - timedelta(microseconds=1), self.timezone)

    def __str__(self) -> str:
        return f"cron[{self.cron.expression}]"


def cron_trigger(expression: str, zone: ZoneInfo) -> CronTrigger:
    """The trigger for ``expression`` in ``zone``; CronSyntaxError (a ValueError) if it is bad."""
    return CronTrigger(expression, zone)


def next_run(expression: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first time strictly after ``after`` at which ``expression`` fires in ``zone``."""
    return parse_cron(expression).next_after(after, zone)


def missed(expression: str, zone: ZoneInfo, last_run: datetime | None, now: datetime) -> bool:
    """True if ``expression`` should have fired between ``last_run`` and ``now``.

    With no run on record (a new installation) nothing was missed.
    """
    if last_run is None:
        return False
    return next_run(expression, zone, last_run) <= now


Job = Callable[[], Awaitable[Any]]


class _QuietSkips(logging.Filter):
    """APScheduler's own "maximum number of running instances reached" line is replaced by
    ours (Scheduler._skipped): what it means, and at most once per job every few minutes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


_QUIET = _QuietSkips()
_SKIP_NOTE_EVERY = 600.0  # seconds between two notes that one job is still running


class Scheduler:
    """The service's jobs on an AsyncIOScheduler in the running loop."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._scheduler = AsyncIOScheduler(timezone=zone, job_defaults=JOB_DEFAULTS)
        self._crons: dict[str, str] = {}
        self._intervals: dict[str, float] = {}
        self._noted: dict[str, float] = {}  # job id -> when we last said it was still running
        logging.getLogger("apscheduler.scheduler").addFilter(_QUIET)
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)

    def _skipped(self, event: JobEvent) -> None:
        moment = time.monotonic()
        if moment - self._noted.get(event.job_id, -_SKIP_NOTE_EVERY) >= _SKIP_NOTE_EVERY:
            self._noted[event.job_id] = moment
            log.warning(
                "%s is still running from its last start, so this start was skipped "
                "(said at most every %d minutes)",
                event.job_id,
                _SKIP_NOTE_EVERY // 60,
            )

    def start(self) -> None:
        """Start running the jobs, in the running event loop."""
        self._scheduler.start()

    def pause(self) -> None:
        """Start no more jobs; those running finish."""
        if self._scheduler.running:
            self._scheduler.pause()

    def shutdown(self) -> None:
        """Stop without waiting for running jobs (the service stops its runs itself first)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def every(self, job_id: str, seconds: float, job: Job, *, start_now: bool = True) -> None:
        """Run ``job`` every ``seconds``, the first time at once unless ``start_now`` is false; a
        job of that id that exists already keeps its timer when ``seconds`` is unchanged (a
        config reload must not push the next scan back each time) and is rescheduled when not."""
        existing = self._scheduler.get_job(job_id)
        if existing is not None and self._intervals.get(job_id) == seconds:
            return
        self._intervals[job_id] = seconds
        trigger = IntervalTrigger(seconds=seconds, timezone=self.zone)
        if existing is not None:
            existing.reschedule(trigger)
            log.info("%s now runs every %g s", job_id, seconds)
            return
        first = datetime.now(self.zone) if start_now else None
        kwargs: dict[str, Any] = {"next_run_time": first} if first else {}
        self._scheduler.add_job(job, trigger, id=job_id, name=job_id, **kwargs)

    def cron(self, job_id: str, expression: str, job: Job) -> None:
        """Run ``job`` at ``expression`` (5-field cron in the site zone); replaces a changed one."""
        if self._crons.get(job_id) == expression and self._scheduler.get_job(job_id):
            return
        trigger = cron_trigger(expression, self.zone)
        if self._scheduler.get_job(job_id):
            self._scheduler.reschedule_job(job_id, trigger=trigger)
            log.info("schedule %s is now %r", job_id, expression)
        else:
            self._scheduler.add_job(job, trigger, id=job_id, name=job_id)
        self._crons[job_id] = expression

    def remove(self, job_id: str) -> None:
        """Stop running ``job_id`` (if it is scheduled)."""
        if self._scheduler.get_job(job_id) is not None:
            self._scheduler.remove_job(job_id)
        self._crons.pop(job_id, None)
        self._intervals.pop(job_id, None)

    def once(self, job_id: str, job: Job) -> None:
        """Run ``job`` as soon as possible (catch-up runs, reloads on SIGHUP)."""
        self._scheduler.add_job(job, id=job_id, name=job_id, replace_existing=True)

    def next_times(self) -> dict[str, str]:
        """When each job runs next, by job id, in UTC (for /healthz)."""
        times = {}
        for job in self._scheduler.get_jobs():
            when = getattr(job, "next_run_time", None)
            if when is not None:  # in UTC, as every time /healthz shows
                times[job.id] = when.astimezone(UTC).isoformat(timespec="seconds")
        return times
