"""The articles' identities read straight from a SQLite state, for a restart of the site.

`bantin build` needs one thing from the ledger: which id each recorded file had (articles
``identities``). Through ``Database`` that costs SQLAlchemy's import, a quarter of a second of
a restart that otherwise takes a second. When the state is a SQLite file this host has used
before (its ``state.installed`` marker names it) and is at this bantin's newest revision
(``migrations.HEAD``), opening it through ``Database`` would change nothing, so the rows are
read with the standard library's driver. Anything else answers None and the caller opens the
ledger as usual, which upgrades, creates or refuses it: PostgreSQL, a URL with options, a new
or unlisted database, one behind or ahead of this bantin, a locked or damaged file.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from service.ledger.migrations import HEAD, VERSION_TABLE

__all__ = ["IDENTITIES_SQL", "identities_of", "sqlite_identities"]

log = logging.getLogger("bantin.ledger")

_PREFIX = "sqlite:///"
# the statement Articles.identities runs, as SQL the sqlite3 driver takes
IDENTITIES_SQL = (
    "SELECT id, fingerprint, source FROM articles WHERE fingerprint IS NOT NULL ORDER BY seq"
)
_MARKER = "state.installed"  # as Database writes it beside the file (ledger/db.py)
_BUSY_TIMEOUT_S = 10.0  # as long as Database waits for another writer


def identities_of(
    rows: Iterable[tuple[object, object, object]],
) -> tuple[dict[str, str], dict[str, str]]:
    """(fingerprint -> id, path -> id) from (id, fingerprint, source) rows in ``seq`` order:
    the later one wins where two share a fingerprint or a path."""
    by_fingerprint: dict[str, str] = {}
    by_path: dict[str, str] = {}
    for ident, fingerprint, source in rows:
        by_fingerprint[str(fingerprint)] = str(ident)
        if source:
            by_path[str(source)] = str(ident)
    return by_fingerprint, by_path


def sqlite_identities(url: str) -> tuple[dict[str, str], dict[str, str]] | None:
    """The identities in the SQLite state at ``url``, or None if it cannot be read this way
    (then open it through ``Database``; see the module)."""
    if not url.startswith(_PREFIX) or any(c in url for c in "?%#"):
        return None
    path = Path(url[len(_PREFIX) :])
    if not path.name or path.name == ":memory:":
        return None
    try:
        if str(path) not in (path.parent / _MARKER).read_text(encoding="utf-8").splitlines():
            return None
        if not path.is_file() or path.stat().st_size == 0:
            return None
        # mode=rw: never creates the file (a lost database is Database's to refuse)
        connection = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=_BUSY_TIMEOUT_S
        )
    except (OSError, ValueError, sqlite3.Error):
        return None
    try:
        versions = connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
        if versions != [(HEAD,)]:
            return None
        return identities_of(connection.execute(IDENTITIES_SQL))
    except sqlite3.Error as exc:  # no version table, locked past the timeout, damaged
        log.debug("state %s read through Database: %s", path, exc)
        return None
    finally:
        connection.close()
