"""Bounces and complaints close the loop: suppressed addresses with their evidence, and every
bounce received (soft ones are counted over days); deliveries found by their Message-ID.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)
REASONS = "reason IN ('hard_bounce', 'complaint', 'soft_bounces', 'unsubscribe_mail')"
KINDS = "kind IN ('hard', 'soft', 'complaint', 'unsubscribe')"
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "suppressions",
        sa.Column("email", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("since", MOMENT, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.CheckConstraint(REASONS, name="suppressions_reason"),
    )
    op.create_table(
        "bounces",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("at", MOMENT, nullable=False),
        sa.Column("status", sa.Text),
        sa.Column("diagnostic", sa.Text),
        sa.Column("delivery_id", ID),
        sa.Column("way", sa.Text, nullable=False),  # pipe, maildir, imap
        sa.CheckConstraint(KINDS, name="bounces_kind"),
        sqlite_autoincrement=True,
    )
    op.create_index("bounces_email_at", "bounces", ["email", "at"])
    op.create_index("deliveries_message_id", "deliveries", ["message_id"])


def downgrade() -> None:
    op.drop_index("deliveries_message_id", "deliveries")
    op.drop_index("bounces_email_at", "bounces")
    op.drop_table("bounces")
    op.drop_table("suppressions")
