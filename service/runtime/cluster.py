"""Who leads: on a shared PostgreSQL state exactly one host records articles, registers
subscribers and plans digest runs; the others stand by, build, serve and help send.

The leader holds the ledger's leader lock (a PostgreSQL advisory lock on a connection of its
own) and beats its heartbeat every few seconds; a standby tries to take the lock as often. If
the leader dies, its connection (and with it the lock) goes, and a standby leads within
``cluster.failover_after`` seconds. A SQLite state is one host's: its file lock makes that host
the leader for as long as it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from service.errors import StateError
from service.ledger import State
from service.ledger.lock import DatabaseLock, RunnerLock
from service.ledger.schema import leaders
from service.runtime.health import stamp

__all__ = ["Leadership"]

log = logging.getLogger("bantin.service")


class Leadership:
    """This host's role, kept current by ``check()`` (a scheduler job)."""

    def __init__(
        self,
        state: State,
        host: str,
        lock: RunnerLock,
        *,
        held: bool,
        on_lead: Callable[[], Awaitable[None]],
        on_follow: Callable[[], Awaitable[None]],
    ) -> None:
        self.state = state
        self.host = host
        self.lock = lock
        self.leading = held  # a SQLite state's file lock is taken before the service starts
        self.on_lead = on_lead
        self.on_follow = on_follow
        self.shared = isinstance(lock, DatabaseLock)

    async def check(self) -> None:
        """Beat the heartbeat if leading (stepping down if the lock is lost), else try to lead."""
        if not self.shared:
            return
        if self.leading:
            if self.lock.alive():
                return
            self.leading = False
            log.error("%s lost the leader lock (the database went away): it stands by", self.host)
            await self.on_follow()
            return
        try:
            self.lock.acquire("run")
        except StateError as exc:
            log.debug("standing by: %s", exc)
            return
        self.leading = True
        log.info("%s leads: it records articles and plans the digest runs", self.host)
        await self.on_lead()

    def release(self) -> None:
        """Give the lead up (shutting down)."""
        if self.shared and self.leading:
            self.lock.release()
            self.leading = False

    def report(self) -> dict[str, Any]:
        """This host's role and the leader's host, pid and heartbeat, for /healthz."""
        found: dict[str, Any] = {"host": self.host, "role": "leader" if self.leading else "standby"}
        if not self.shared:
            return found
        try:
            with self.state.db.tx() as conn:
                row = conn.execute(select(leaders).where(leaders.c.name == "leader")).first()
        except StateError as exc:
            found["leader"] = None
            found["error"] = str(exc)
            return found
        if row is not None:
            found["leader"] = {
                "host": row.host,
                "pid": row.pid,
                "since": stamp(row.since),
                "heartbeat": stamp(row.heartbeat),
                "heartbeat_age": round((datetime.now(UTC) - row.heartbeat).total_seconds(), 1),
            }
        return found
