"""Citizens subscribe themselves: sign-ups with their consent, the consent texts shown, the
form's rate limits, and the salted hashes of forgotten addresses.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "signups",
        sa.Column("email", sa.Text, primary_key=True),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("frequency", sa.Text, nullable=False),
        sa.Column("categories", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("requested_at", MOMENT, nullable=False),
        sa.Column("request_ip", sa.Text),
        sa.Column("consent", sa.Text),
        sa.Column("legal_basis", sa.Text),
        sa.Column("confirmed_at", MOMENT),
        sa.Column("confirm_ip", sa.Text),
        sa.Column("in_file", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.CheckConstraint("status IN ('pending', 'confirmed')", name="signups_status_known"),
        sa.CheckConstraint("source IN ('form', 'import')", name="signups_source_known"),
        sa.CheckConstraint(
            "frequency IN ('immediate', 'daily', 'weekly')", name="signups_frequency"
        ),
    )
    op.create_index("signups_status", "signups", ["status", "requested_at"])
    op.create_table(
        "consents",
        sa.Column("version", sa.Text, primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("first_used", MOMENT, nullable=False),
    )
    op.create_table(
        "throttles",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("since", MOMENT, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "forgotten",
        sa.Column("digest", sa.Text, primary_key=True),
        sa.Column("since", MOMENT, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("forgotten")
    op.drop_table("throttles")
    op.drop_table("consents")
    op.drop_index("signups_status", "signups")
    op.drop_table("signups")
