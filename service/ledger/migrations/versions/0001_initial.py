"""The schema of bantin 0.1: articles, subscribers, deliveries and their items, runs, meta.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "articles",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(512), nullable=False, unique=True),
        sa.Column("first_seen", sa.Float, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "subscribers",
        sa.Column("email", sa.String(320), primary_key=True),
        sa.Column("cursor", sa.Integer, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("frequency", sa.String(16), nullable=False),
        sa.Column("unsubscribed_at", sa.Float),
        sa.Column("suspended_at", sa.Float),
        sa.Column("failures", sa.Integer, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("frequency", sa.String(16), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_attempt", sa.Float),
        sa.Column("sent_at", sa.Float),
        sa.Column("code", sa.Integer),
        sa.Column("reply", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("deliveries_status", "deliveries", ["status"])
    op.create_table(
        "delivery_items",
        sa.Column("email", sa.String(320), primary_key=True),
        sa.Column("article_id", sa.String(512), primary_key=True),
        sa.Column(
            "delivery_id", sa.Integer, sa.ForeignKey("deliveries.id"), nullable=False, index=True
        ),
    )
    op.create_table(
        "runs",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("finished", sa.Float, nullable=False),
        sa.Column("ok", sa.Integer, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("runs", "delivery_items", "deliveries", "subscribers", "articles", "meta"):
        op.drop_table(table)
