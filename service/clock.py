"""The one place that reads the wall clock. The core never calls it: ``now`` is a parameter
there; the edges (the CLI, the service, a digest run) call ``now()`` and pass the moment down."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "now"]


def now() -> datetime:
    """The current moment, timezone-aware (UTC)."""
    return datetime.now(UTC)


Clock = Callable[[], datetime]  # what a caller passes instead: tests give a fixed moment
