"""Shared fixtures: a project directory with real config, templates and articles under tmp_path."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from pgkit import PostgresServer

from service.settings import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent

# No deadlines: speed is measured by benchmarks, never asserted in a test, and a loaded machine
# (or the first call that imports a module) would otherwise fail a correct example.
hypothesis_settings.register_profile("bantin", deadline=None)
hypothesis_settings.load_profile("bantin")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory laid out like the repository: config/, templates/, content/."""
    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "content").mkdir()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "bantin.toml").write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        'author = "Văn phòng UBND tỉnh"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.startswith("BANTIN_"):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project / "config" / "bantin.toml")


@pytest.fixture
def write(project: Path) -> Callable[[str, str], Path]:
    """write("2024/x.md", text) puts an article under content/."""

    def _write(relative: str, text: str) -> Path:
        path = project / "content" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write


# --- a real PostgreSQL server, started by the tests (pgserver ships its binaries) -------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL 16 server for the session, in a short temporary folder (its Unix socket
    lives there, and socket paths are limited to about 100 bytes)."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()
