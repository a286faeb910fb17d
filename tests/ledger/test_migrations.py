"""The state database keeps every row across releases, and is never silently made anew.

fixtures/bantin-0.1.db was made by the first release (commit 3638b7f, service/state.py) with:
articles 2026/11/a and b recorded, three subscribers registered, 2026/11/c recorded and
claimed for each of them; hoa's delivery sent, lan's deferred (451) then lan unsubscribed,
gone's failed three times (550 5.1.1, suspended); a digest:daily run; the generated key.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pgkit import PostgresServer
from sqlalchemy import create_engine, inspect

from service.errors import StateError
from service.ledger import State, migrations
from service.ledger.schema import metadata

FIXTURE = Path(__file__).parent / "fixtures" / "bantin-0.1.db"
OLD_KEY = b"qdIQyoy4duz09bQNt7AdMvELsTtHAU7_l7MFQFfVkBg"


def rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute(f"SELECT * FROM {table}"))


def test_a_database_of_the_first_release_upgrades_with_every_row_intact(tmp_path: Path) -> None:
    path = tmp_path / "bantin.db"
    shutil.copy(FIXTURE, path)
    before = {
        table: rows(path, table)
        for table in ("articles", "subscribers", "deliveries", "delivery_items", "runs", "meta")
    }
    state = State(f"sqlite:///{path}")
    try:
        assert migrations.current_revision(state.db.engine) == migrations.head()
        assert state.keys.secret_key() == OLD_KEY  # unsubscribe links already sent still work
        assert state.articles.last_seq() == 3
        assert [i for _, i in state.articles.after(0)] == ["2026/11/a", "2026/11/b", "2026/11/c"]
        assert state.counts() == {
            "pending": 1, "sent": 1, "failed": 1, "cancelled": 0, "suspended": 1,
            "unsubscribed": 1,
        }  # fmt: skip
        [waiting] = state.deliveries.pending()
        assert (waiting.email, waiting.article_ids, waiting.attempts) == (
            "lan@example.org", ("2026/11/c",), 1
        )  # fmt: skip
        assert [r.kind for r in state.runs.all()] == ["digest:daily"]
    finally:
        state.close()
    for table in ("articles", "subscribers", "deliveries", "delivery_items", "runs"):
        after = rows(path, table)
        assert len(after) == len(before[table]), table
        for old, new in zip(before[table], after, strict=True):
            assert all(same(a, b) for a, b in zip(old, new, strict=False)), (table, old, new)
    assert set(before["meta"]) < set(rows(path, "meta"))  # + installed_at


def same(old: object, new: object) -> bool:
    """A value of the first release and the same value today: an epoch float is now a time."""
    if isinstance(old, float) and isinstance(new, str):
        moment = datetime.strptime(new, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
        return abs(moment.timestamp() - old) < 1e-3
    return old == new


def test_a_postgresql_database_of_the_first_release_upgrades_too(
    postgres: PostgresServer,
) -> None:
    """The first release made the same tables on PostgreSQL (VARCHAR(n), epoch floats): its rows
    are copied into a database at revision 0002, which then upgrades to today's schema."""
    url = postgres.new_database()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        migrations.upgrade(conn, "0002")
        for table in ("meta", "articles", "subscribers", "deliveries", "delivery_items", "runs"):
            old = rows(FIXTURE, table)
            if not old:
                continue
            names = [column["name"] for column in inspect(conn).get_columns(table)]
            names = names[: len(old[0])]
            marks = ", ".join(f"%({n})s" for n in names)
            conn.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})",
                [dict(zip(names, row, strict=True)) for row in old],
            )
        for table, column in (("articles", "seq"), ("deliveries", "id")):
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), 10)"
            )
    engine.dispose()
    state = State(url)
    try:
        assert state.keys.secret_key() == OLD_KEY
        assert state.counts() == {
            "pending": 1, "sent": 1, "failed": 1, "cancelled": 0, "suspended": 1,
            "unsubscribed": 1,
        }  # fmt: skip
        [waiting] = state.deliveries.pending()
        assert waiting.email == "lan@example.org" and waiting.article_ids == ("2026/11/c",)
        [run] = state.runs.all()
        assert run.ok is True and run.started.tzinfo is not None
        with state.db.tx() as conn:
            kinds = {
                (c["name"], str(c["type"]))
                for c in inspect(conn).get_columns("deliveries")
                if c["name"] in ("id", "created_at", "message_id")
            }
        assert kinds == {
            ("id", "BIGINT"), ("created_at", "TIMESTAMP"), ("message_id", "TEXT"),
        }  # fmt: skip
        long_id = "2026/" + "rất-dài/" * 200  # a deep path: far past the first release's 512
        state.articles.record([(long_id, "fp", long_id + ".md")], datetime.now(UTC))
        assert long_id in state.articles.seen([long_id])
    finally:
        state.close()


def test_an_installation_that_ran_never_gets_a_new_database_behind_its_back(
    project: Path,
) -> None:
    """Finding 8: an empty or deleted database was silently recreated: unsubscribed addresses
    were mailed again, and a new key made every unsubscribe link already sent answer 400."""
    config = project / "config" / "bantin.toml"
    (project / "config" / "subscribers.toml").write_text("", encoding="utf-8")

    def bantin(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service", "--config", str(config), *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")},
        )

    assert bantin("digest").returncode == 0  # a new installation: its state is made at once
    database = project / "var" / "bantin.db"
    for damage in ("delete", "empty"):
        if damage == "delete":
            database.unlink()
        else:
            database.write_bytes(b"")
        refused = bantin("digest")
        assert refused.returncode == 2
        message = refused.stderr.strip().splitlines()[-1]
        assert "missing or empty" in message and "restore the database" in message
        assert "bantin init --force" in message
        assert bantin("status").returncode == 2  # no command makes one quietly
        assert not database.exists() or database.stat().st_size == 0
    made = bantin("init", "--force")
    assert made.returncode == 0 and "is ready" in made.stdout
    assert bantin("digest").returncode == 0
    again = bantin("init")
    assert again.returncode == 0  # never erases: says it is ready
    assert rows(database, "runs")  # the digest run above is still there


def test_a_newer_or_damaged_database_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bantin.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError) as caught:
        State(f"sqlite:///{path}")
    assert "\n" not in str(caught.value) and "cannot be opened" in str(caught.value)


def shape(url: str) -> dict[str, object]:
    """What the database at ``url`` holds as schema: the differences from schema.py that
    Alembic finds, and each table's primary key and indexes (Alembic does not compare those)."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            inspector = inspect(conn)
            return {
                "differences": [str(d) for d in compare_metadata(context, metadata)],
                "keys": {
                    t: inspector.get_pk_constraint(t)["constrained_columns"]
                    for t in sorted(metadata.tables)
                },
                "indexes": {
                    t: sorted(
                        tuple(i["column_names"])
                        for i in inspector.get_indexes(t)
                        if not i.get("duplicates_constraint")  # PostgreSQL's UNIQUE
                    )
                    for t in sorted(metadata.tables)
                },
            }
    finally:
        engine.dispose()


def expected_shape() -> dict[str, object]:
    return {
        "differences": [],
        "keys": {t: [c.name for c in metadata.tables[t].primary_key] for t in metadata.tables},
        "indexes": {
            t: sorted(tuple(c.name for c in i.columns) for i in metadata.tables[t].indexes)
            for t in metadata.tables
        },
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_new_and_upgraded_databases_have_exactly_the_schema_of_schema_py(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        shutil.copy(FIXTURE, tmp_path / "old.db")
        new, upgraded = f"sqlite:///{tmp_path / 'new.db'}", f"sqlite:///{tmp_path / 'old.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        new, upgraded = server.new_database(), server.new_database()
        engine = create_engine(upgraded.replace("postgresql://", "postgresql+psycopg://"))
        with engine.begin() as conn:
            migrations.upgrade(conn, "0001")
        engine.dispose()
    for url in (new, upgraded):
        State(url, create=True).close()
        assert shape(url) == expected_shape(), url


def test_head_names_the_newest_revision() -> None:
    """A new revision in versions/ must move HEAD too, or a database would be taken as current
    (and not upgraded) by ``at_head`` while Alembic knows a newer revision."""
    assert migrations.head() == migrations.HEAD


def test_only_a_database_at_head_is_current(tmp_path: Path) -> None:
    path = tmp_path / "bantin.db"
    shutil.copy(FIXTURE, path)
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert not migrations.at_head(conn)  # the first release recorded no revision
    State(f"sqlite:///{path}").close()
    with engine.begin() as conn:
        assert migrations.at_head(conn)
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0005'")
        assert not migrations.at_head(conn)
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")  # a later release
        assert not migrations.at_head(conn)
    engine.dispose()
