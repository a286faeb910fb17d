"""A schema fit for PostgreSQL as well as SQLite, and for several hosts.

Text instead of VARCHAR(n) (PostgreSQL enforces lengths that SQLite ignores: a long article id
or Message-ID broke the first release there), timestamptz instead of epoch floats, a boolean
for runs.ok, 64-bit ids, CHECK constraints on status and frequency, server-side defaults.
For several hosts: what a delivery needs to be composed anywhere (address, name, categories),
the run that verified it and the host that claimed it until when; the leader of the hosts;
the digest runs in progress.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MOMENTS = {
    "articles": ("first_seen",),
    "subscribers": ("first_seen", "unsubscribed_at", "suspended_at"),
    "deliveries": ("created_at", "last_attempt", "sent_at"),
    "runs": ("started", "finished"),
}
TEXTS = {
    "meta": ("key",),
    "articles": ("id",),
    "subscribers": ("email", "frequency"),
    "deliveries": ("email", "frequency", "message_id", "status"),
    "delivery_items": ("email", "article_id"),
    "runs": ("kind",),
}
WIDE = {
    "articles": ("seq",),
    "subscribers": ("cursor",),
    "deliveries": ("id",),
    "delivery_items": ("delivery_id",),
}
MOMENT = sa.DateTime(timezone=True)
FREQUENCIES = "frequency IN ('immediate', 'daily', 'weekly')"
STATUSES = "status IN ('pending', 'sent', 'failed', 'cancelled')"
SQLITE_MOMENT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores a DateTime in SQLite


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in ("meta", "articles", "subscribers", "deliveries", "delivery_items", "runs"):
        with op.batch_alter_table(table, recreate="always" if not postgresql else "auto") as batch:
            for column in TEXTS.get(table, ()):
                batch.alter_column(column, type_=sa.Text)
            for column in MOMENTS.get(table, ()):
                batch.alter_column(column, type_=MOMENT, postgresql_using=f"to_timestamp({column})")
            if postgresql:
                for column in WIDE.get(table, ()):
                    batch.alter_column(column, type_=sa.BigInteger)
            if table == "runs":
                batch.alter_column("ok", type_=sa.Boolean, postgresql_using="ok <> 0")
            if table == "subscribers":
                batch.alter_column("failures", server_default=sa.text("0"))
                batch.create_check_constraint("subscribers_frequency", FREQUENCIES)
            if table == "deliveries":
                batch.alter_column("attempts", server_default=sa.text("0"))
                for column in ("address", "name", "categories", "run", "claimed_by"):
                    batch.add_column(sa.Column(column, sa.Text))
                batch.add_column(sa.Column("claimed_until", MOMENT))
                batch.create_index("deliveries_run", ["run", "status"])
                batch.create_check_constraint("deliveries_status_known", STATUSES)
                batch.create_check_constraint("deliveries_frequency", FREQUENCIES)
    if not postgresql:
        _sqlite_moments()
    op.create_table(
        "leaders",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("since", MOMENT, nullable=False),
        sa.Column("heartbeat", MOMENT, nullable=False),
    )
    op.create_table(
        "active_runs",
        sa.Column("run", sa.Text, primary_key=True),
        sa.Column("frequency", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("started", MOMENT, nullable=False),
    )


def _sqlite_moments() -> None:
    """SQLite kept the epoch numbers in the retyped columns: write them as SQLAlchemy does."""
    connection = op.get_bind()
    for table, columns in MOMENTS.items():
        for column in columns:
            rows = connection.exec_driver_sql(
                f"SELECT rowid, {column} FROM {table} WHERE typeof({column}) IN ('real', 'integer')"
            ).fetchall()
            if not rows:
                continue
            connection.exec_driver_sql(
                f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                [
                    (datetime.fromtimestamp(value, UTC).strftime(SQLITE_MOMENT), rowid)
                    for rowid, value in rows
                ],
            )


def downgrade() -> None:
    raise NotImplementedError("bantin does not go back to the first release's schema")
