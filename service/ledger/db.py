"""One engine over the state database, short transactions, and statements run through the driver.

SQLAlchemy Core keeps the SQL portable. SQLite (the default) runs in WAL mode with
synchronous=NORMAL: a commit survives a killed process, which is the guarantee the ledger needs.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from service.errors import StateError
from service.ledger import migrations

__all__ = ["BUSY_TIMEOUT_MS", "Database", "Prepared", "database_error", "masked"]

log = logging.getLogger("bantin.ledger")

# How long SQLite waits for another writer before a statement fails with "database is locked".
BUSY_TIMEOUT_MS = 10_000


def masked(url: str) -> str:
    """``url`` fit for a message or a log: its password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a URL SQLAlchemy reads: hide whatever stands where one would be
        return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url)


def database_error(where: str, exc: BaseException) -> StateError:
    """One line for a database failure: the driver's own first line, never the SQL or the
    parameters SQLAlchemy adds (they can hold addresses)."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return StateError(f"state database {where}: {type(cause).__name__}: {first}")


class Database:
    """The state database named by ``url``; its tables are created if missing."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        """Open the database, upgrading its schema. A database without bantin's tables is made
        only for a new installation, or with ``create`` (`bantin init --force`); StateError
        otherwise, saying how to restore it."""
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StateError(
                f"state.url {masked(url)!r} is not a database URL; use e.g. sqlite:///var/bantin.db"
            ) from None
        self.sqlite_path: Path | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self.sqlite_path = Path(parsed.database or "")
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(url)
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise StateError(
                f"state.url {masked(url)} cannot be used: {type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0]}"
            ) from exc
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._raw: Any = None  # the driver connection of run_many, opened on first use
        missing = self.sqlite_path is not None and (
            not self.sqlite_path.exists() or self.sqlite_path.stat().st_size == 0
        )
        if missing and not create:
            self._refuse_to_recreate()  # before SQLite makes (or touches) a file
        try:
            with self._schema_lock():
                self._open(create)
        except SQLAlchemyError as exc:
            raise database_error(f"{self.describe()} cannot be opened", exc) from exc

    @contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """One process at a time creates or upgrades the schema (two hosts starting at once)."""
        if self.sqlite_path is None:
            yield
            return
        path = self.sqlite_path.with_name(self.sqlite_path.name + ".schema-lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open(self, create: bool) -> None:
        with self.engine.begin() as conn:
            fresh = not inspect(conn).has_table("articles")
            if fresh and not create:
                self._refuse_to_recreate()
            applied = migrations.upgrade(conn)  # a new database is marked installed by 0002
        if applied and not fresh:
            log.info("state database %s upgraded: %s", self.describe(), ", ".join(applied))

    def _refuse_to_recreate(self) -> None:
        """StateError if this installation ran before: a lost state is restored, not remade."""
        earlier = self.earlier_installation()
        if earlier is not None:
            raise StateError(
                f"the state database {self.describe()} is missing or empty, but this "
                f"installation has run before ({earlier} exists): restore the database "
                "from your backup (README, Deployment), or, to start afresh on purpose "
                "(every address then counts as new, unsubscriptions are forgotten and "
                "unsubscribe links already sent stop working), run `bantin init --force`"
            )

    def earlier_installation(self) -> Path | None:
        """A file that only an installation that ran leaves beside its state, if there is one."""
        home = self.home
        candidates = [home / "subscribers.last-good.toml", home / "bantin.lock"]
        if self.sqlite_path is not None:
            candidates.append(self.sqlite_path.with_name(self.sqlite_path.name + ".lock"))
        return next((path for path in candidates if path.exists()), None)

    def describe(self) -> str:
        """The database for messages: its file, or its URL with the password masked."""
        if self.sqlite_path:
            return str(self.sqlite_path)
        return masked(self.url)

    @property
    def home(self) -> Path:
        """Where this host keeps files beside the state (lock, last good subscribers file)."""
        return self.sqlite_path.parent if self.sqlite_path is not None else Path("var")

    def close(self) -> None:
        """Close the driver connection and the engine's pool; the Database is not used after."""
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One transaction; StateError (naming the database) for any database failure."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise database_error(self.describe(), exc) from exc

    def run_many(self, batches: list[tuple[Prepared, list[dict[str, Any]]]]) -> None:
        """Run prepared statements over their parameter lists, in one commit, via the driver."""
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        cursor = self._raw.cursor()
        try:
            for statement, values in batches:
                if values:
                    cursor.executemany(statement.sql, statement.parameters(values))
            self._raw.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._raw.rollback()
            raise database_error(self.describe(), exc) from exc
        finally:
            cursor.close()


class Prepared:
    """A statement compiled once for the dialect in use, run straight through the driver.

    Recording a 250 happens once per message; through SQLAlchemy's execution machinery it
    cost ~200 us, through the driver ~15 us. The SQL is still SQLAlchemy's, so this works for
    any database the URL names.
    """

    def __init__(self, engine: Engine, statement: Any) -> None:
        compiled = statement.compile(dialect=engine.dialect)
        self.sql: str = compiled.string
        self.fixed: dict[str, Any] = compiled.construct_params({}, _check=False)
        self.order: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positiontup else None
        )

    def parameters(self, values: list[dict[str, Any]]) -> list[Any]:
        """``values`` as the driver takes them: named, or positional in the compiled order; the
        statement's fixed values fill the gaps."""
        if self.order is None:
            return [{**self.fixed, **v} for v in values]
        return [tuple(v[k] if k in v else self.fixed[k] for k in self.order) for v in values]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + NORMAL: a commit survives a killed process (the guarantee the ledger needs) without
    # an fsync per message; only a power cut can lose the last commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
