"""`bantin forget`: an address's personal data erased from the state, on request.

Everything that names the address goes: its sign-up and consent record, its ledger row, its
deliveries, the bounces and suppression recorded for it, its rate-limit count, and any mention
in the runs' summaries. What stays is a salted hash (``forgotten``): were the operators' file
to list the address still, it is recognised and never mailed, until the person signs up and
confirms anew. On SQLite the freed bytes are overwritten and the write-ahead log emptied, so
the address is not left in the database file either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from service.ledger.db import Database
from service.ledger.keys import Keys
from service.ledger.schema import (
    bounces,
    deliveries,
    delivery_items,
    forgotten,
    runs,
    signups,
    subscribers,
    suppressions,
    throttles,
)
from service.ledger.throttles import address_key, stored_key

__all__ = ["Erased", "Erasure"]


@dataclass(frozen=True, slots=True)
class Erased:
    """What forgetting one address removed, to say so: rows by what they were."""

    removed: dict[str, int] = field(default_factory=dict)  # what -> rows
    already: bool = False  # its hash was kept already: it had been forgotten before

    @property
    def total(self) -> int:
        """Rows removed in all."""
        return sum(self.removed.values())


class Erasure:
    """Forgetting addresses, keeping only their salted hash."""

    def __init__(self, db: Database, keys: Keys) -> None:
        self.db = db
        self.keys = keys

    def forget(self, email: str, now: datetime) -> Erased:
        """Erase every row that names ``email``; keep its salted hash. What was removed."""
        key = email.lower()
        digest = self.keys.digest(key)
        removed: dict[str, int] = {}
        with self.db.tx() as conn:
            secure = self._secure_delete(conn, True)
            try:
                ids = select(deliveries.c.id).where(deliveries.c.email == key).scalar_subquery()
                own_items = (delivery_items.c.email == key) | delivery_items.c.delivery_id.in_(ids)
                throttle = stored_key(self.keys, address_key(key))
                steps = [
                    ("sign-up with its consent record", signups, signups.c.email == key),
                    ("subscriber record", subscribers, subscribers.c.email == key),
                    ("delivery items", delivery_items, own_items),
                    ("deliveries", deliveries, deliveries.c.email == key),
                    ("bounces and complaints", bounces, bounces.c.email == key),
                    ("suppression", suppressions, suppressions.c.email == key),
                    ("rate-limit count", throttles, throttles.c.key == throttle),
                ]
                for what, table, where in steps:
                    count = int(conn.execute(delete(table).where(where)).rowcount or 0)
                    if count:
                        removed[what] = count
                mentions = self._scrub_runs(conn, key)
                if mentions:
                    removed["mentions in run summaries"] = mentions
                # RETURNING, not rowcount: a skipped row's count is not the same on every driver
                kept = conn.execute(
                    self.db.insert_new(forgotten, "digest")
                    .values(digest=digest, since=now)
                    .returning(forgotten.c.digest)
                ).first()
            finally:
                self._secure_delete(conn, secure)
        self._checkpoint()
        return Erased(removed, already=kept is None)

    def is_forgotten(self, email: str) -> bool:
        """Whether ``email`` was forgotten (and has not signed up again since)."""
        digest = self.keys.digest(email.lower())  # first: making the salt takes a transaction
        with self.db.tx() as conn:
            found = conn.scalar(select(forgotten.c.digest).where(forgotten.c.digest == digest))
        return found is not None

    @staticmethod
    def _scrub_runs(conn: Connection, key: str) -> int:
        """Replace the address where a run's summary quotes it (a server's reply may)."""
        pattern = re.compile(re.escape(key), re.IGNORECASE)
        count = 0
        for kind, detail in conn.execute(select(runs.c.kind, runs.c.detail)).all():
            if pattern.search(detail):
                conn.execute(
                    update(runs)
                    .where(runs.c.kind == kind)
                    .values(detail=pattern.sub("[erased]", detail))
                )
                count += 1
        return count

    def _secure_delete(self, conn: Connection, on: bool) -> bool:
        """SQLite: overwrite what is deleted with zeros (on this connection); the old setting."""
        if self.db.dialect != "sqlite":
            return on
        before = bool(conn.exec_driver_sql("PRAGMA secure_delete").scalar())
        conn.exec_driver_sql(f"PRAGMA secure_delete={'ON' if on else 'OFF'}")
        return before

    def _checkpoint(self) -> None:
        """SQLite: copy the log into the database and empty it, so no old page lingers there."""
        if self.db.dialect != "sqlite":
            return
        with self.db.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
