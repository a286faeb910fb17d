"""The event loop's own errors, logged once a minute per kind: never a flood of tracebacks."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

__all__ = ["QuietLoopErrors"]

log = logging.getLogger("bantin.service")


class QuietLoopErrors:
    """An event loop exception handler: the errors of the loop itself (an accept() out of file
    descriptors, a lost connection) once a minute per kind, with how many more came."""

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
