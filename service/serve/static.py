"""The output directory over HTTP: strong ETags, Last-Modified, 304s, HEAD, gzip, no escapes.

Files are served with a strong ETag from their bytes (cached by path, mtime, size and inode,
so a poll costs one ``stat``) and compressed once per file version: the build's own ``.gz``
beside the file is read when it was written with this version (same mtime), else the bytes are
compressed here, into the same bytes. A ``.gz`` asked for by name is a download
(``application/gzip``), never a page. Paths are checked segment
by segment on the raw request path, before any decoding can turn ``%2e%2e`` or ``%2f`` into
something else, and the resolved file must lie inside the output directory: anything else is
a 404.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from service.metrics import Metrics, PathKind
from service.publish.layout import FEED_FILES, NOT_FOUND_PAGE
from service.publish.output import GZIP_SUFFIX, gzip_bytes

CACHE_BUDGET = 64 * 1024 * 1024  # bytes of file bodies (plain + gzip) kept in memory
# Files larger than the cache keeps (an operator's PDF, a video) are streamed from disk as they
# are: never read whole into memory, never compressed on the fly, their ETag made from the
# file's stamp. Feeds and pages are far smaller, and served from memory.
STREAM_MIN = CACHE_BUDGET // 8
_CHUNK = 256 * 1024
_TYPES = {
    **FEED_FILES,
    ".html": "text/html",
    ".xml": "application/xml",
    ".json": "application/json",
    ".css": "text/css",
    ".js": "text/javascript",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
    ".ics": "text/calendar",  # with "; charset=utf-8", as every text type
    # the build's rss.xml.gz asked for by name: the compressed file itself, as nginx sends it
    # (mimetypes would say application/xml, and a reader would take gzip bytes for a feed)
    ".gz": "application/gzip",
}
_TEXT_TYPES = ("text/", "application/xml", "application/json", "image/svg+xml")
_TEXT_TYPES_EXTRA = ("+xml", "+json", "javascript")
NO_STORE = {"Cache-Control": "no-store"}


# --- static files -------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """One version of one file: its bytes, their ETag, and the gzip variant once asked for."""

    version: tuple[int, int, int]  # (mtime_ns, size, inode)
    mtime: float
    body: bytes
    etag: str
    gz: bytes | None = None
    gz_etag: str = ""

    def compressed(self, gz: bytes) -> None:
        self.gz = gz
        # from the gzip's own bytes: the build's .gz, one an operator put there and one made
        # here may differ for the same file, and a strong ETag names exactly one set of bytes
        self.gz_etag = '"' + hashlib.sha256(gz).hexdigest()[:32] + '-gz"'

    @property
    def cost(self) -> int:
        return len(self.body) + len(self.gz or b"")


def _version(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _load(path: Path) -> _Entry:
    # fstat on the open file: the version then describes exactly the bytes read, even if
    # the builder replaces the file between our stat and our read.
    with path.open("rb") as handle:
        st = os.fstat(handle.fileno())
        body = handle.read()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return _Entry(_version(st), st.st_mtime, body, etag)


def _compressed(path: Path, entry: _Entry) -> bytes:
    """The gzip of ``entry``: the build's ``.gz`` beside ``path`` if it was written with this
    version of the file (the build stamps it with the file's mtime), else compressed here.
    Its ETag comes from its own bytes (``_Entry.gz_etag``)."""
    try:
        with open(str(path) + GZIP_SUFFIX, "rb") as handle:
            if os.fstat(handle.fileno()).st_mtime_ns == entry.version[0]:
                return handle.read()
    except OSError:
        pass  # none (a file an operator put there, a tiny one), or unreadable
    return gzip_bytes(entry.body)


class _FileCache:
    """Entries by relative path, least recently used first out past the byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._charged: dict[str, int] = {}  # what each entry cost when put (gz comes later)

    def get(self, key: str, version: tuple[int, int, int]) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None or entry.version != version:
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: _Entry) -> None:
        if self._entries.pop(key, None) is not None:
            self.size -= self._charged.pop(key)
        if entry.cost > self.budget // 8:
            return  # a huge file is served, just not kept
        self._entries[key] = entry
        self._charged[key] = entry.cost
        self.size += entry.cost
        while self.size > self.budget:
            dropped, _ = self._entries.popitem(last=False)
            self.size -= self._charged.pop(dropped)


@dataclass(frozen=True, slots=True)
class _Found:
    path: Path
    key: str  # path under the output directory, "/"-separated
    st: os.stat_result


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


def _segments(raw_path: bytes) -> tuple[list[str], bool] | None:
    """The decoded path segments and whether the path names a directory, or None if unsafe."""
    if not raw_path.startswith(b"/"):
        return None
    pieces = raw_path[1:].split(b"/")
    directory = pieces[-1] == b""
    if directory:
        pieces.pop()
    names: list[str] = []
    for piece in pieces:
        try:
            name = unquote_to_bytes(piece).decode("utf-8")
        except UnicodeDecodeError:
            return None
        # Empty (//), dot segments, hidden files (temp files of atomic writes), and anything
        # that a decoder or the OS could read as a separator or a drive.
        if not name or name.startswith(".") or any(c in name for c in "/\\\x00:"):
            return None
        names.append(name)
    return names, directory


def _locate(root: Path, raw_path: bytes) -> _Found | _Redirect | None:
    parsed = _segments(raw_path)
    if parsed is None:
        return None
    names, directory = parsed
    if directory:
        names = [*names, "index.html"]
    try:
        real_root = root.resolve(strict=True)
        real = root.joinpath(*names).resolve(strict=True)
        st = real.stat()
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return None
    if not real.is_relative_to(real_root):
        return None  # a symlink that points outside
    if stat.S_ISDIR(st.st_mode) and not directory:
        return _Redirect("/" + "/".join(quote(name) for name in names) + "/")
    if not stat.S_ISREG(st.st_mode):
        return None
    return _Found(real, "/".join(names), st)


def _content_type(name: str) -> str:
    suffix = os.path.splitext(name)[1].lower()
    kind = FEED_FILES.get(name) or _TYPES.get(suffix) or mimetypes.guess_type(name)[0]
    kind = kind or "application/octet-stream"
    return kind + "; charset=utf-8" if _compressible(kind) else kind


def _compressible(content_type: str) -> bool:
    return content_type.startswith(_TEXT_TYPES) or any(
        part in content_type for part in _TEXT_TYPES_EXTRA
    )


def _kind(name: str) -> PathKind:
    if name in FEED_FILES:
        return "feed"
    return "page" if name.endswith(".html") else "other"


def accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (``gzip`` or ``*`` with q > 0)."""
    if not header:
        return False
    gzip_q: float | None = None
    star_q: float | None = None
    for item in header.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            gzip_q = q
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match against ``etag``: a list, ``*``, and weak comparison (``W/`` ignored)."""
    for item in header.split(","):
        tag = item.strip()
        if tag == "*":
            return True
        tag = tag.removeprefix("W/")
        if tag == etag:
            return True
    return False


def _not_modified(request: Request, etag: str, mtime: float) -> bool:
    # If-None-Match, when present, decides alone (RFC 9110 13.2.2).
    none_match = request.headers.getlist("if-none-match")
    if none_match:
        return etag_matches(",".join(none_match), etag)
    since_header = request.headers.get("if-modified-since")
    if since_header is None:
        return False
    try:
        since = parsedate_to_datetime(since_header)
    except (TypeError, ValueError, IndexError):
        return False  # an unreadable date is ignored, as RFC 9110 says
    if since.tzinfo is None:  # "-0000" parses naive; HTTP dates are UTC
        since = since.replace(tzinfo=UTC)
    return int(mtime) <= since.timestamp()


class OutputFiles:
    """GET and HEAD for the files of the output directory."""

    def __init__(self, root: Path, max_age: Callable[[], int], metrics: Metrics) -> None:
        self.root = root
        self.max_age = max_age
        self.metrics = metrics
        self.cache = _FileCache(CACHE_BUDGET)

    async def handle(self, request: Request) -> Response:
        """Answer a GET or HEAD: the file (gzipped when asked for and smaller, 304 if unchanged),
        a redirect to a directory's trailing slash, or 404."""
        raw_path: bytes = request.scope.get("raw_path") or quote(request.url.path).encode()
        found = _locate(self.root, raw_path)
        if isinstance(found, _Redirect):
            self.metrics.request("other", 301)
            return Response(status_code=301, headers={"Location": found.location})
        if found is None:
            self.metrics.request("other", 404)
            return await self._not_found()
        kind = _kind(found.key.rsplit("/", 1)[-1])
        response = await self._serve(request, found)
        self.metrics.request(kind, response.status_code)
        return response

    async def _not_found(self) -> Response:
        """The built 404.html (the site's own page, with its way home), else a plain one."""
        try:
            page = await run_in_threadpool((self.root / NOT_FOUND_PAGE).read_bytes)
        except OSError:
            return _not_found()
        return Response(page, status_code=404, media_type="text/html", headers=NO_STORE)

    async def _entry(self, found: _Found, want_gzip: bool) -> _Entry:
        entry = self.cache.get(found.key, _version(found.st))
        if entry is None:
            entry = await run_in_threadpool(_load, found.path)
            self.cache.put(found.key, entry)
        if want_gzip and entry.gz is None:
            entry.compressed(await run_in_threadpool(_compressed, found.path, entry))
            self.cache.put(found.key, entry)  # re-account its size
        return entry

    async def _serve(self, request: Request, found: _Found) -> Response:
        if found.st.st_size > STREAM_MIN:
            return self._stream(request, found)
        content_type = _content_type(found.key.rsplit("/", 1)[-1])
        compressible = _compressible(content_type)
        want_gzip = compressible and accepts_gzip(request.headers.get("accept-encoding"))
        try:
            entry = await self._entry(found, want_gzip)
        except OSError:  # vanished or unreadable between the stat and the read
            return await self._not_found()
        # gzip only when it pays: a tiny file grows when compressed.
        use_gzip = want_gzip and entry.gz is not None and len(entry.gz) < len(entry.body)
        body = entry.gz if use_gzip and entry.gz is not None else entry.body
        headers = {
            "ETag": entry.gz_etag if use_gzip else entry.etag,
            "Last-Modified": formatdate(entry.mtime, usegmt=True),
            "Cache-Control": f"public, max-age={self.max_age()}",
            "X-Content-Type-Options": "nosniff",
        }
        if compressible:
            headers["Vary"] = "Accept-Encoding"
        if _not_modified(request, headers["ETag"], entry.mtime):
            return Response(status_code=304, headers=headers)
        headers["Content-Type"] = content_type
        headers["Content-Length"] = str(len(body))
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
        return Response(b"" if request.method == "HEAD" else body, headers=headers)

    def _stream(self, request: Request, found: _Found) -> Response:
        st = found.st
        stamp = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}".encode()
        headers = {
            "ETag": '"' + hashlib.sha256(stamp).hexdigest()[:32] + '"',
            "Last-Modified": formatdate(st.st_mtime, usegmt=True),
            "Cache-Control": f"public, max-age={self.max_age()}",
            "X-Content-Type-Options": "nosniff",
        }
        if _not_modified(request, headers["ETag"], st.st_mtime):
            return Response(status_code=304, headers=headers)
        headers["Content-Type"] = _content_type(found.key.rsplit("/", 1)[-1])
        headers["Content-Length"] = str(st.st_size)
        if request.method == "HEAD":
            return Response(b"", headers=headers)
        return StreamingResponse(_chunks(found.path, st.st_size), headers=headers)


async def _chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """The first ``size`` bytes of ``path``, read in the thread pool a chunk at a time."""
    handle = await run_in_threadpool(path.open, "rb")
    try:
        left = size
        while left > 0:
            chunk = await run_in_threadpool(handle.read, min(_CHUNK, left))
            if not chunk:
                break  # truncated meanwhile: the client sees a short body and retries
            left -= len(chunk)
            yield chunk
    finally:
        await run_in_threadpool(handle.close)


def _not_found() -> Response:
    page = plain_page(
        "Không tìm thấy",
        '<p>Không tìm thấy trang này.</p>\n<p><a href="/">Về trang chủ</a></p>',
        "vi",
    )
    return Response(page, status_code=404, media_type="text/html", headers=NO_STORE)


def plain_page(title: str, body: str, language: str) -> str:
    """A bare HTML page for built-in pages; ``title`` and ``body`` go in unescaped: escape them."""
    return (
        f'<!DOCTYPE html>\n<html lang="{language}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    )
