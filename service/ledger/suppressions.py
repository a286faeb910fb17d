"""Addresses never mailed again until the operator says so: hard bounces, complaints, soft
bounces that repeat, unsubscribe mail. Each with the evidence that put it there, and every
bounce received kept for counting and for `bantin status`."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select

from service.ledger.db import Database
from service.ledger.deliveries import cancel_waiting
from service.ledger.schema import bounces, suppressions

__all__ = ["Suppressed", "Suppressions"]


@dataclass(frozen=True, slots=True)
class Suppressed:
    """An address that is not mailed: why, since when, and what said so."""

    email: str
    reason: str
    since: datetime
    evidence: dict[str, Any]


class Suppressions:
    """The suppression list, and the bounces received."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def suppress(self, email: str, reason: str, evidence: dict[str, Any], now: datetime) -> bool:
        """Suppress ``email`` (True if it was not already); what waits for it is cancelled."""
        key = email.lower()
        with self.db.tx() as conn:
            done = conn.execute(
                self.db.insert_new(suppressions, "email").values(
                    email=key,
                    reason=reason,
                    since=now,
                    evidence=json.dumps(evidence, ensure_ascii=False, default=str),
                )
            )
            cancel_waiting(conn, key, f"suppressed: {reason.replace('_', ' ')}", now)
            return bool(done.rowcount)

    def lift(self, email: str, reason: str | None = None) -> bool:
        """Take ``email`` off the list (only if suppressed for ``reason``, when given); True if
        it was on it."""
        query = delete(suppressions).where(suppressions.c.email == email.lower())
        if reason is not None:
            query = query.where(suppressions.c.reason == reason)
        with self.db.tx() as conn:
            return bool(conn.execute(query).rowcount)

    def among(self, emails: Iterable[str]) -> set[str]:
        """Which of ``emails`` (lower-cased) are suppressed."""
        wanted = list(emails)
        found: set[str] = set()
        with self.db.tx() as conn:
            for start in range(0, len(wanted), 500):
                found.update(
                    conn.scalars(
                        select(suppressions.c.email).where(
                            suppressions.c.email.in_(wanted[start : start + 500])
                        )
                    )
                )
        return found

    def all(self) -> list[Suppressed]:
        """The suppressed addresses, by address."""
        with self.db.tx() as conn:
            rows = conn.execute(select(suppressions).order_by(suppressions.c.email)).all()
        return [Suppressed(r.email, r.reason, r.since, json.loads(r.evidence)) for r in rows]

    def bounce(
        self,
        email: str,
        kind: str,
        now: datetime,
        *,
        status: str | None,
        diagnostic: str,
        delivery_id: int | None,
        way: str,
    ) -> bool:
        """Keep one bounce (or complaint) received for ``email``; False if the same report
        for the same delivery was kept already (a message read twice counts once)."""
        key = email.lower()
        with self.db.tx() as conn:
            if delivery_id is not None:
                seen = conn.scalar(
                    select(func.count()).where(
                        bounces.c.email == key,
                        bounces.c.kind == kind,
                        bounces.c.delivery_id == delivery_id,
                    )
                )
                if seen:
                    return False
            conn.execute(
                insert(bounces).values(
                    email=key,
                    kind=kind,
                    at=now,
                    status=status,
                    diagnostic=diagnostic[:1000],
                    delivery_id=delivery_id,
                    way=way,
                )
            )
        return True

    def soft_bounces(self, email: str, days: int, now: datetime) -> int:
        """How many soft bounces ``email`` had in the last ``days`` days (one per message)."""
        with self.db.tx() as conn:
            count = conn.scalar(
                select(func.count()).where(
                    bounces.c.email == email.lower(),
                    bounces.c.kind == "soft",
                    bounces.c.at >= now - timedelta(days=days),
                )
            )
        return int(count or 0)
