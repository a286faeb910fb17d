"""The ledger's tables (SQLAlchemy Core), shared by the modules of each noun.

This is the schema of the newest revision in migrations/versions/: every change here is made
there too, as a new revision.

Who gets what is decided by sequence, never by dates: every article gets a sequence number when
it is first seen published, and every subscriber a cursor, the highest article sequence that is
no longer news to them. A delivery row and its items are committed before the message is sent
and marked sent on the server's 250. The (email, article) primary key of delivery_items makes a
second delivery of one article to one address impossible.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

__all__ = [
    "articles",
    "deliveries",
    "delivery_items",
    "from_timestamp",
    "meta_table",
    "metadata",
    "runs",
    "subscribers",
    "timestamp",
]

metadata = MetaData()
meta_table = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
articles = Table(
    "articles",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(512), nullable=False, unique=True),
    Column("first_seen", Float, nullable=False),
    # the file it was last seen in, and a fingerprint of its bytes: a moved file keeps its id
    Column("fingerprint", Text),
    Column("source", Text),
    Index("articles_fingerprint", "fingerprint"),
    sqlite_autoincrement=True,
)
subscribers = Table(
    "subscribers",
    metadata,
    Column("email", String(320), primary_key=True),  # lower-cased
    Column("cursor", Integer, nullable=False),
    Column("first_seen", Float, nullable=False),
    Column("frequency", String(16), nullable=False),
    Column("unsubscribed_at", Float),
    Column("suspended_at", Float),
    Column("failures", Integer, nullable=False, default=0),  # permanent failures in a row
)
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),
    Column("frequency", String(16), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed | cancelled
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_attempt", Float),
    Column("sent_at", Float),
    Column("code", Integer),
    Column("reply", Text),
    Index("deliveries_status", "status"),
    sqlite_autoincrement=True,
)
delivery_items = Table(
    "delivery_items",
    metadata,
    Column("email", String(320), primary_key=True),
    Column("article_id", String(512), primary_key=True),
    Column("delivery_id", Integer, ForeignKey("deliveries.id"), nullable=False, index=True),
)
runs = Table(
    "runs",
    metadata,
    Column("kind", String(32), primary_key=True),  # scan, build, digest:daily, ...
    Column("started", Float, nullable=False),
    Column("finished", Float, nullable=False),
    Column("ok", Integer, nullable=False),
    Column("detail", Text, nullable=False),
)


def timestamp(moment: datetime) -> float:
    """How a moment is stored: seconds since the epoch."""
    return moment.timestamp()


def from_timestamp(value: float | None) -> datetime | None:
    """A stored moment back as an aware UTC datetime; None stays None."""
    return None if value is None else datetime.fromtimestamp(value, UTC)
