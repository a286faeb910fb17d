"""One engine over the state database, short transactions, and statements run through the driver.

SQLAlchemy Core keeps the SQL portable. SQLite (the default) runs in WAL mode with
synchronous=NORMAL: a commit survives a killed process, which is the guarantee the ledger needs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Table, create_engine, event, inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError, SQLAlchemyError

from service.errors import StateError
from service.ledger import migrations

__all__ = ["BUSY_TIMEOUT_MS", "Database", "Prepared", "database_error", "masked"]

log = logging.getLogger("bantin.ledger")

SCHEMA_LOCK_KEY = 0x62616E74696E  # "bantin": the PostgreSQL advisory lock of schema changes

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
    transient = isinstance(exc, OperationalError | InterfaceError) or bool(
        getattr(exc, "connection_invalidated", False)
    )
    return StateError(f"state database {where}: {type(cause).__name__}: {first}", transient)


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
        if parsed.drivername in ("postgresql", "postgres"):
            # psycopg 3 (pip install -e '.[postgres]'), not SQLAlchemy's default psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        self.sqlite_path: Path | None = None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            self.sqlite_path = Path(parsed.database or "")
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        self.dialect = parsed.get_backend_name()
        try:
            self.engine: Engine = create_engine(
                parsed, pool_pre_ping=self.dialect != "sqlite", future=True
            )
        except ImportError as exc:
            raise StateError(
                f"state.url {masked(url)} needs a database driver that is not installed "
                f"({exc.name or exc}); for PostgreSQL run: .venv/bin/pip install -e '.[postgres]'"
            ) from exc
        except (ArgumentError, SQLAlchemyError) as exc:
            raise StateError(
                f"state.url {masked(url)} cannot be used: {type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0]}"
            ) from exc
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
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
        with self.engine.connect() as conn:
            current = migrations.at_head(conn)  # the usual start: Alembic is not even imported
        if current:
            self._mark_installed()
            return
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                # rebuilding a table that others refer to needs foreign keys off, and SQLite
                # takes that only outside a transaction; they are checked again at the end
                conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                conn.commit()
            with conn.begin():
                if self.dialect == "postgresql":
                    # hosts starting together on a new database: one creates, the others wait
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
                fresh = not inspect(conn).has_table("articles")
                if fresh and not create:
                    self._refuse_to_recreate()
                applied = migrations.upgrade(conn)  # a new database is marked installed by 0002
                if (
                    self.dialect == "sqlite"
                    and conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                ):
                    raise StateError(
                        f"state database {self.describe()}: a schema upgrade left rows that "
                        "refer to missing ones; restore the database from its backup"
                    )
            if self.dialect == "sqlite":
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()
        if applied and not fresh:
            log.info("state database %s upgraded: %s", self.describe(), ", ".join(applied))
        self._mark_installed()

    @property
    def _marker(self) -> Path:
        return self.home / "state.installed"

    def _mark_installed(self) -> None:
        """Note beside this host's files that it uses this database: should the database be
        lost or emptied later, it is refused rather than silently made anew."""
        try:
            known = self._marker.read_text(encoding="utf-8").splitlines()
        except OSError:
            known = []
        if self.describe() in known:
            return
        try:
            self._marker.parent.mkdir(parents=True, exist_ok=True)
            with self._marker.open("a", encoding="utf-8") as file:
                file.write(self.describe() + "\n")
        except OSError as exc:  # a read-only var/ only loses the protection; say so
            log.warning(
                "cannot write %s (%s): a lost state database would not be noticed",
                self._marker,
                exc.strerror,
            )

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
        """The file that shows this host used this very database before, if one does: the
        marker naming it, or (a SQLite state of the first release) the files left beside it."""
        try:
            if self.describe() in self._marker.read_text(encoding="utf-8").splitlines():
                return self._marker
        except OSError:
            pass
        if self.sqlite_path is None:
            return None  # a new database at another URL is a new installation's, on purpose
        home = self.home
        candidates = [
            home / "subscribers.last-good.toml",
            self.sqlite_path.with_name(self.sqlite_path.name + ".lock"),
        ]
        return next((path for path in candidates if path.exists()), None)

    def insert_new(self, table: Table, *keys: str) -> Any:
        """INSERT that leaves rows whose ``keys`` already exist as they are (another host, or
        another process, may have written them a moment ago)."""
        if self.dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))

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
        self.engine.dispose()

    @contextmanager
    def tx(self, *, durable: bool = True) -> Iterator[Connection]:
        """One transaction; StateError (naming the database) for any database failure.

        ``durable=False`` is for the sending path's own records (claims, outcomes), committed
        once or twice per message: on PostgreSQL their commit then returns before the server
        has flushed it to disk (``synchronous_commit = off``), as SQLite's WAL with
        synchronous=NORMAL does for every commit. Either way a commit survives a killed bantin;
        only a crash of the database server itself can lose the last fraction of a second of
        them, which means a message sent again, never one lost. An fsync per commit cost
        PostgreSQL half its sending speed.
        """
        try:
            with self.engine.begin() as conn:
                if not durable and self.dialect == "postgresql":
                    conn.exec_driver_sql(_NOT_WAITING_FOR_DISK)
                yield conn
        except SQLAlchemyError as exc:
            raise database_error(self.describe(), exc) from exc

    def run_many(
        self, batches: list[tuple[Prepared, list[dict[str, Any]]]], *, durable: bool = True
    ) -> None:
        """Run prepared statements over their parameter lists, in one commit, via the driver
        (``durable`` as for ``tx``).

        The driver connection is checked out of the pool each time (and pinged on PostgreSQL),
        so a database restart costs a reconnection, never a connection wedged for good.
        """
        try:
            with self.engine.begin() as conn:  # its commit is the driver connection's commit
                driver = conn.connection.driver_connection
                assert driver is not None
                cursor = driver.cursor()
                try:
                    # on PostgreSQL in one round trip (psycopg's pipeline mode): BEGIN, the
                    # SET LOCAL and every statement, where each was a round trip of its own
                    # on the sending loop's thread (43% of a run went to these commits)
                    # (psycopg 3 only: another driver named in state.url has no pipeline)
                    with driver.pipeline() if hasattr(driver, "pipeline") else nullcontext():
                        if not durable and self.dialect == "postgresql":
                            cursor.execute(_NOT_WAITING_FOR_DISK)
                        for statement, values in batches:
                            if values:
                                cursor.executemany(statement.sql, statement.parameters(values))
                finally:
                    cursor.close()
        except Exception as exc:
            raise database_error(self.describe(), exc) from exc


# for this transaction only: its commit does not wait for the WAL flush (see Database.tx)
_NOT_WAITING_FOR_DISK = "SET LOCAL synchronous_commit = off"


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
        # what SQLAlchemy would do to each value first (a Moment to the dialect's form)
        self.processors: dict[str, Any] = dict(compiled._bind_processors)

    def parameters(self, values: list[dict[str, Any]]) -> list[Any]:
        """``values`` as the driver takes them: named, or positional in the compiled order; the
        statement's fixed values fill the gaps, and each goes through its type's processor."""
        rows = [self._processed({**self.fixed, **v}) for v in values]
        if self.order is None:
            return rows
        return [tuple(row[k] for k in self.order) for row in rows]

    def _processed(self, row: dict[str, Any]) -> dict[str, Any]:
        for key, process in self.processors.items():
            if key in row and row[key] is not None:
                row[key] = process(row[key])
        return row


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL + NORMAL: a commit survives a killed process (the guarantee the ledger needs) without
    # an fsync per message; only a power cut can lose the last commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
