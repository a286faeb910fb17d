"""A throwaway PostgreSQL for the benchmarks (pgserver's binaries, as tests/pgkit.py starts it).

``start()`` gives None and the reason when pgserver or psycopg is not installed, so the
benchmark says so in its table instead of failing.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Postgres:
    directory: Path
    handle: Any

    @property
    def admin_uri(self) -> str:
        return str(self.handle.get_uri())

    def url(self, name: str) -> str:
        return f"postgresql://postgres@/{name}?host={self.directory}"

    def create(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of ``template`` if given), as a state.url."""
        import psycopg

        with psycopg.connect(self.admin_uri, autocommit=True) as connection:
            extra = f' TEMPLATE "{template}"' if template else ""
            connection.execute(f'CREATE DATABASE "{name}"{extra}')
        return self.url(name)

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_uri, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        self.handle.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)


def start() -> tuple[Postgres | None, str]:
    """A running server and its description, or None and why there is none."""
    try:
        import pgserver
        import psycopg  # noqa: F401 - bantin's driver must be there too
    except ImportError as exc:
        return (
            None,
            f"PostgreSQL not measured: {exc.name} is not installed (pip install -e '.[test]')",
        )
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # the server's Unix socket lives in this folder: keep its path short (~100 bytes at most)
    folder = Path(tempfile.mkdtemp(prefix="bt-pg", dir="/tmp"))
    try:
        handle = pgserver.get_server(folder, cleanup_mode="stop")
    except Exception as exc:  # the binaries cannot run here: say so
        shutil.rmtree(folder, ignore_errors=True)
        return None, f"PostgreSQL not measured: pgserver could not start it ({exc})"
    return Postgres(folder, handle), "PostgreSQL 16 (pgserver), on this machine, Unix socket"
