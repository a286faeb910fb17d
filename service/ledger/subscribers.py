"""The subscribers the ledger has seen: their cursor, unsubscription and suspension.

A subscriber's cursor is the highest article sequence that is no longer news to them; a new
subscriber starts at the newest article, so no back catalogue is sent. An address forgotten on
request (`bantin forget`) is known only by its salted hash: it counts as suppressed and is
never written here again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func, insert, literal, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from service.ledger.db import Database
from service.ledger.deliveries import cancel_waiting
from service.ledger.keys import Keys
from service.ledger.schema import articles, forgotten, subscribers, suppressions
from service.model import Frequency, Subscriber

__all__ = ["SubscriberState", "Subscribers"]


@dataclass(frozen=True, slots=True)
class SubscriberState:
    """What the ledger holds for one address: its cursor, whether it unsubscribed, is
    suspended or on the suppression list, and its permanent failures in a row."""

    email: str
    cursor: int
    unsubscribed: bool
    suspended: bool
    failures: int = 0  # permanent failures in a row
    suppressed: bool = False  # bounced hard, complained, asked to stop by mail

    @property
    def active(self) -> bool:
        """Neither unsubscribed, suspended nor suppressed: digests go to them."""
        return not (self.unsubscribed or self.suspended or self.suppressed)


class Subscribers:
    """Per-address state: cursor, frequency last seen, unsubscribed, suspended."""

    def __init__(self, db: Database, keys: Keys) -> None:
        self.db = db
        self.keys = keys

    def barred(self, conn: Connection, keys: Sequence[str]) -> tuple[set[str], set[str]]:
        """Of ``keys`` (lower-cased addresses): those on the suppression list, and those
        forgotten (known by their salted hash only), in one query."""
        digests = {self.keys.digest(key): key for key in keys}
        rows = conn.execute(
            select(literal("s").label("kind"), suppressions.c.email.label("value"))
            .where(suppressions.c.email.in_(list(keys)))
            .union_all(
                select(literal("f").label("kind"), forgotten.c.digest.label("value")).where(
                    forgotten.c.digest.in_(list(digests))
                )
            )
        ).all()
        suppressed = {r.value for r in rows if r.kind == "s"}
        gone = {digests[r.value] for r in rows if r.kind == "f"}
        return suppressed, gone

    def min_cursor(self, frequency: Frequency | None = None) -> int | None:
        """The lowest cursor of the active subscribers (of ``frequency``, if given)."""
        conditions: list[ColumnElement[bool]] = [
            subscribers.c.unsubscribed_at.is_(None),
            subscribers.c.suspended_at.is_(None),
            ~exists().where(suppressions.c.email == subscribers.c.email),
        ]
        if frequency is not None:
            conditions.append(subscribers.c.frequency == frequency)
        with self.db.tx() as conn:
            value = conn.scalar(select(func.min(subscribers.c.cursor)).where(*conditions))
        return None if value is None else int(value)

    def sync(
        self,
        chunk: Sequence[Subscriber],
        now: datetime,
        *,
        record: bool = True,
        start: int | None = None,
    ) -> dict[str, SubscriberState]:
        """The state of each subscriber in ``chunk``; those never seen start at the newest article.

        With ``record=False`` nothing is written (previews, dry runs): unseen subscribers are
        reported as they would start. A real run records the articles it sees before it reads
        the subscribers, so a preview that counts articles not yet recorded passes ``start``,
        the sequence past those articles, to keep unseen subscribers from the back catalogue.
        """
        keys = [s.key for s in chunk]
        self.keys.salt()  # made first: making it takes a transaction of its own
        with self.db.tx() as conn:
            rows = conn.execute(
                select(
                    subscribers.c.email,
                    subscribers.c.cursor,
                    subscribers.c.unsubscribed_at,
                    subscribers.c.suspended_at,
                    subscribers.c.frequency,
                    subscribers.c.failures,
                ).where(subscribers.c.email.in_(keys))
            ).all()
            barred, gone = self.barred(conn, keys)
            barred |= gone
            found = {
                r.email: SubscriberState(
                    r.email,
                    r.cursor,
                    r.unsubscribed_at is not None,
                    r.suspended_at is not None,
                    r.failures,
                    r.email in barred,
                )
                for r in rows
            }
            frequencies = {r.email: r.frequency for r in rows}
            for key in gone:  # never written again: their state is their hash's
                found.setdefault(key, SubscriberState(key, 0, False, False, 0, True))
            missing = [s for s in chunk if s.key not in found]
            if missing:
                if start is None:
                    start = int(
                        conn.scalar(select(func.coalesce(func.max(articles.c.seq), 0))) or 0
                    )
                new_rows = {
                    s.key: {
                        "email": s.key,
                        "cursor": start,
                        "first_seen": now,
                        "frequency": s.frequency,
                        "failures": 0,
                    }
                    for s in missing
                }
                if record:  # another process may register the same address at the same moment
                    conn.execute(self.db.insert_new(subscribers, "email"), list(new_rows.values()))
                for key in new_rows:
                    found[key] = SubscriberState(key, start, False, False, 0, key in barred)
            if record:
                for s in chunk:
                    if s.key in frequencies and frequencies[s.key] != s.frequency:
                        conn.execute(
                            update(subscribers)
                            .where(subscribers.c.email == s.key)
                            .values(frequency=s.frequency)
                        )
        return found

    # -- operators' actions ------------------------------------------------------------

    def unsubscribe(self, email: str, now: datetime) -> bool:
        """Record an unsubscription; True if it is new. Outlives the address staying in the file.
        A forgotten address is not written back: it is never mailed already."""
        key = email.lower()
        self.keys.salt()  # made first: making it takes a transaction of its own
        with self.db.tx() as conn:
            if self.barred(conn, [key])[1]:
                return False
            row = conn.execute(
                select(subscribers.c.unsubscribed_at).where(subscribers.c.email == key)
            ).first()
            if row is None:
                conn.execute(
                    insert(subscribers).values(
                        email=key,
                        cursor=0,
                        first_seen=now,
                        frequency="daily",
                        failures=0,
                        unsubscribed_at=now,
                    )
                )
                return True
            if row.unsubscribed_at is not None:
                return False
            conn.execute(
                update(subscribers).where(subscribers.c.email == key).values(unsubscribed_at=now)
            )
            # what waits for them is never sent, by this host or any other, in this run or later
            cancel_waiting(conn, key, "unsubscribed", now)
            return True

    def resume(self, email: str) -> bool:
        """Lift a suspension; True if the address was suspended."""
        key = email.lower()
        with self.db.tx() as conn:
            result = conn.execute(
                update(subscribers)
                .where(subscribers.c.email == key, subscribers.c.suspended_at.is_not(None))
                .values(suspended_at=None, failures=0)
            )
            return bool(result.rowcount)

    # -- runs and status -------------------------------------------------------------------

    def addresses(self, which: str) -> list[tuple[str, datetime]]:
        """Suspended or unsubscribed addresses with the moment it happened."""
        column = (
            subscribers.c.suspended_at if which == "suspended" else subscribers.c.unsubscribed_at
        )
        with self.db.tx() as conn:
            rows = conn.execute(
                select(subscribers.c.email, column)
                .where(column.is_not(None))
                .order_by(subscribers.c.email)
            ).all()
        return [(str(e), t or datetime.min) for e, t in rows]

    def counts(self) -> dict[str, int]:
        """Suspended and unsubscribed addresses."""
        with self.db.tx() as conn:
            return {
                "suspended": int(
                    conn.scalar(select(func.count()).where(subscribers.c.suspended_at.is_not(None)))
                    or 0
                ),
                "unsubscribed": int(
                    conn.scalar(
                        select(func.count()).where(subscribers.c.unsubscribed_at.is_not(None))
                    )
                    or 0
                ),
            }
