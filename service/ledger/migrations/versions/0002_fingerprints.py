"""Articles keep their identity when moved: the fingerprint and path of each recorded article's
file. Installed databases are marked, so a lost one is never silently made anew.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.add_column(sa.Column("fingerprint", sa.Text, nullable=True))
        batch.add_column(sa.Column("source", sa.Text, nullable=True))
        batch.create_index("articles_fingerprint", ["fingerprint"])
    meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))
    connection = op.get_bind()
    installed = connection.execute(
        sa.select(meta.c.value).where(meta.c.key == "installed_at")
    ).scalar()
    if installed is None:  # a database the first release made: it is an installation
        op.bulk_insert(meta, [{"key": "installed_at", "value": repr(time.time())}])


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:
        batch.drop_index("articles_fingerprint")
        batch.drop_column("source")
        batch.drop_column("fingerprint")
    op.execute("DELETE FROM meta WHERE key = 'installed_at'")
