"""HTTP: the output directory for feed readers, one-click unsubscribe, health and metrics.

``create_app`` builds the Starlette app; ``HttpServer`` runs it with uvicorn inside the
service's own event loop and leaves the signals to the service.

The output directory itself is served by ``static.OutputFiles``.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.errors import BantinError, TemplateError
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.metrics import Metrics
from service.static import NO_STORE, OutputFiles, plain_page
from service.templates import Templates
from service.tokens import read_token

log = logging.getLogger("bantin.web")

UNSUBSCRIBE_TEMPLATE = "unsubscribe.html.j2"
_UNSUBSCRIBE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex",
}

UnsubscribeState = Literal["confirm", "done", "already", "invalid", "error"]


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
    return plain_page(html.escape(_HEADINGS[state]), texts[state], "vi")


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
    site = OutputFiles(output_dir, max_age, metrics)
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
        return Response(text, status_code=status, media_type="application/json", headers=NO_STORE)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.request("other", 200)
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE, headers=NO_STORE)

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
