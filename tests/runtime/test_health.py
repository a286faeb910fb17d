"""The watchdog: /healthz says failing, with the reason, whenever something does not work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.runtime import health as health_module
from service.runtime.health import DIGEST_DEADLINE, PENDING_DEADLINE, SCAN_DEADLINE, Health

T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The health module's clock, moved by the test."""
    now = [T0]
    monkeypatch.setattr(health_module.clock, "now", lambda: now[0])
    return now


def problems(health: Health, at: datetime, **kwargs: object) -> list[str]:
    options: dict[str, object] = {"scan_interval": 60, "oldest_pending": None, "sending": False}
    options.update(kwargs)
    return health.problems(at, **options)  # type: ignore[arg-type]


def test_a_healthy_service_has_no_problems(clock: list[datetime]) -> None:
    health = Health()
    for job in ("scan", "build", "digest:daily"):
        health.begin(job)
        health.record(job, True, "ok", 0.1)
    assert problems(health, T0 + timedelta(seconds=30)) == []


def test_a_failed_scan_and_scans_that_stop_are_failures(clock: list[datetime]) -> None:
    health = Health()
    health.record("scan", True, "12 articles", 0.1)
    health.record("scan", False, "content: source directory cannot be read", 0.0)
    [reason] = problems(health, T0)
    assert reason == "the last scan failed: content: source directory cannot be read"
    health.record("scan", True, "12 articles", 0.1)
    assert problems(health, T0 + timedelta(minutes=2)) == []
    late = problems(health, T0 + timedelta(minutes=3, seconds=1))
    assert late == [f"no scan has succeeded since {T0.isoformat()}"]


def test_the_first_scan_of_a_large_tree_gets_time(clock: list[datetime]) -> None:
    health = Health()
    assert problems(health, T0 + SCAN_DEADLINE) == []
    assert problems(health, T0 + SCAN_DEADLINE + timedelta(minutes=4))


def test_stuck_jobs_and_failed_runs_are_named(clock: list[datetime]) -> None:
    health = Health()
    health.begin("digest:daily")
    clock[0] = T0 + DIGEST_DEADLINE
    health.record("scan", True, "ok", 0.1)
    assert problems(health, clock[0]) == []
    clock[0] = T0 + DIGEST_DEADLINE + timedelta(seconds=1)
    assert problems(health, clock[0]) == [f"digest:daily has been running since {T0.isoformat()}"]
    health.record("digest:daily", False, "stopped early: mail server 535", 3.0)
    assert problems(health, clock[0]) == [
        "the last digest:daily failed: stopped early: mail server 535"
    ]
    health.record("digest:daily", True, "3 sent", 1.0)
    assert problems(health, clock[0]) == []


def test_mail_that_waits_too_long_is_a_failure_unless_it_is_being_sent(
    clock: list[datetime],
) -> None:
    health = Health()
    health.record("scan", True, "ok", 0.1)
    waiting = T0 - PENDING_DEADLINE - timedelta(minutes=1)
    assert problems(health, T0, oldest_pending=waiting) == [
        f"mail has waited in the ledger since {waiting.isoformat()}"
    ]
    assert problems(health, T0, oldest_pending=waiting, sending=True) == []
    assert problems(health, T0, oldest_pending=T0 - timedelta(hours=1)) == []


def test_every_moment_is_shown_in_utc_whatever_zone_it_came_in() -> None:
    from zoneinfo import ZoneInfo

    seven = datetime(2026, 12, 1, 8, 0, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh"))
    assert health_module.stamp(seven) == "2026-12-01T01:00:00+00:00"
    assert health_module.stamp(None) is None
