"""A persisted index: what a scan or a build knew, kept on disk so that a restart re-reads nothing.

A restart of ``bantin run`` (or a second ``bantin build``) at 100,000 articles used to parse
and render every article again. ``save`` writes what the last scan parsed (path, stamp →
Article) or what the last build rendered to a cache file; ``load`` gives it back only if it
is whole and was made for the same ``key`` (the bantin code, the settings and templates that
shape the result), else None and the caller starts cold. What is loaded is never trusted
blindly: the scan still stats every file and re-parses any whose (mtime, size, inode) differ,
exactly as a rescan does, and the build checks each page file it would skip.

The file is a pickle read with an allowlist of the classes it may hold (plain data of
``service.model`` and the errors), under a SHA-256 checksum of the whole, so a file cut short,
corrupted or swapped for another pickle is refused, not executed. (SHA-256 and not BLAKE2: the
CPU computes it, 0.02 s for the 36 MB index of 10,000 articles against 0.07 s.)
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import service

__all__ = [
    "SAVE_EVERY",
    "Throttle",
    "code_version",
    "load",
    "read",
    "same_key",
    "save",
    "unpickle",
    "write",
]

log = logging.getLogger("bantin.index")

# seconds between two saves of a changed index: a save writes the whole index (tens of MB at
# 100,000 articles), which must not follow every edit of a running service; an index a little
# behind costs only the re-parsing of what changed since, after a restart
SAVE_EVERY = 300.0
_MAGIC = b"bantin-index 2\n"  # 2: SHA-256 (1 was BLAKE2b)
_DIGEST = 32
# what an index may hold: (module, name) of every class its pickle names
_ALLOWED = {
    ("service.model", "Article"),
    ("service.model", "Category"),
    ("service.model", "Event"),
    ("service.errors", "ArticleError"),
    ("datetime", "datetime"),
    ("datetime", "timezone"),
    ("datetime", "timedelta"),
    ("zoneinfo", "ZoneInfo"),
    ("zoneinfo._zoneinfo", "ZoneInfo"),
    ("builtins", "frozenset"),
    ("builtins", "set"),
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
}


def _zone_method(owner: object, name: str) -> Any:
    """``getattr`` as a pickle of a ZoneInfo uses it (ZoneInfo._unpickle), and for nothing else:
    the real one would reach any class from an allowed one."""
    if owner is not ZoneInfo or name != "_unpickle":
        raise pickle.UnpicklingError(f"getattr({owner!r}, {name!r}) is not allowed in an index")
    return ZoneInfo._unpickle  # type: ignore[attr-defined]


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _zone_method
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an index")
        return super().find_class(module, name)


_code: str | None = None


def code_version() -> str:
    """bantin's version and a hash of its own source: a new release or a changed parser or
    renderer invalidates every index (a development tree changes without a new version)."""
    global _code
    if _code is None:
        digest = hashlib.blake2b(service.__version__.encode(), digest_size=16)
        package = Path(service.__file__).parent
        for path in sorted(package.rglob("*.py")):
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
        _code = digest.hexdigest()
    return _code


class Throttle:
    """When an index with changes in it is due to be saved: at once the first time, then at most
    once every SAVE_EVERY seconds (changes in between are saved with the next due save)."""

    def __init__(self) -> None:
        self._saved_at: float | None = None
        self._dirty = False

    def due(self, changed: bool) -> bool:
        """Note whether the work changed; True if it should be saved now."""
        self._dirty = self._dirty or changed
        now = time.monotonic()
        if not self._dirty or (self._saved_at is not None and now - self._saved_at < SAVE_EVERY):
            return False
        self._saved_at, self._dirty = now, False
        return True


def _checksum(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def save(path: Path, key: object, payload: object) -> None:
    """Write ``payload`` for ``key`` to ``path`` atomically; a failure is logged, not raised
    (without an index the next start is only slower)."""
    write(path, pickle.dumps((key, payload), protocol=pickle.HIGHEST_PROTOCOL))


def load(path: Path, key: object) -> Any | None:
    """The payload saved for ``key`` at ``path``; None if there is none, it is damaged, or it
    was made for another key (then the caller starts cold)."""
    data = read(path)
    if data is None:
        return None
    loaded = unpickle(path, data)
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        return None
    saved_key, payload = loaded
    return payload if same_key(path, saved_key, key) else None


def write(path: Path, data: bytes) -> None:
    """Write ``data`` under the index header (magic, checksum) to ``path`` atomically; a
    failure is logged, not raised."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-" + path.name)
        with os.fdopen(fd, "wb") as file:
            file.write(_MAGIC + _checksum(data) + data)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("cannot write the index %s (%s); the next start reads everything", path, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def read(path: Path) -> bytes | None:
    """What ``write`` wrote to ``path``, whole; None if there is nothing, it is not an index
    of this bantin's format, or its checksum fails (cut short, corrupted)."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC)
    if not raw.startswith(_MAGIC) or len(raw) < head + _DIGEST:
        if raw.startswith(_MAGIC[:-2]) and not raw.startswith(_MAGIC):
            log.info("index %s was written by another bantin; starting cold", path)
        else:
            log.warning("index %s is not one of ours; starting cold", path)
        return None
    checksum, data = raw[head : head + _DIGEST], raw[head + _DIGEST :]
    if _checksum(data) != checksum:
        log.warning("index %s is damaged; starting cold", path)
        return None
    return data


def unpickle(path: Path, data: bytes) -> Any | None:
    """``data`` unpickled with the allowlist; None (logged) if it cannot be."""
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except Exception as exc:  # a checksum-valid file we cannot read: another version's
        log.warning("index %s cannot be read (%s); starting cold", path, exc)
        return None


def same_key(path: Path, saved: object, key: object) -> bool:
    """Whether the index at ``path`` was made for ``key`` (logged when not)."""
    if saved != key:
        log.info("index %s was made for other code, settings or templates; starting cold", path)
        return False
    return True
