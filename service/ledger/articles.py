"""The articles the ledger has seen: each gets a sequence number when first seen published."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, insert, select

from service.ledger.db import Database
from service.ledger.schema import articles, timestamp

__all__ = ["Articles"]


class Articles:
    """Sequence numbers of articles: the order in which they became news."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._recorded: set[str] | None = None  # article ids in the ledger (see record)

    def record(self, ids: Iterable[str], now: datetime) -> int:
        """Give every published article not seen before its sequence number; return how many.

        The ids already recorded are read once per State and kept: a service with 100,000
        articles calls this after every edit. Articles are only ever added, by the one process
        that holds the runner lock, so the copy cannot go stale.
        """
        with self.db.tx() as conn:
            if self._recorded is None:
                self._recorded = set(conn.scalars(select(articles.c.id)))
            known = self._recorded
            new = [i for i in ids if i not in known]
            if new:
                conn.execute(
                    insert(articles), [{"id": i, "first_seen": timestamp(now)} for i in new]
                )
        known.update(new)
        return len(new)

    def last_seq(self) -> int:
        with self.db.tx() as conn:
            return int(conn.scalar(select(func.coalesce(func.max(articles.c.seq), 0))) or 0)

    def after(self, seq: int) -> list[tuple[int, str]]:
        """(seq, id) of the articles first seen after ``seq``, oldest first."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(articles.c.seq, articles.c.id)
                .where(articles.c.seq > seq)
                .order_by(articles.c.seq)
            )
            return [(int(s), str(i)) for s, i in rows]

    def seen(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        found: set[str] = set()
        with self.db.tx() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                found.update(conn.scalars(select(articles.c.id).where(articles.c.id.in_(chunk))))
        return found
