"""Rate limits kept in the state, so that every host sharing it counts the same: N hosts with
an in-process counter each would let N times the mail through.

A throttle counts events under a key (a client, an address, everything) in a window that opens
with the first event and lasts ``window``; one statement counts and reads, so two hosts counting
at once never both see room for one. Keys are stored as salted hashes: no address is kept here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import case, delete
from sqlalchemy.dialects import postgresql, sqlite

from service.ledger.db import Database
from service.ledger.keys import Keys
from service.ledger.schema import throttles

__all__ = ["LONGEST_WINDOW", "Throttles", "address_key", "client_key", "stored_key"]

LONGEST_WINDOW = timedelta(days=1)  # no throttle counts longer: rows older than this go


def address_key(email: str) -> str:
    """The throttle key of the mail sent to ``email``."""
    return f"address:{email.lower()}"


def client_key(ip: str) -> str:
    """The throttle key of the requests of the client at ``ip``."""
    return f"client:{ip}"


def stored_key(keys: Keys, key: str) -> str:
    """What the state keeps of the throttle key ``key``: its salted hash."""
    return keys.digest(f"throttle:{key}")


class Throttles:
    """Counters of recent events by key, shared by every host."""

    def __init__(self, db: Database, keys: Keys) -> None:
        self.db = db
        self.keys = keys

    def hit(self, key: str, window: timedelta, now: datetime) -> int:
        """Count one event for ``key``; the events in its current window, this one included."""
        if window > LONGEST_WINDOW:
            raise ValueError(f"a throttle window is at most {LONGEST_WINDOW}")
        digest = stored_key(self.keys, key)
        dialect = postgresql if self.db.dialect == "postgresql" else sqlite
        statement = dialect.insert(throttles).values(key=digest, since=now, count=1)
        stale = throttles.c.since <= now - window
        statement = statement.on_conflict_do_update(
            index_elements=["key"],
            set_={
                "since": case((stale, now), else_=throttles.c.since),
                "count": case((stale, 1), else_=throttles.c.count + 1),
            },
        ).returning(throttles.c.count)
        with self.db.tx() as conn:
            return int(conn.execute(statement).scalar_one())

    def purge(self, now: datetime) -> int:
        """Drop the counts whose window has surely passed; how many went."""
        with self.db.tx() as conn:
            gone = conn.execute(delete(throttles).where(throttles.c.since <= now - LONGEST_WINDOW))
        return int(gone.rowcount or 0)
