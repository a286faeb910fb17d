"""HTTP: the output directory for feed readers, one-click unsubscribe, health and metrics.

``create_app`` builds the Starlette app; ``HttpServer`` runs it with uvicorn inside the
service's own event loop and leaves the signals to the service.

Static files are served with a strong ETag from their bytes (cached by path, mtime, size and
inode, so a poll costs one ``stat``), Last-Modified, 304s, HEAD and gzip (compressed once per
file version). Paths are checked segment by segment on the raw request path, before any
decoding can turn ``%2e%2e`` or ``%2f`` into something else, and the resolved file must lie
inside the output directory: anything else is a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import html
import json
import logging
import mimetypes
import os
import socket
import stat
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Literal
from urllib.parse import quote, unquote_to_bytes

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.errors import BantinError, TemplateError
from service.feeds import FEED_FILES
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.metrics import Metrics, PathKind
from service.templates import Templates
from service.tokens import read_token

log = logging.getLogger("bantin.web")

UNSUBSCRIBE_TEMPLATE = "unsubscribe.html.j2"
CACHE_BUDGET = 64 * 1024 * 1024  # bytes of file bodies (plain + gzip) kept in memory
_TYPES = {
    **FEED_FILES,
    ".html": "text/html",
    ".xml": "application/xml",
    ".json": "application/json",
    ".css": "text/css",
    ".js": "text/javascript",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
}
_TEXT_TYPES = ("text/", "application/xml", "application/json", "image/svg+xml")
_TEXT_TYPES_EXTRA = ("+xml", "+json", "javascript")
_NO_STORE = {"Cache-Control": "no-store"}
_UNSUBSCRIBE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex",
}

UnsubscribeState = Literal["confirm", "done", "already", "invalid", "error"]


# --- static files -------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """One version of one file: its bytes, their ETag, and the gzip variant once asked for."""

    version: tuple[int, int, int]  # (mtime_ns, size, inode)
    mtime: float
    body: bytes
    etag: str
    gz: bytes | None = None

    @property
    def gz_etag(self) -> str:
        return self.etag[:-1] + '-gz"'

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


def _compress(body: bytes) -> bytes:
    return gzip.compress(body, compresslevel=9, mtime=0)  # mtime=0: same bytes every time


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


class _Site:
    """GET and HEAD for the files of the output directory."""

    def __init__(self, root: Path, max_age: Callable[[], int], metrics: Metrics) -> None:
        self.root = root
        self.max_age = max_age
        self.metrics = metrics
        self.cache = _FileCache(CACHE_BUDGET)

    async def handle(self, request: Request) -> Response:
        raw_path: bytes = request.scope.get("raw_path") or quote(request.url.path).encode()
        found = _locate(self.root, raw_path)
        if isinstance(found, _Redirect):
            self.metrics.request("other", 301)
            return Response(status_code=301, headers={"Location": found.location})
        if found is None:
            self.metrics.request("other", 404)
            return _not_found()
        kind = _kind(found.key.rsplit("/", 1)[-1])
        response = await self._serve(request, found)
        self.metrics.request(kind, response.status_code)
        return response

    async def _entry(self, found: _Found, want_gzip: bool) -> _Entry:
        entry = self.cache.get(found.key, _version(found.st))
        if entry is None:
            entry = await run_in_threadpool(_load, found.path)
            self.cache.put(found.key, entry)
        if want_gzip and entry.gz is None:
            entry.gz = await run_in_threadpool(_compress, entry.body)
            self.cache.put(found.key, entry)  # re-account its size
        return entry

    async def _serve(self, request: Request, found: _Found) -> Response:
        content_type = _content_type(found.key.rsplit("/", 1)[-1])
        compressible = _compressible(content_type)
        want_gzip = compressible and accepts_gzip(request.headers.get("accept-encoding"))
        try:
            entry = await self._entry(found, want_gzip)
        except OSError:  # vanished or unreadable between the stat and the read
            return _not_found()
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


def _not_found() -> Response:
    page = _page("Không tìm thấy", "<p>Không tìm thấy trang này.</p>", "vi")
    return Response(page, status_code=404, media_type="text/html", headers=_NO_STORE)


def _page(title: str, body: str, language: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="{language}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n{body}\n</body>\n</html>\n"
    )


# --- unsubscribe --------------------------------------------------------------------------

_HEADINGS: dict[UnsubscribeState, str] = {
    "confirm": "Hủy đăng ký nhận bản tin",
    "done": "Đã hủy đăng ký",
    "already": "Đã hủy đăng ký",
    "invalid": "Liên kết không hợp lệ",
    "error": "Chưa hủy được đăng ký",
}


def fallback_unsubscribe_page(
    state: UnsubscribeState, *, site_title: str, email: str | None
) -> str:
    """The built-in page, used when the operator's templates have no usable one."""
    site = html.escape(site_title)
    address = html.escape(email or "")
    texts: dict[UnsubscribeState, str] = {
        "confirm": (
            f"<p>Ngừng gửi bản tin của {site} tới <strong>{address}</strong>?</p>\n"
            '<form method="post" action="">\n'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
            '<button type="submit">Hủy đăng ký</button>\n</form>'
        ),
        "done": f"<p>Địa chỉ <strong>{address}</strong> sẽ không nhận bản tin của {site} nữa.</p>",
        "already": f"<p>Địa chỉ <strong>{address}</strong> đã được hủy đăng ký trước đó.</p>",
        "invalid": (
            "<p>Liên kết hủy đăng ký này không đúng hoặc đã bị thay đổi. "
            "Hãy dùng liên kết trong email bản tin mới nhất.</p>"
        ),
        "error": "<p>Có lỗi tạm thời, chưa hủy được đăng ký. Vui lòng thử lại sau ít phút.</p>",
    }
    return _page(html.escape(_HEADINGS[state]), texts[state], "vi")


class _Unsubscribe:
    """GET shows a confirmation (mail scanners follow links); POST unsubscribes."""

    def __init__(
        self,
        *,
        site_title: Callable[[], str],
        secret_key: Callable[[], bytes],
        unsubscribe: Callable[[str], Awaitable[bool]],
        metrics: Metrics,
        templates: Callable[[], Templates | None],
    ) -> None:
        self.site_title = site_title
        self.secret_key = secret_key
        self.unsubscribe = unsubscribe
        self.metrics = metrics
        self.templates = templates

    async def handle(self, request: Request) -> Response:
        email = read_token(self.secret_key(), str(request.path_params["token"]))
        if email is None:
            return self._answer("invalid", None, 400)
        if request.method != "POST":
            return self._answer("confirm", email, 200)
        # RFC 8058 one-click sends "List-Unsubscribe=One-Click"; our form sends the same. The
        # signed token is the authority, so the body is not required to match.
        try:
            newly = await self.unsubscribe(email)
        except Exception:
            log.exception("unsubscribe failed; the subscriber was told to try again later")
            return self._answer("error", email, 503)
        return self._answer("done" if newly else "already", email, 200)

    def _answer(self, state: UnsubscribeState, email: str | None, status: int) -> Response:
        self.metrics.request("other", status)
        return Response(
            self._render(state, email),
            status_code=status,
            media_type="text/html",
            headers=_UNSUBSCRIBE_HEADERS,
        )

    def _render(self, state: UnsubscribeState, email: str | None) -> str:
        templates, site_title = self.templates(), self.site_title()
        if templates is not None:
            try:
                return templates.render(
                    UNSUBSCRIBE_TEMPLATE,
                    state=state,
                    email=email or "",
                    site_title=site_title,
                    heading=_HEADINGS[state],
                )
            except TemplateError as exc:
                log.warning("%s; using the built-in unsubscribe page", exc)
        return fallback_unsubscribe_page(state, site_title=site_title, email=email)


# --- the app ------------------------------------------------------------------------------


def create_app(
    *,
    output_dir: Path,
    site_title: Callable[[], str],
    max_age: Callable[[], int],
    secret_key: Callable[[], bytes],
    unsubscribe: Callable[[str], Awaitable[bool]],
    health: Callable[[], tuple[dict[str, object], bool]],
    metrics: Metrics,
    templates: Callable[[], Templates | None] = lambda: None,
) -> Starlette:
    """The HTTP app. The callables are asked on every request, so live config applies at once
    (the output directory alone needs a restart).

    ``unsubscribe(email)`` records the unsubscription and returns True if it is new;
    ``health()`` returns the JSON body and whether the service is healthy.
    """
    site = _Site(output_dir, max_age, metrics)
    unsubscribe_endpoint = _Unsubscribe(
        site_title=site_title,
        secret_key=secret_key,
        unsubscribe=unsubscribe,
        metrics=metrics,
        templates=templates,
    )

    async def healthz(request: Request) -> Response:
        body, healthy = health()
        status = 200 if healthy else 503
        metrics.request("other", status)
        text = json.dumps(body, ensure_ascii=False, default=str, indent=2) + "\n"
        return Response(text, status_code=status, media_type="application/json", headers=_NO_STORE)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.request("other", 200)
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE, headers=_NO_STORE)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics_endpoint, methods=["GET", "HEAD"]),
            Route(
                "/unsubscribe/{token}", unsubscribe_endpoint.handle, methods=["GET", "HEAD", "POST"]
            ),
            Route("/{path:path}", site.handle, methods=["GET", "HEAD"]),
        ]
    )


# --- running it ---------------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    """uvicorn.Server that leaves signals alone and says when it is accepting."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn 0.54 replaces SIGINT/SIGTERM handlers here and re-raises the signal after
        # its shutdown (the process then dies with -15): the service owns the signals.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket. Its proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on
    accepted connections only then (socket.create_server gives proto 0), and without it a
    small response written in two parts waits ~40 ms for the client's delayed ACK."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise _bind_error(host, port, exc) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, exc) from exc
    return sock


def _bind_error(host: str, port: int, exc: OSError) -> BantinError:
    return BantinError(
        f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
        "stop the other program on that port or change server.host / server.port"
    )


class HttpServer:
    """The app served by uvicorn as a task of the running loop, without its signal handlers.

    ``await start()`` binds (port 0 picks a free one: read ``port``) and returns once the
    server accepts; ``await stop()`` finishes open requests (up to ``grace`` seconds). Also an
    async context manager.
    """

    def __init__(self, app: Starlette, host: str, port: int, *, grace: float = 5.0) -> None:
        self.host = host
        self._requested_port = port
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            server_header=False,
            timeout_graceful_shutdown=int(grace) or 1,
        )
        self._server = _Uvicorn(self._config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the chosen one when asked for port 0)."""
        if self._socket is None:
            raise RuntimeError("the HTTP server is not started")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind and start serving; raise BantinError if the address cannot be used."""
        if self._task is not None:
            raise RuntimeError("the HTTP server is already started")
        self._socket = _bind(self.host, self._requested_port)
        # Our own socket: uvicorn's bind would log and sys.exit() on a busy port.
        self._task = asyncio.create_task(
            self._server.serve(sockets=[self._socket]), name="bantin-http"
        )
        ready = asyncio.create_task(self._server.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await self._task  # it ended before accepting: let its exception out
            raise BantinError(f"the HTTP server on {self.host}:{self.port} stopped at start-up")
        log.info("serving HTTP on %s/", self.url)

    def request_stop(self) -> None:
        """Ask the server to stop (safe from a signal handler); ``stop()`` waits for it."""
        self._server.should_exit = True

    async def stop(self) -> None:
        """Stop accepting, let open requests finish, and return when the server is down."""
        self.request_stop()
        if self._task is not None:
            await self._task

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The serving task, for the service to watch (it ends if the server dies)."""
        return self._task

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
