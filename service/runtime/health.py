"""What /healthz reports: the last run of each job, the reload state, what is pending."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from service import clock

__all__ = ["Health"]


def _stamp() -> str:
    return clock.now().isoformat(timespec="seconds")


@dataclass
class Health:
    """The service's own account of itself, kept as its jobs run."""

    started: datetime = field(default_factory=clock.now)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=lambda: {"ok": True, "error": None})
    subscribers: dict[str, Any] = field(default_factory=lambda: {"ok": True, "error": None})

    def record(self, job: str, ok: bool, detail: str, seconds: float) -> None:
        self.runs[job] = {"at": _stamp(), "ok": ok, "detail": detail, "seconds": round(seconds, 3)}

    def config_refused(self, error: str) -> None:
        self.config = {"ok": False, "error": error, "at": _stamp()}

    def config_applied(self) -> None:
        self.config = {"ok": True, "error": None, "at": _stamp()}

    def subscribers_refused(self, error: str) -> None:
        self.subscribers = {"ok": False, "error": error, "at": _stamp()}

    def subscribers_applied(self, count: int) -> None:
        self.subscribers = {"ok": True, "error": None, "count": count, "at": _stamp()}

    @property
    def healthy(self) -> bool:
        return all(run["ok"] for run in self.runs.values())
