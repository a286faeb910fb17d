"""The identities read straight from a current SQLite state equal the ledger's own, and every
state it cannot vouch for is left to Database (None), never read half-way."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.ledger import State
from service.ledger.snapshot import sqlite_identities

NOW = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A real state with articles recorded, one of them moved since (its path changed) and two
    files that once had the same bytes (the later one wins)."""
    url = f"sqlite:///{tmp_path / 'var' / 'bantin.db'}"
    state = State(url, create=True)
    try:
        state.articles.record([("2024/a", "f-a", "2024/a.md"), ("2024/b", "f-b", "2024/b.md")], NOW)
        state.articles.record([("2024/a", "f-a", "tin/a.md"), ("2024/c", "f-b", "c.md")], NOW)
    finally:
        state.close()
    return url


def ledger_identities(url: str) -> tuple[dict[str, str], dict[str, str]]:
    state = State(url)
    try:
        return state.articles.identities()
    finally:
        state.close()


def test_a_current_state_reads_as_the_ledger_reads_it(url: str) -> None:
    read = sqlite_identities(url)
    assert read is not None
    assert read == ledger_identities(url)
    by_fingerprint, by_path = read
    assert by_fingerprint == {"f-a": "2024/a", "f-b": "2024/c"}
    assert by_path["tin/a.md"] == "2024/a" and by_path["c.md"] == "2024/c"


def test_a_relative_url_is_read_from_the_working_directory(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = "sqlite:///var/bantin.db"
    State(relative).close()  # this host's marker now names it by that path too
    assert sqlite_identities(relative) == ledger_identities(url)


def test_a_state_behind_or_ahead_of_this_bantin_is_left_to_the_ledger(
    url: str, tmp_path: Path
) -> None:
    database = tmp_path / "var" / "bantin.db"
    for version in ("0005", "9999"):
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE alembic_version SET version_num = ?", (version,))
        assert sqlite_identities(url) is None
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE alembic_version")  # as the first release left it
    assert sqlite_identities(url) is None


def test_a_state_this_host_has_not_used_is_left_to_the_ledger(url: str, tmp_path: Path) -> None:
    (tmp_path / "var" / "state.installed").unlink()
    assert sqlite_identities(url) is None
    ledger_identities(url)  # opening it through Database notes it
    assert sqlite_identities(url) is not None


def test_a_lost_state_is_neither_read_nor_made_again(url: str, tmp_path: Path) -> None:
    database = tmp_path / "var" / "bantin.db"
    for suffix in ("", "-wal", "-shm"):
        database.with_name(database.name + suffix).unlink(missing_ok=True)
    assert sqlite_identities(url) is None
    assert not database.exists()  # Database refuses a lost state: nothing may make it here
    database.write_bytes(b"")
    assert sqlite_identities(url) is None
    database.write_bytes(b"not a database, but the marker names it")
    assert sqlite_identities(url) is None


@pytest.mark.parametrize(
    "other",
    [
        "postgresql://bantin@localhost/bantin",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///{path}?timeout=5",
        "sqlite:///{path}%00",
    ],
)
def test_urls_it_does_not_read_are_left_to_the_ledger(url: str, tmp_path: Path, other: str) -> None:
    path = tmp_path / "var" / "bantin.db"
    assert sqlite_identities(other.format(path=path)) is None
