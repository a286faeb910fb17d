"""Fixtures of the HTTP tests: a fresh output directory and app per test, one read-only server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from webkit import Client, Served, Site, layout

from service.templating import Templates

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def templates() -> Templates:
    return Templates(REPO / "templates", zone=ZoneInfo("Asia/Ho_Chi_Minh"))


@pytest.fixture
def site(tmp_path: Path, templates: Templates) -> Site:
    return Site(layout(tmp_path), templates)


@pytest.fixture
def web(site: Site) -> Iterator[Client]:
    client = Client(site.app)
    yield client
    client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, templates: Templates) -> Iterator[Served]:
    """One real server for the tests that send raw request targets. They only read: no test
    writes to its directory or turns its knobs, so their order cannot matter."""
    site = Site(layout(tmp_path_factory.mktemp("served")), templates)
    with Served(site) as server:
        yield server
