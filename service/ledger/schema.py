"""The ledger's tables (SQLAlchemy Core), shared by the modules of each noun.

This is the schema of the newest revision in migrations/versions/: every change here is made
there too, as a new revision. Text is ``text`` (no length a valid input can overflow), times
are timestamptz, ids 64-bit, and status and frequency are checked by the database itself.

Who gets what is decided by sequence, never by dates: every article gets a sequence number when
it is first seen published, and every subscriber a cursor, the highest article sequence that is
no longer news to them. A delivery row and its items are committed before the message is sent
and marked sent on the server's 250. The (email, article) primary key of delivery_items makes a
second delivery of one article to one address impossible. On several hosts, a delivery is sent
by the host that claimed it (claimed_by) until its claim lapses (claimed_until).
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)

from service.ledger.types import Id, Moment

__all__ = [
    "FREQUENCIES",
    "STATUSES",
    "active_runs",
    "articles",
    "bounces",
    "consents",
    "deliveries",
    "delivery_items",
    "event_revisions",
    "forgotten",
    "leaders",
    "meta_table",
    "metadata",
    "runs",
    "signups",
    "subscribers",
    "suppressions",
    "throttles",
]

FREQUENCIES = ("immediate", "daily", "weekly")
STATUSES = ("pending", "sent", "failed", "cancelled")
SUPPRESSION_REASONS = ("hard_bounce", "complaint", "soft_bounces", "unsubscribe_mail")
BOUNCE_KINDS = ("hard", "soft", "complaint", "unsubscribe")
SIGNUP_STATUSES = ("pending", "confirmed")
SIGNUP_SOURCES = ("form", "import")


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name)


metadata = MetaData()
meta_table = Table(
    "meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)
articles = Table(
    "articles",
    metadata,
    Column("seq", Id, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("first_seen", Moment, nullable=False),
    # the file it was last seen in, and a fingerprint of its bytes: a moved file keeps its id
    Column("fingerprint", Text),
    Column("source", Text),
    Index("articles_fingerprint", "fingerprint"),
    sqlite_autoincrement=True,
)
subscribers = Table(
    "subscribers",
    metadata,
    Column("email", Text, primary_key=True),  # lower-cased
    Column("cursor", Id, nullable=False),
    Column("first_seen", Moment, nullable=False),
    Column("frequency", Text, nullable=False),
    Column("unsubscribed_at", Moment),
    Column("suspended_at", Moment),
    # permanent failures in a row
    Column("failures", Integer, nullable=False, server_default=text("0")),
    _one_of("frequency", FREQUENCIES, "subscribers_frequency"),
)
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", Text, nullable=False),  # lower-cased: the subscriber
    Column("frequency", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", Moment, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_attempt", Moment),
    Column("sent_at", Moment),
    Column("code", Integer),
    Column("reply", Text),
    # what any host needs to compose the message without the subscribers file
    Column("address", Text),  # as written in the file
    Column("name", Text),
    Column("categories", Text),  # slugs, comma-separated; NULL: every category
    # the digest run that last verified it (only its run sends it), and who sends it, until when
    Column("run", Text),
    Column("claimed_by", Text),
    Column("claimed_until", Moment),
    Index("deliveries_status", "status"),
    Index("deliveries_run", "run", "status"),
    Index("deliveries_message_id", "message_id"),
    _one_of("status", STATUSES, "deliveries_status_known"),
    _one_of("frequency", FREQUENCIES, "deliveries_frequency"),
    sqlite_autoincrement=True,
)
delivery_items = Table(
    "delivery_items",
    metadata,
    Column("email", Text, primary_key=True),
    Column("article_id", Text, primary_key=True),
    # of the article's events as sent ('' without events): a moved session is a new item
    Column("revision", Text, primary_key=True, server_default=text("''")),
    Column("delivery_id", Id, ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("previous", Text),  # an update: the revision the address had been sent
)
runs = Table(
    "runs",
    metadata,
    Column("kind", Text, primary_key=True),  # scan, build, digest:daily, ...
    Column("started", Moment, nullable=False),
    Column("finished", Moment, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
)
leaders = Table(
    "leaders",
    metadata,
    Column("name", Text, primary_key=True),  # "leader": the one host that plans and records
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("command", Text, nullable=False),
    Column("since", Moment, nullable=False),
    Column("heartbeat", Moment, nullable=False),
)
active_runs = Table(
    "active_runs",
    metadata,
    Column("run", Text, primary_key=True),  # a digest run in progress: every host helps send
    Column("frequency", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("started", Moment, nullable=False),
)
event_revisions = Table(
    "event_revisions",
    metadata,
    Column("article_id", Text, primary_key=True),
    Column("revision", Text, primary_key=True),
    Column("number", Integer, nullable=False),  # 1, 2, ... in the order seen
    Column("events", Text, nullable=False),  # JSON: the events as they were
    Column("first_seen", Moment, nullable=False),
)
suppressions = Table(
    "suppressions",
    metadata,
    Column("email", Text, primary_key=True),  # lower-cased: never mailed while here
    Column("reason", Text, nullable=False),
    Column("since", Moment, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: what said so, how it came in
    _one_of("reason", SUPPRESSION_REASONS, "suppressions_reason"),
)
bounces = Table(
    "bounces",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("at", Moment, nullable=False),
    Column("status", Text),
    Column("diagnostic", Text),
    Column("delivery_id", Id),
    Column("way", Text, nullable=False),  # pipe, maildir, imap
    Index("bounces_email_at", "email", "at"),
    _one_of("kind", BOUNCE_KINDS, "bounces_kind"),
    sqlite_autoincrement=True,
)

# Self-service subscribers (the form, or `bantin subscribers import`), with their consent: when,
# from which address, which text, when confirmed; or the legal basis an operator stated.
signups = Table(
    "signups",
    metadata,
    Column("email", Text, primary_key=True),  # lower-cased
    Column("address", Text, nullable=False),  # as typed
    Column("name", Text),
    Column("frequency", Text, nullable=False),
    Column("categories", Text),  # slugs, comma-separated; NULL: every category
    Column("status", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("requested_at", Moment, nullable=False),
    Column("request_ip", Text),
    Column("consent", Text),  # consents.version: the text shown
    Column("legal_basis", Text),  # an import's, as the operator stated it
    Column("confirmed_at", Moment),
    Column("confirm_ip", Text),
    # the operators' file names the address too (seen by the last digest run): the file wins
    Column("in_file", Boolean, nullable=False, server_default=text("false")),
    Index("signups_status", "status", "requested_at"),
    _one_of("status", SIGNUP_STATUSES, "signups_status_known"),
    _one_of("source", SIGNUP_SOURCES, "signups_source_known"),
    _one_of("frequency", FREQUENCIES, "signups_frequency"),
)
consents = Table(
    "consents",
    metadata,
    Column("version", Text, primary_key=True),  # a fingerprint of the text
    Column("text", Text, nullable=False),
    Column("first_used", Moment, nullable=False),
)
# How often a client or an address used the form lately; keys are salted hashes, never
# addresses, and a row goes when its window has passed.
throttles = Table(
    "throttles",
    metadata,
    Column("key", Text, primary_key=True),
    Column("since", Moment, nullable=False),
    Column("count", Integer, nullable=False),
)
# What `bantin forget` keeps of an address: its salted hash, so that it is never mailed again
# (were the operators' file still to list it) unless it signs up and confirms anew.
forgotten = Table(
    "forgotten",
    metadata,
    Column("digest", Text, primary_key=True),
    Column("since", Moment, nullable=False),
)
