"""WebSub: tell the hub which feeds changed, so subscribers' readers fetch them at once."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
import urllib.request
from collections.abc import Iterable

__all__ = ["ping_hub"]

log = logging.getLogger("bantin.websub")


async def ping_hub(hub: str, base_url: str, feeds: Iterable[str]) -> None:
    """POST hub.mode=publish for each changed RSS/Atom feed (JSON Feed has no hub pings).

    A hub that cannot be reached is logged and skipped: readers still poll.
    """
    for path in feeds:
        if path.endswith("feed.json"):
            continue
        body = urllib.parse.urlencode({"hub.mode": "publish", "hub.url": f"{base_url}/{path}"})
        request = urllib.request.Request(hub, data=body.encode(), method="POST")
        try:
            await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
        except OSError as exc:
            log.warning("WebSub hub %s not reached for %s: %s", hub, path, exc)
