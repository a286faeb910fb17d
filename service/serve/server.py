"""The HTTP server's lifecycle: uvicorn inside the service's own event loop, signals left alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import time
from collections.abc import Iterator
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.errors import BantinError

__all__ = ["HttpServer", "connection_limit"]

log = logging.getLogger("bantin.web")


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


# Connections asyncio accepts per wake-up of the loop (the backlog it is given). One accepted
# past the limit holds its descriptor for four turns of the loop: accepted, made a transport,
# refused by connection_made, closed. The loop keeps accepting meanwhile, so up to four bursts
# are in flight, and the connection limit leaves ACCEPT_HEADROOM descriptors free for them.
# (With the burst at 64 and the same headroom, 512 idle connections at a file limit of 256
# made "Too many open files" about one run in three.)
ACCEPT_BURST = 16
ACCEPT_HEADROOM = 4 * ACCEPT_BURST
# the kernel's queue of connections not yet accepted: set after asyncio's listen(ACCEPT_BURST),
# so a burst of new clients waits there instead of having its SYNs dropped
LISTEN_BACKLOG = 1024


def connection_limit(configured: int | None = None) -> int:
    """How many HTTP connections to hold open at once: what the operator set, else most of
    this process's file limit, leaving room for an accept burst, scans, the ledger and SMTP."""
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, min(10_000, (soft - ACCEPT_HEADROOM - 96) * 3 // 4))


class _Guarded(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, held to a connection limit and a request-header deadline.

    A connection past the limit is closed at once, before it is read, so hostile clients can
    never take the file descriptors that scans and the ledger need. A client must send a
    complete request head within ``header_timeout`` of connecting (or of its next request
    starting): an idle or trickling client is hung up on. uvicorn's own keep-alive timeout
    closes connections idle between requests.
    """

    max_connections = 1000
    header_timeout = 10.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        if len(self.connections) >= self.max_connections:
            self.transport = transport  # type: ignore[assignment]
            transport.abort()  # type: ignore[attr-defined]
            _refused.note(self.max_connections)
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm()

    def _arm(self) -> None:
        self._waiting_for = self.cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self.cycle is self._waiting_for and not self.transport.is_closing():
            self.transport.close()  # no complete request head arrived in time

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # a new request starts on a kept-alive connection
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._waiting_for:
            self._deadline.cancel()  # its head is complete
            self._deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


class _Refusals:
    """Connections refused at the limit, said in the log at most once a minute."""

    def __init__(self) -> None:
        self.count = 0
        self.said = 0.0

    def note(self, limit: int) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.said >= 60:
            log.warning(
                "%d HTTP connection(s) refused: the connection limit (%d) was reached; "
                "raise server.max_connections and the file limit (LimitNOFILE) if clients "
                "are real",
                self.count,
                limit,
            )
            self.count, self.said = 0, now


_refused = _Refusals()


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

    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        *,
        grace: float = 5.0,
        max_connections: int | None = None,
        header_timeout: float = 10.0,
    ) -> None:
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
            http=type(
                "GuardedH11",
                (_Guarded,),
                {
                    "max_connections": connection_limit(max_connections),
                    "header_timeout": header_timeout,
                },
            ),
            server_header=False,
            timeout_graceful_shutdown=int(grace) or 1,
            timeout_keep_alive=5,
            backlog=ACCEPT_BURST,
            h11_max_incomplete_event_size=16 * 1024,  # a request head larger than this is refused
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
        """The server's address, ``http://host:port``; RuntimeError before ``start()``."""
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
        self._socket.listen(LISTEN_BACKLOG)  # the loop still takes ACCEPT_BURST per wake-up
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
