"""Deliveries: one row per message, committed before it is sent, marked on the server's reply.

A kill at any moment loses nothing: a pending row is sent again by the next run, with the same
Message-ID, so at most the messages in flight at the kill arrive twice.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from service.ledger.db import Database, Prepared
from service.ledger.schema import (
    deliveries,
    delivery_items,
    subscribers,
)
from service.model import Frequency, Subscriber

__all__ = [
    "HELD",
    "ROW",
    "SUSPEND_AFTER",
    "Claim",
    "Deliveries",
    "Delivery",
    "MessageIds",
    "Problem",
    "cancel_waiting",
    "categories_of",
    "categories_text",
    "with_items",
]

SUSPEND_AFTER = 3  # permanent failures in a row
MessageIds = Callable[[str, Sequence[str]], str]  # (email, article ids) -> Message-ID

# Statements of the per-message hot path, built once (building one costs more than running it).
_SENT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        status="sent",
        sent_at=bindparam("at"),
        last_attempt=bindparam("at"),
        attempts=deliveries.c.attempts + 1,
        code=250,
        reply=None,
    )
)
_ATTEMPT = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        last_attempt=bindparam("at"),
        attempts=deliveries.c.attempts + 1,
        code=bindparam("b_code"),
        reply=bindparam("b_reply"),
    )
)
_CLEAR_FAILURES = (
    update(subscribers)
    .where(subscribers.c.email == bindparam("b_email"), subscribers.c.failures != 0)
    .values(failures=0)
)
_COUNT_FAILURE = (
    update(subscribers)
    .where(subscribers.c.email == bindparam("b_email"))
    .values(failures=subscribers.c.failures + 1)
)
_FAILURES = select(subscribers.c.failures).where(subscribers.c.email == bindparam("b_email"))
_SUSPEND = (
    update(subscribers)
    .where(subscribers.c.email == bindparam("b_email"), subscribers.c.suspended_at.is_(None))
    .values(suspended_at=bindparam("at"))
)
_TAKEN = select(
    delivery_items.c.email, delivery_items.c.article_id, delivery_items.c.revision
).where(
    delivery_items.c.email.in_(bindparam("emails", expanding=True)),
    delivery_items.c.article_id.in_(bindparam("ids", expanding=True)),
)
_ITEM_COLUMNS = ("email", "article_id", "revision", "delivery_id", "previous")
_COPY_ITEMS = f"COPY delivery_items ({', '.join(_ITEM_COLUMNS)}) FROM STDIN"
_item_row = operator.itemgetter(*_ITEM_COLUMNS)  # a row of COPY, in the order it names
_ADVANCE = (
    update(subscribers)
    .where(
        subscribers.c.email.in_(bindparam("emails", expanding=True)),
        subscribers.c.cursor < bindparam("b_cursor"),
    )
    .values(cursor=bindparam("b_cursor"))
)


@dataclass(frozen=True, slots=True)
class Claim:
    """One digest to create: the subscriber and the ids of the articles it carries."""

    subscriber: Subscriber
    frequency: Frequency
    article_ids: tuple[str, ...]
    # of the articles with events: the revision sent, and for an update the one it replaces
    revisions: Mapping[str, str] = field(default_factory=dict)
    previous: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A ledger row that still has to reach the server, with what composing it needs."""

    id: int
    email: str
    frequency: Frequency
    message_id: str
    article_ids: tuple[str, ...]
    attempts: int
    address: str | None = None  # as written in the subscribers file (email is lower-cased)
    name: str | None = None
    categories: frozenset[str] | None = None  # the subscriber's category slugs
    # article id -> revision of its events as recorded, and the revision an update replaces
    revisions: Mapping[str, str] = field(default_factory=dict)
    previous: Mapping[str, str] = field(default_factory=dict)

    @property
    def subscriber(self) -> Subscriber:
        """The subscriber this message is for, as far as composing it needs."""
        return Subscriber(
            email=self.address or self.email,
            name=self.name,
            frequency=self.frequency,
            categories=self.categories,
        )


def categories_text(slugs: frozenset[str] | None) -> str | None:
    """How a subscriber's categories are kept on a delivery row (None: every category)."""
    return None if slugs is None else ",".join(sorted(slugs))


def categories_of(text: str | None) -> frozenset[str] | None:
    return None if text is None else frozenset(filter(None, text.split(",")))


@dataclass(frozen=True, slots=True)
class Problem:
    """A delivery that failed or is waiting, for `bantin status`."""

    email: str
    status: str
    attempts: int
    code: int | None
    reply: str | None
    when: datetime | None


# A claim that never lapses within a run: the delivery waits for the next digest run.
HELD = datetime(9999, 12, 31, tzinfo=UTC)


def cancel_waiting(conn: Connection, email: str, reason: str, now: datetime) -> None:
    """Cancel every delivery still waiting for ``email`` (unsubscribed, suspended): no host
    sends it afterwards, whatever run it is in."""
    conn.execute(
        update(deliveries)
        .where(deliveries.c.email == email.lower(), deliveries.c.status == "pending")
        .values(status="cancelled", reply=reason, last_attempt=now)
    )


# the columns a Delivery is made of (see with_items)
ROW = (
    deliveries.c.id,
    deliveries.c.email,
    deliveries.c.frequency,
    deliveries.c.message_id,
    deliveries.c.attempts,
    deliveries.c.address,
    deliveries.c.name,
    deliveries.c.categories,
)


def with_items(conn: Connection, rows: Sequence[Any]) -> list[Delivery]:
    """Deliveries from ``rows`` (of ROW), each with its article ids and event revisions."""
    items: dict[int, list[str]] = {}
    revisions: dict[int, dict[str, str]] = {}
    previous: dict[int, dict[str, str]] = {}
    for start in range(0, len(rows), 500):
        ids = [r.id for r in rows[start : start + 500]]
        for delivery_id, article_id, revision, before in conn.execute(
            select(
                delivery_items.c.delivery_id,
                delivery_items.c.article_id,
                delivery_items.c.revision,
                delivery_items.c.previous,
            )
            .where(delivery_items.c.delivery_id.in_(ids))
            .order_by(delivery_items.c.article_id)
        ):
            items.setdefault(delivery_id, []).append(article_id)
            if revision:
                revisions.setdefault(delivery_id, {})[article_id] = revision
            if before:
                previous.setdefault(delivery_id, {})[article_id] = before
    return [
        Delivery(
            r.id,
            r.email,
            r.frequency,
            r.message_id,
            tuple(items.get(r.id, ())),
            r.attempts,
            r.address,
            r.name,
            categories_of(r.categories),
            revisions.get(r.id, {}),
            previous.get(r.id, {}),
        )
        for r in rows
    ]


class Deliveries:
    """The messages: claimed, pending, sent, failed or cancelled."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sent = Prepared(db.engine, _SENT)
        self._clear = Prepared(db.engine, _CLEAR_FAILURES)
        # ten or so rows per message: SQLAlchemy's per-row parameter building cost ~0.1 ms of
        # the sending process per message, the driver's executemany a fraction of it
        self._items = Prepared(db.engine, insert(delivery_items))

    def claim(
        self,
        claims: Sequence[Claim],
        advance: Iterable[str],
        cursor: int,
        message_id: MessageIds,
        now: datetime,
        run: str | None = None,
    ) -> list[Delivery]:
        """Commit a pending delivery per claim and move the cursors of ``advance`` to ``cursor``.

        Articles already delivered to a subscriber are dropped from their claim (the primary key
        forbids a second delivery); a claim left empty creates nothing. One query finds what is
        taken for the whole chunk, and the inserts are batched: this runs once per subscriber.
        The rows belong to digest run ``run``: any host helping that run may send them.
        """
        created: list[Delivery] = []
        with self.db.tx() as conn:
            taken: set[tuple[str, str, str]] = set()
            emails = [c.subscriber.key for c in claims]
            wanted = sorted({i for c in claims for i in c.article_ids})
            for start in range(0, len(emails), 400):
                taken.update(
                    (e, i, r)
                    for e, i, r in conn.execute(
                        _TAKEN, {"emails": emails[start : start + 400], "ids": wanted}
                    )
                )
            rows: list[dict[str, Any]] = []
            kept: list[tuple[Claim, tuple[str, ...], str]] = []
            for claim in claims:
                email = claim.subscriber.key
                ids = tuple(
                    i
                    for i in claim.article_ids
                    if (email, i, claim.revisions.get(i, "")) not in taken
                )
                if not ids:
                    continue
                mid = message_id(email, ids)
                kept.append((claim, ids, mid))
                rows.append(
                    {
                        "email": email,
                        "frequency": claim.frequency,
                        "message_id": mid,
                        "status": "pending",
                        "created_at": now,
                        "attempts": 0,
                        "address": claim.subscriber.email,
                        "name": claim.subscriber.name,
                        "categories": categories_text(claim.subscriber.categories),
                        "run": run,
                    }
                )
            if rows:
                result = conn.execute(
                    insert(deliveries).returning(deliveries.c.id, sort_by_parameter_order=True),
                    rows,
                )
                new_ids = [int(row[0]) for row in result]
                items = [
                    {
                        "email": claim.subscriber.key,
                        "article_id": i,
                        "delivery_id": delivery_id,
                        "revision": claim.revisions.get(i, ""),
                        "previous": claim.previous.get(i),
                    }
                    for delivery_id, (claim, ids, _) in zip(new_ids, kept, strict=True)
                    for i in ids
                ]
                self._insert_items(conn, items)
                created = [
                    Delivery(
                        delivery_id,
                        claim.subscriber.key,
                        claim.frequency,
                        mid,
                        ids,
                        0,
                        claim.subscriber.email,
                        claim.subscriber.name,
                        claim.subscriber.categories,
                        {i: claim.revisions[i] for i in ids if claim.revisions.get(i)},
                        {i: claim.previous[i] for i in ids if claim.previous.get(i)},
                    )
                    for delivery_id, (claim, ids, mid) in zip(new_ids, kept, strict=True)
                ]
            keys = list(advance)
            for start in range(0, len(keys), 500):
                conn.execute(_ADVANCE, {"emails": keys[start : start + 500], "b_cursor": cursor})
        return created

    def updates(
        self, emails: Sequence[str], current: Mapping[str, str]
    ) -> dict[str, dict[str, str]]:
        """The event updates ``emails`` are owed: for each address, the articles (of
        ``current``: article id -> revision of its events now) of which it was sent another
        revision, with the revision it was sent last.

        Nothing is owed for an article an address never got, or whose current revision it
        got or is about to get, or while a message carrying it still waits to be sent (that
        one is composed from the article as it is then; see ``restamp``).
        """
        if not emails or not current:
            return {}
        found: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
        with self.db.tx() as conn:
            for start in range(0, len(emails), 400):
                rows = conn.execute(
                    select(
                        delivery_items.c.email,
                        delivery_items.c.article_id,
                        delivery_items.c.revision,
                        deliveries.c.id,
                        deliveries.c.status,
                    )
                    .join(deliveries, deliveries.c.id == delivery_items.c.delivery_id)
                    .where(
                        delivery_items.c.email.in_(emails[start : start + 400]),
                        delivery_items.c.article_id.in_(list(current)),
                    )
                )
                for email, article_id, revision, delivery_id, status in rows:
                    found.setdefault((email, article_id), []).append(
                        (delivery_id, revision, status)
                    )
        owed: dict[str, dict[str, str]] = {}
        for (email, article_id), sent in found.items():
            now = current[article_id]
            if any(s == "pending" or (r == now and s == "sent") for _, r, s in sent):
                continue
            got = [(d, r) for d, r, s in sent if s == "sent" and r]
            if got:
                owed.setdefault(email, {})[article_id] = max(got)[1]
        return owed

    def restamp(self, delivery_id: int, article_id: str, revision: str) -> bool:
        """Record that delivery ``delivery_id`` carries ``article_id`` at ``revision`` of its
        events (its sessions changed while it waited); False if the address has that
        revision in another message already (this one then carries it twice, harmlessly)."""
        with self.db.tx() as conn:
            email = conn.scalar(select(deliveries.c.email).where(deliveries.c.id == delivery_id))
            has = conn.scalar(
                select(func.count()).where(
                    delivery_items.c.email == email,
                    delivery_items.c.article_id == article_id,
                    delivery_items.c.revision == revision,
                )
            )
            if has:
                return False
            conn.execute(
                update(delivery_items)
                .where(
                    delivery_items.c.delivery_id == delivery_id,
                    delivery_items.c.article_id == article_id,
                )
                .values(revision=revision)
            )
        return True

    def address_of(self, delivery_id: int) -> str | None:
        """The address delivery ``delivery_id`` was for (None if there is no such delivery)."""
        with self.db.tx() as conn:
            return conn.scalar(select(deliveries.c.email).where(deliveries.c.id == delivery_id))

    def by_message_id(self, message_id: str) -> list[tuple[int, str]]:
        """(delivery id, address) of the deliveries that carried ``message_id``."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(deliveries.c.id, deliveries.c.email)
                .where(deliveries.c.message_id == message_id)
                .order_by(deliveries.c.id)
            ).all()
        return [(r.id, r.email) for r in rows]

    def _insert_items(self, conn: Connection, items: list[dict[str, Any]]) -> None:
        """The claimed articles of each delivery; on PostgreSQL by COPY (claiming 5,000
        subscribers 10 articles each took 0.53-0.56 s of CPU, against 1.01-1.21 s with the
        batched INSERT)."""
        driver = conn.connection.driver_connection
        # (psycopg 3 only, as Database.run_many: another driver named in state.url inserts)
        if self.db.dialect != "postgresql" or driver is None or not hasattr(driver, "pipeline"):
            conn.exec_driver_sql(self._items.sql, self._items.parameters(items))
            return
        with driver.cursor() as cursor, cursor.copy(_COPY_ITEMS) as copy:
            for item in items:
                copy.write_row(_item_row(item))

    def pending(self) -> list[Delivery]:
        """Deliveries committed but not acknowledged (a crash, a 4xx, a dropped connection)."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(*ROW).where(deliveries.c.status == "pending").order_by(deliveries.c.id)
            ).all()
            return with_items(conn, rows)

    # The three below run once per message: their statements are built once, at import.

    def mark_sent_many(self, sent: Sequence[tuple[int, str, bool]], now: datetime) -> None:
        """Record accepted messages, (delivery id, email, clear failures), in one commit.

        Clearing an address's failure count is a second statement, made only for addresses
        known to have failures: a send of 100,000 messages runs this once per message.
        """
        at = now
        self.db.run_many(
            [
                (self._sent, [{"b_id": d, "at": at} for d, _, _ in sent]),
                (self._clear, [{"b_email": e} for _, e, c in sent if c]),
            ],
            durable=False,  # lost only with the database server's crash: a message sent again
        )

    def mark_deferred(
        self,
        delivery_id: int,
        code: int | None,
        reply: str,
        now: datetime,
        retry_at: datetime | None = None,
    ) -> None:
        """Record a temporary failure: the delivery stays pending, its attempt and reply kept.

        With ``retry_at`` any host of its run may try it again from then; without, it waits for
        the next digest run."""
        with self.db.tx() as conn:
            conn.execute(
                _ATTEMPT,
                {
                    "b_id": delivery_id,
                    "at": now,
                    "b_status": "pending",
                    "b_code": code,
                    "b_reply": reply[:1000],
                },
            )
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(claimed_by=None, claimed_until=retry_at or HELD)
            )

    def mark_failed(
        self, delivery_id: int, email: str, code: int | None, reply: str, now: datetime
    ) -> bool:
        """Record a permanent failure; return True if the address is now suspended."""
        with self.db.tx() as conn:
            conn.execute(
                _ATTEMPT,
                {
                    "b_id": delivery_id,
                    "at": now,
                    "b_status": "failed",
                    "b_code": code,
                    "b_reply": reply[:1000],
                },
            )
            conn.execute(_COUNT_FAILURE, {"b_email": email})
            failures = conn.scalar(_FAILURES, {"b_email": email}) or 0
            if failures >= SUSPEND_AFTER:
                conn.execute(_SUSPEND, {"b_email": email, "at": now})
                cancel_waiting(conn, email, "the address was suspended", now)
                return True
        return False

    def cancel(self, delivery_id: int, reason: str, now: datetime) -> None:
        """Mark a delivery cancelled with ``reason``: it is never sent (its articles were
        unpublished, or its address left the subscribers file)."""
        with self.db.tx() as conn:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(status="cancelled", reply=reason, last_attempt=now)
            )

    # -- operators' actions ------------------------------------------------------------

    def problems(self, limit: int = 50) -> list[Problem]:
        """Failed and waiting deliveries, newest first."""
        with self.db.tx() as conn:
            rows = conn.execute(
                select(deliveries)
                .where(deliveries.c.status.in_(["pending", "failed"]))
                .order_by(deliveries.c.id.desc())
                .limit(limit)
            ).all()
        return [
            Problem(
                r.email,
                r.status,
                r.attempts,
                r.code,
                r.reply,
                r.last_attempt or r.created_at,
            )
            for r in rows
        ]

    def pending_count(self) -> int:
        """How many deliveries wait to be sent."""
        with self.db.tx() as conn:
            return int(
                conn.scalar(select(func.count()).where(deliveries.c.status == "pending")) or 0
            )

    def oldest_pending(self) -> datetime | None:
        """When the oldest delivery still waiting was created; None when nothing waits."""
        with self.db.tx() as conn:
            oldest: datetime | None = conn.scalar(
                select(func.min(deliveries.c.created_at)).where(deliveries.c.status == "pending")
            )
        return oldest

    def counts(self) -> dict[str, int]:
        """Deliveries by status."""
        with self.db.tx() as conn:
            result: dict[str, int] = {"pending": 0, "sent": 0, "failed": 0, "cancelled": 0}
            for status, count in conn.execute(
                select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
            ):
                result[status] = int(count)
        return result
