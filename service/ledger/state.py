"""The state database with every noun of the ledger on it (see the package's docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

from service.ledger.articles import Articles
from service.ledger.claims import Claims
from service.ledger.db import Database
from service.ledger.deliveries import Deliveries
from service.ledger.erasure import Erasure
from service.ledger.keys import Keys
from service.ledger.runs import Runs
from service.ledger.schema import leaders
from service.ledger.signups import Signups
from service.ledger.subscribers import Subscribers
from service.ledger.suppressions import Suppressions
from service.ledger.throttles import Throttles

__all__ = ["Leader", "State"]


@dataclass(frozen=True, slots=True)
class Leader:
    """Who leads a shared state: host, pid, command, since when, last heartbeat."""

    host: str
    pid: int
    command: str
    since: datetime
    heartbeat: datetime


class State:
    """The state database. One per process; cheap calls, short transactions."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        self.db = Database(url, create=create)
        self.articles = Articles(self.db)
        self.keys = Keys(self.db)
        self.subscribers = Subscribers(self.db, self.keys)
        self.deliveries = Deliveries(self.db)
        self.claims = Claims(self.db)
        self.runs = Runs(self.db)
        self.suppressions = Suppressions(self.db)
        self.signups = Signups(self.db, self.keys)
        self.throttles = Throttles(self.db, self.keys)
        self.erasure = Erasure(self.db, self.keys)

    @property
    def home(self) -> Path:
        """Where this host keeps files beside the state (the lock, the last good subscribers)."""
        return self.db.home

    def describe(self) -> str:
        """The database for messages: its file, or its URL with the password masked."""
        return self.db.describe()

    def leader(self) -> Leader | None:
        """The host leading a shared (PostgreSQL) state, as its leaders row says; None if none
        (or a SQLite state, whose lock file says who runs)."""
        with self.db.tx() as conn:
            row = conn.execute(select(leaders).where(leaders.c.name == "leader")).first()
        if row is None:
            return None
        return Leader(row.host, row.pid, row.command, row.since, row.heartbeat)

    def counts(self) -> dict[str, int]:
        """Deliveries by status, plus suspended and unsubscribed addresses."""
        return {**self.deliveries.counts(), **self.subscribers.counts()}

    def close(self) -> None:
        """Close the database's connections; the State is not used after."""
        self.db.close()
