"""A real PostgreSQL server for tests: started from pgserver's binaries, a database per test.

server = PostgresServer.start()
url = server.new_database()      # postgresql://postgres@/t_ab12cd?host=/tmp/bt-pg...
server.restart()                 # to test what survives a database restart
server.stop()
"""

from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pgserver
import psycopg

# pgserver logs its own clean-up at exit, after pytest has closed the streams it logs to
logging.getLogger("pgserver").setLevel(logging.WARNING)


@dataclass
class PostgresServer:
    directory: Path
    handle: Any
    databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, directory: Path | None = None) -> PostgresServer:
        folder = directory or Path(tempfile.mkdtemp(prefix="bt-pg", dir="/tmp"))
        return cls(folder, pgserver.get_server(folder, cleanup_mode="stop"))

    @property
    def admin_uri(self) -> str:
        return str(self.handle.get_uri())

    def new_database(self) -> str:
        """An empty database of its own, as a state.url."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.admin_uri, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return f"postgresql://postgres@/{name}?host={self.directory}"

    def restart(self) -> None:
        """Stop the server (every connection breaks) and start it again on the same data."""
        self.handle.cleanup()
        self.handle = pgserver.get_server(self.directory, cleanup_mode="stop")

    def stop(self) -> None:
        self.handle.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)
