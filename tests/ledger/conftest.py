"""The ledger tests' database: a real SQLite file under tmp_path, and a State open on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from service.ledger import State


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'bantin.db'}"


@pytest.fixture
def state(url: str) -> Iterator[State]:
    opened = State(url)
    yield opened
    opened.close()
