"""A changed event is news: what each address was sent records the revision of the article's
events, and every revision of an article's events is kept, so a digest can say what changed.

delivery_items gains ``revision`` (``''`` for articles without events, which is every row of
an older database) and its primary key becomes (email, article_id, revision): an article is
still never sent twice to one address, but the same article with its sessions moved is a new
item. ``previous`` names the revision an update replaces. ``event_revisions`` keeps each
revision's events as JSON.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)


ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("delivery_items_pkey", "delivery_items", type_="primary")
        op.add_column(
            "delivery_items",
            sa.Column("revision", sa.Text, nullable=False, server_default=sa.text("''")),
        )
        op.add_column("delivery_items", sa.Column("previous", sa.Text))
        op.create_primary_key(
            "delivery_items_pkey", "delivery_items", ["email", "article_id", "revision"]
        )
    else:  # SQLite cannot change a primary key: the table is copied into its new shape
        op.create_table(
            "delivery_items_new",
            sa.Column("email", sa.Text, primary_key=True),
            sa.Column("article_id", sa.Text, primary_key=True),
            sa.Column("delivery_id", ID, sa.ForeignKey("deliveries.id"), nullable=False),
            sa.Column("revision", sa.Text, primary_key=True, server_default=sa.text("''")),
            sa.Column("previous", sa.Text),
        )
        op.execute(
            "INSERT INTO delivery_items_new (email, article_id, delivery_id, revision) "
            "SELECT email, article_id, delivery_id, '' FROM delivery_items"
        )
        op.drop_table("delivery_items")
        op.rename_table("delivery_items_new", "delivery_items")
        op.create_index("ix_delivery_items_delivery_id", "delivery_items", ["delivery_id"])
    op.create_table(
        "event_revisions",
        sa.Column("article_id", sa.Text, primary_key=True),
        sa.Column("revision", sa.Text, primary_key=True),
        sa.Column("number", sa.Integer, nullable=False),  # 1, 2, ... in the order seen
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("first_seen", MOMENT, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("a changed event cannot be forgotten without losing updates")
