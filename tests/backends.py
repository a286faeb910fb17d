"""Both state backends for the tests that must hold on each: a SQLite file under tmp_path and a
database of the real PostgreSQL server the tests start, and a State open on it. A test module
or conftest takes them with ``from backends import state, url``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pgkit import PostgresServer

from service.ledger import State


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The test runs on both backends: a SQLite file, and a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'var' / 'bantin.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def state(url: str) -> Iterator[State]:
    opened = State(url)
    yield opened
    opened.close()
