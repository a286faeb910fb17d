"""A one-line progress display for `bantin digest` on a terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from service.mail.outcomes import RunReport

__all__ = ["ProgressBar", "count_subscribers"]


class ProgressBar:
    """Redrawn at most ten times a second on stderr."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.last = 0.0

    def __call__(self, report: RunReport) -> None:
        moment = time.monotonic()
        if moment - self.last < 0.1:
            return
        self.last = moment
        done = report.sent + report.deferred + report.failed
        width = 30
        filled = min(width, int(width * done / self.total)) if self.total else 0
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done} messages: "
            f"{report.sent} sent, {report.deferred} deferred, {report.failed} failed"
        )
        sys.stderr.flush()


def count_subscribers(path: Path) -> int:
    """How many [[subscriber]] blocks ``path`` has (a quick count for the progress bar)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return sum(1 for line in file if line.strip().startswith("[[subscriber"))
    except OSError:
        return 0
