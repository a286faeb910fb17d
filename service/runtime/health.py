"""The service's own account of itself, and the watchdog that judges it for /healthz.

Every job says when it starts and how it ended. The service is failing, with a reason, when
the last scan or build raised, no scan has succeeded for several intervals, a job has run far
past its deadline (stuck), the last run of a digest stopped on a fault, or mail has waited in
the ledger too long. Times are UTC, written with their offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service import clock

__all__ = ["DIGEST_DEADLINE", "PENDING_DEADLINE", "SCAN_DEADLINE", "Health", "JobHealth"]

SCAN_DEADLINE = timedelta(minutes=15)  # a scan or build running longer is stuck
DIGEST_DEADLINE = timedelta(hours=4)  # a digest run longer is stuck
PENDING_DEADLINE = timedelta(hours=12)  # mail waiting longer than this is a failure to report


def stamp(moment: datetime | None) -> str | None:
    """A moment as /healthz shows it: in UTC, ISO 8601 to the second with its offset, whatever
    zone it came in (PostgreSQL answers in its session's); None stays None."""
    return moment.astimezone(UTC).isoformat(timespec="seconds") if moment is not None else None


@dataclass
class JobHealth:
    """One job: when it last ran, how it ended, when it last succeeded, whether it runs now."""

    running_since: datetime | None = None
    finished: datetime | None = None
    ok: bool = True
    detail: str = ""
    seconds: float = 0.0
    last_success: datetime | None = None

    def report(self) -> dict[str, Any]:
        """This job's entry in the ``runs`` of /healthz."""
        return {
            "at": stamp(self.finished),
            "ok": self.ok,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "last_success": stamp(self.last_success),
            "running_since": stamp(self.running_since),
        }


@dataclass
class Health:
    """Kept by the service as its jobs run; ``problems()`` is the watchdog's verdict."""

    started: datetime = field(default_factory=lambda: clock.now())
    jobs: dict[str, JobHealth] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=lambda: {"ok": True, "error": None})
    subscribers: dict[str, Any] = field(default_factory=lambda: {"ok": True, "error": None})

    def begin(self, job: str) -> None:
        """``job`` has started; it counts as stuck if it runs past its deadline."""
        self.jobs.setdefault(job, JobHealth()).running_since = clock.now()

    def record(self, job: str, ok: bool, detail: str, seconds: float) -> None:
        """``job`` ended: ``ok`` or not, with a one-line ``detail``."""
        moment = clock.now()
        state = self.jobs.setdefault(job, JobHealth())
        state.running_since = None
        state.finished, state.ok, state.detail, state.seconds = moment, ok, detail, seconds
        if ok:
            state.last_success = moment

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        """Every job's report, by job name."""
        return {name: job.report() for name, job in sorted(self.jobs.items())}

    def problems(
        self,
        now: datetime,
        *,
        scan_interval: float,
        oldest_pending: datetime | None,
        sending: bool,
    ) -> list[str]:
        """Why the service is failing now; empty when it is healthy."""
        found: list[str] = []
        quiet = max(timedelta(seconds=3 * scan_interval), timedelta(minutes=2))
        scan = self.jobs.get("scan")
        if scan is not None and not scan.ok:
            found.append(f"the last scan failed: {scan.detail}")
        last_scan = scan.last_success if scan is not None else None
        # the first scan of a large tree may take long; after it, a scan every interval
        allowed = quiet if last_scan is not None else quiet + SCAN_DEADLINE
        since = last_scan or self.started
        if now - since > allowed:
            found.append(f"no scan has succeeded since {stamp(since)}")
        for name, job in sorted(self.jobs.items()):
            deadline = DIGEST_DEADLINE if name.startswith("digest") else SCAN_DEADLINE
            if job.running_since is not None and now - job.running_since > deadline:
                found.append(f"{name} has been running since {stamp(job.running_since)}")
            elif name != "scan" and not job.ok:
                found.append(f"the last {name} failed: {job.detail}")
        if oldest_pending is not None and not sending and now - oldest_pending > PENDING_DEADLINE:
            found.append(f"mail has waited in the ledger since {stamp(oldest_pending)}")
        return found

    def config_refused(self, error: str) -> None:
        """An edit of the config file was refused with ``error``; the old configuration runs on."""
        self.config = {"ok": False, "error": error, "at": stamp(clock.now())}

    def config_applied(self) -> None:
        """An edit of the config file was applied."""
        self.config = {"ok": True, "error": None, "at": stamp(clock.now())}

    def subscribers_refused(self, error: str) -> None:
        """An edit of the subscribers file was refused with ``error``; the last good one is used."""
        self.subscribers = {"ok": False, "error": error, "at": stamp(clock.now())}

    def subscribers_applied(self, count: int) -> None:
        """An edit of the subscribers file was applied: ``count`` subscribers."""
        self.subscribers = {"ok": True, "error": None, "count": count, "at": stamp(clock.now())}
