"""The ledger's schema history, as Alembic revisions (versions/): every schema change is one.

``upgrade(connection)`` brings a database to the newest revision. A database made by the
first release, before revisions were recorded, is recognised by its tables and stamped as
revision 0001 first, so nothing in it is lost.

``at_head(connection)`` says, with one query and without Alembic (a quarter of a second of
imports at every start), whether there is anything to upgrade: ``HEAD`` names the newest
revision, and a test checks it against Alembic's own reading of versions/, so a new revision
cannot be added without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # HEAD is read without either (ledger/snapshot.py)
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection, Engine

__all__ = [
    "FIRST_RELEASE",
    "HEAD",
    "VERSION_TABLE",
    "at_head",
    "current",
    "current_revision",
    "head",
    "upgrade",
]

FIRST_RELEASE = "0001"  # the schema bantin 0.1 created without recording a revision
HEAD = "0006"  # the newest revision in versions/ (tests/ledger/test_migrations.py checks it)
_HERE = Path(__file__).parent
VERSION_TABLE = "alembic_version"  # where Alembic records the revision of a database


def at_head(connection: Connection) -> bool:
    """Whether the database on ``connection`` is at ``HEAD``, this bantin's newest revision:
    then it has nothing to upgrade. False for a new database, one of an earlier (or a later)
    release, or one made by 0.1 without a recorded revision."""
    from sqlalchemy import inspect

    if not inspect(connection).has_table(VERSION_TABLE):
        return False
    rows = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
    return [row[0] for row in rows] == [HEAD]


def _script() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    return ScriptDirectory.from_config(config)


def head() -> str:
    """The newest revision this bantin knows."""
    revision = _script().get_current_head()
    assert revision is not None
    return revision


def current(connection: Connection) -> str | None:
    """The revision of the database, or None if it has none (new, or made by 0.1)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def current_revision(engine: Engine) -> str | None:
    """The revision of the database behind ``engine``; None if it has none (see ``current``)."""
    with engine.connect() as connection:
        return current(connection)


def upgrade(connection: Connection, target: str = "head") -> list[str]:
    """Bring the database on ``connection`` to the newest revision (or ``target``); the
    revisions applied."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import inspect

    script = _script()
    if current(connection) is None and inspect(connection).has_table("articles"):
        MigrationContext.configure(connection).stamp(script, FIRST_RELEASE)
    applied: list[str] = []

    def steps(revision: object, context: MigrationContext) -> list[object]:
        found = script._upgrade_revs(target, revision)  # type: ignore[arg-type]
        applied.extend(step.revision.revision for step in found)
        return list(found)

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    with EnvironmentContext(config, script, fn=steps, destination_rev=target) as environment:
        environment.configure(
            connection=connection,
            render_as_batch=True,  # SQLite cannot ALTER most columns in place
            transaction_per_migration=False,
        )
        with environment.begin_transaction():
            environment.run_migrations()
    return applied
