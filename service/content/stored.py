"""The scan index's articles: everything but their bodies unpickled at a restart, each body
decoded from the index's bytes the first time something reads it.

A restart over an unchanged tree renders nothing, so it never reads an article's HTML; yet
unpickling 10,000 articles' 24 million characters of it was a third of loading the scan index.
``save`` writes the articles' fields (the body as a span) in one pickle and their bodies,
UTF-8, after it; ``load`` checks the whole file's checksum (index.read: a body cut short or
corrupted refuses the whole index, and the scan starts cold), unpickles the fields and gives
``StoredArticle``s that hold the bytes and a span.

A ``StoredArticle`` is an ``Article`` in every way a reader can tell: equal to (and hashing as)
the Article with the same fields, shown and pickled as one (so worker processes and copies get
plain Articles with their bodies), its ``content_html`` decoded on first read and kept.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.content import index
from service.model import Article

__all__ = ["StoredArticle", "load", "save"]

log = logging.getLogger("bantin.index")

_NAMES = tuple(field.name for field in dataclasses.fields(Article))
_BODY = _NAMES.index("content_html")
# the slot of each field on Article, set and read directly (an Article is frozen)
_SLOTS = {name: Article.__dict__[name] for name in _NAMES}
_BODY_SLOT = _SLOTS["content_html"]
_FILLED = [(i, _SLOTS[name].__set__) for i, name in enumerate(_NAMES) if i != _BODY]
_LENGTH = struct.Struct(">Q")  # the fields' pickle's length, before it
_ENCODING = ("utf-8", "surrogatepass")  # any str round-trips


class StoredArticle(Article):
    """An Article from the scan index; its body is decoded from ``_bodies`` when first read."""

    __slots__ = ("_bodies", "_span")
    _bodies: bytes
    _span: tuple[int, int]

    @property
    def content_html(self) -> str:
        try:
            text: str = _BODY_SLOT.__get__(self, Article)
            return text
        except AttributeError:  # not read yet
            start, end = self._span
            text = self._bodies[start:end].decode(*_ENCODING)
            _BODY_SLOT.__set__(self, text)
            return text

    @content_html.setter
    def content_html(self, text: str) -> None:  # Article.__init__, as dataclasses.replace runs it
        _BODY_SLOT.__set__(self, text)

    def fields(self) -> tuple[Any, ...]:
        """Every field's value, in Article's order (the body decoded)."""
        return tuple(getattr(self, name) for name in _NAMES)

    def plain(self) -> Article:
        """The same article as a plain Article."""
        return Article(*self.fields())

    def body_bytes(self) -> bytes:
        """The body as UTF-8, without decoding it if it was not read."""
        try:
            text: str = _BODY_SLOT.__get__(self, Article)
        except AttributeError:
            start, end = self._span
            return self._bodies[start:end]
        return text.encode(*_ENCODING)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Article):
            return NotImplemented
        return self.fields() == tuple(getattr(other, name) for name in _NAMES)

    __hash__ = Article.__hash__

    def __repr__(self) -> str:
        return repr(self.plain())

    def __reduce__(self) -> tuple[Any, ...]:
        return (Article, self.fields())


def save(path: Path, key: object, files: Mapping[str, tuple[Any, Article]]) -> None:
    """Write ``files`` (path -> (stamp, article)) for ``key`` to ``path`` atomically; a failure
    is logged, not raised."""
    bodies = bytearray()
    entries: dict[str, tuple[Any, tuple[Any, ...]]] = {}
    for relative, (stamp, article) in files.items():
        if isinstance(article, StoredArticle):
            body = article.body_bytes()
        else:
            body = article.content_html.encode(*_ENCODING)
        values = [getattr(article, name) for name in _NAMES if name != "content_html"]
        values.insert(_BODY, (len(bodies), len(bodies) + len(body)))
        bodies += body
        entries[relative] = (stamp, tuple(values))
    fields = pickle.dumps((key, entries), protocol=pickle.HIGHEST_PROTOCOL)
    index.write(path, _LENGTH.pack(len(fields)) + fields + bodies)


def load(path: Path, key: object) -> dict[str, tuple[Any, Article]] | None:
    """What ``save`` wrote for ``key``; None if there is nothing, it is damaged (anywhere, the
    bodies too), or it was made for another key."""
    data = index.read(path)
    if data is None or len(data) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack_from(data)
    start = _LENGTH.size + length
    loaded = index.unpickle(path, data[_LENGTH.size : start]) if start <= len(data) else None
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        return None
    saved_key, entries = loaded
    if not index.same_key(path, saved_key, key):
        return None
    bodies = data[start:]
    try:
        return {
            relative: (stamp, _article(values, bodies))
            for relative, (stamp, values) in entries.items()
        }
    except (TypeError, ValueError) as exc:  # the right key, yet not this format
        log.warning("index %s cannot be read (%s); starting cold", path, exc)
        return None


def _article(values: tuple[Any, ...], bodies: bytes) -> StoredArticle:
    if len(values) != len(_NAMES):
        raise ValueError(f"an article of {len(values)} fields, not {len(_NAMES)}")
    start, end = values[_BODY]
    if not 0 <= start <= end <= len(bodies):
        raise ValueError(f"a body at {start}-{end} of {len(bodies)} bytes")
    article = object.__new__(StoredArticle)
    for i, fill in _FILLED:
        fill(article, values[i])
    object.__setattr__(article, "_bodies", bodies)
    object.__setattr__(article, "_span", (start, end))
    return article
