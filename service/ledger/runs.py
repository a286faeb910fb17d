"""The last run of each job (scan, build, digest:daily, ...), for status and catch-up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from service.ledger.db import Database
from service.ledger.schema import runs

__all__ = ["Run", "Runs"]


@dataclass(frozen=True, slots=True)
class Run:
    """The last run of one kind of job: its start, its end, whether it went through, its detail."""

    kind: str
    started: datetime
    finished: datetime
    ok: bool
    detail: str


class Runs:
    """One row per kind of run: the last one."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(
        self, kind: str, started: datetime, finished: datetime, ok: bool, detail: str
    ) -> None:
        """Keep this run as the last of its ``kind``, replacing the one before."""
        values = {
            "started": started,
            "finished": finished,
            "ok": ok,
            "detail": detail,
        }
        with self.db.tx() as conn:
            if conn.execute(update(runs).where(runs.c.kind == kind).values(**values)).rowcount == 0:
                conn.execute(insert(runs).values(kind=kind, **values))

    def all(self) -> list[Run]:
        """The last run of each kind, ordered by kind."""
        with self.db.tx() as conn:
            rows = conn.execute(select(runs).order_by(runs.c.kind)).all()
        return [
            Run(
                r.kind,
                r.started or datetime.min,
                r.finished or datetime.min,
                bool(r.ok),
                r.detail,
            )
            for r in rows
        ]
