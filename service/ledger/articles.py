"""The articles the ledger has seen: each gets a sequence number when first seen published."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import bindparam, func, select, update

from service.ledger.db import Database
from service.ledger.schema import articles, event_revisions
from service.ledger.snapshot import identities_of

__all__ = ["Articles"]

_PLACE = (
    update(articles)
    .where(articles.c.id == bindparam("b_id"))
    .values(fingerprint=bindparam("b_fingerprint"), source=bindparam("b_source"))
)


class Articles:
    """Sequence numbers of articles: the order in which they became news."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # id -> (fingerprint, source) of the articles in the ledger (see record)
        self._recorded: dict[str, tuple[str | None, str | None]] | None = None

    def record(self, entries: Iterable[tuple[str, str, str]], now: datetime) -> int:
        """Give every published (id, fingerprint, source) not seen before its sequence number,
        and keep the fingerprint and path of those seen before current; return how many were
        new.

        The ledger's ids are read once per State and kept: a service with 100,000 articles
        calls this after every edit. Articles are only ever added, by the one process that
        holds the runner lock, so the copy cannot go stale.
        """
        with self.db.tx() as conn:
            if self._recorded is None:
                rows = conn.execute(
                    select(articles.c.id, articles.c.fingerprint, articles.c.source)
                )
                self._recorded = {str(i): (f, s) for i, f, s in rows}
            known = self._recorded
            new: dict[str, tuple[str, str]] = {}
            changed: dict[str, tuple[str, str]] = {}
            for ident, fingerprint, source in entries:
                if ident not in known:
                    new[ident] = (fingerprint, source)
                elif known[ident] != (fingerprint, source):
                    changed[ident] = (fingerprint, source)
            if new:
                conn.execute(
                    self.db.insert_new(articles, "id"),
                    [
                        {"id": i, "first_seen": now, "fingerprint": f, "source": s}
                        for i, (f, s) in new.items()
                    ],
                )
            if changed:
                conn.execute(
                    _PLACE,
                    [
                        {"b_id": i, "b_fingerprint": f, "b_source": s}
                        for i, (f, s) in changed.items()
                    ],
                )
        known.update(new)
        known.update(changed)
        return len(new)

    def record_events(self, revisions: Iterable[tuple[str, str, str]], now: datetime) -> None:
        """Keep each (article id, revision, events as JSON) not kept yet, numbered in the order
        seen: what an article's sessions were at that revision, for the digests that say what
        changed and the SEQUENCE numbers of calendars."""
        wanted = {(a, r): e for a, r, e in revisions}
        if not wanted:
            return
        with self.db.tx() as conn:
            numbers: dict[str, int] = {}
            seen: set[tuple[str, str]] = set()
            for article_id, revision, number in conn.execute(
                select(
                    event_revisions.c.article_id,
                    event_revisions.c.revision,
                    event_revisions.c.number,
                ).where(event_revisions.c.article_id.in_({a for a, _ in wanted}))
            ):
                seen.add((str(article_id), str(revision)))
                numbers[article_id] = max(numbers.get(article_id, 0), int(number))
            fresh = []
            for (article_id, revision), events in wanted.items():
                if (article_id, revision) in seen:
                    continue
                numbers[article_id] = numbers.get(article_id, 0) + 1
                fresh.append(
                    {
                        "article_id": article_id,
                        "revision": revision,
                        "number": numbers[article_id],
                        "events": events,
                        "first_seen": now,
                    }
                )
            if fresh:
                conn.execute(self.db.insert_new(event_revisions, "article_id", "revision"), fresh)

    def event_history(self, article_id: str) -> list[tuple[str, str]]:
        """(revision, events as JSON) of ``article_id``, the first seen first."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(event_revisions.c.revision, event_revisions.c.events)
                .where(event_revisions.c.article_id == article_id)
                .order_by(event_revisions.c.number)
            )
            return [(str(r), str(e)) for r, e in rows]

    def identities(self) -> tuple[dict[str, str], dict[str, str]]:
        """How a moved file is known again: (fingerprint -> id, path -> id) of the recorded
        articles, the later one winning where two share a fingerprint."""
        with self.db.tx() as conn:  # the same statement as snapshot.IDENTITIES_SQL
            rows = conn.execute(
                select(articles.c.id, articles.c.fingerprint, articles.c.source)
                .where(articles.c.fingerprint.is_not(None))
                .order_by(articles.c.seq)
            )
            return identities_of(tuple(row) for row in rows)

    def last_seq(self) -> int:
        """The newest sequence number given so far; 0 before any article is recorded."""
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
        """Those of ``ids`` that the ledger has recorded (given a sequence number)."""
        wanted = list(ids)
        found: set[str] = set()
        with self.db.tx() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                found.update(conn.scalars(select(articles.c.id).where(articles.c.id.in_(chunk))))
        return found
