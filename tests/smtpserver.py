"""A real aiosmtpd server on 127.0.0.1 that records what arrives and scripts replies per recipient.

with running_server() as server:
    server.script("busy@example.org", "450 4.2.1 try later", times=2)
    server.script("gone@example.org", "550 5.1.1 no such user")
    server.script("drop@example.org", "drop")   # 421 and the connection closed
    server.script("cut@example.org", "drop-now")  # 421 and closed before any other reply
    server.script("cut@example.org", "hangup")  # the connection closed without a reply
    server.script("x@example.org", "451 4.3.0 later", stage="data")  # to DATA (not 354)
    server.script("x@example.org", "552 5.3.4 too big", stage="message")  # after the data
    server.script("sender@example.org", "421 4.3.2 bye", stage="mail")  # MAIL FROM this
    server.mail_reply = "550 5.7.1 sender rejected"  # to MAIL FROM, until set to None
    server.data_reply = "554 5.7.1 content rejected"  # after the message, until None
    server.hold()      # each DATA is recorded, then waits for its 250 until release()
    running_server(pipelining=False)  # a server that does not offer PIPELINING (RFC 2920)
    ...
    server.received   # [Received(recipient, data, peer), ...]
    server.connections, server.quits   # the client (host, port) of each EHLO, each QUIT

with running_server(password="right") as server: a server that requires AUTH LOGIN/PLAIN as
user "bantin" with that password. with refusing_server("554 5.3.2 not now") as port: a server
that answers every connection with that greeting and hangs up.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Received:
    recipient: str
    data: bytes
    peer: tuple[str, int] | None = None  # the client end of the connection it came over
    sender: str = ""  # the envelope sender (MAIL FROM)

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None
        return str(part.get_content())  # type: ignore[attr-defined]


@dataclass
class Recorder:
    """The aiosmtpd handler: records accepted messages, replies from the script per recipient."""

    data_delay: float = 0.0  # seconds the server takes over each DATA (a slow server)
    mail_reply: str | None = None  # a refusal of MAIL FROM, for every message while set
    data_reply: str | None = None  # a refusal after DATA, for every message while set
    pipelining: bool = True  # offer PIPELINING (RFC 2920) in the EHLO reply, as Postfix does
    received: list[Received] = field(default_factory=list)
    started: int = 0  # DATA commands begun
    attempts: dict[str, int] = field(default_factory=dict)  # RCPT commands seen per address
    gate: threading.Event = field(default_factory=threading.Event)  # set: DATA is answered
    connections: list[tuple[str, int]] = field(default_factory=list)  # the peer of each EHLO
    quits: list[tuple[str, int]] = field(default_factory=list)  # the peer of each QUIT
    # (stage, address) -> replies: stage "mail" is keyed by the sender, the others by the
    # recipient ("rcpt": RCPT TO, "data": the DATA command, "message": after the data)
    _script: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _always: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.gate.set()

    def hold(self) -> None:
        """Keep every message from now on in flight: recorded, but not yet answered."""
        self.gate.clear()

    def release(self) -> None:
        """Answer the messages held, and those to come."""
        self.gate.set()

    def script(
        self, address: str, reply: str, times: int | None = None, stage: str = "rcpt"
    ) -> None:
        """Answer ``address`` at ``stage`` with ``reply`` ``times`` times (None: always).

        ``stage``: "mail" (MAIL FROM ``address``), "rcpt" (RCPT TO ``address``), "data" (the
        DATA command of a message to ``address``, instead of 354) or "message" (after its
        data, instead of 250). ``reply``: a reply line, "drop" (421, then the connection is
        closed) or "hangup" (the connection is closed without a reply)."""
        assert stage in ("mail", "rcpt", "data", "message"), stage
        with self._lock:
            if times is None:
                self._always[(stage, address)] = reply
            else:
                self._script.setdefault((stage, address), []).extend([reply] * times)

    def _scripted(self, stage: str, address: str) -> str | None:
        with self._lock:
            queued = self._script.get((stage, address))
            return queued.pop(0) if queued else self._always.get((stage, address))

    @staticmethod
    def _play(server: Any, reply: str) -> str | None:
        """The reply to push for a scripted ``reply``; None: hang up without one."""
        if reply == "hangup":
            server.transport.close()
            return None
        if reply == "drop":
            asyncio.get_running_loop().call_later(0.01, server.transport.close)
            return "421 4.3.2 closing the connection"
        if reply == "drop-now":  # closed before a reply to any command pipelined after this
            server.transport.write(b"421 4.3.2 closing the connection\r\n")
            server.transport.close()  # the 421 is flushed first
            return None
        return reply

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._always.clear()

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.recipient == address]

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def recipients(self) -> list[str]:
        return [r.recipient for r in self.received]

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self._lock:
            self.connections.append(session.peer)
        if self.pipelining:  # aiosmtpd reads commands in turn: pipelined ones queue up
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.quits.append(session.peer)
        return "221 Bye"

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.mail_reply:
            return self.mail_reply
        scripted = self._scripted("mail", address)
        if scripted:
            return self._play(server, scripted) or _SILENT
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            self.attempts[address] = self.attempts.get(address, 0) + 1
        reply = self._scripted("rcpt", address)
        if reply:
            return self._play(server, reply) or _SILENT
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        if self.data_reply:
            return self.data_reply
        scripted = self._scripted("message", envelope.rcpt_tos[0]) if envelope.rcpt_tos else None
        if scripted:
            return self._play(server, scripted) or _SILENT
        with self._lock:
            self.started += 1
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(rcpt, data, session.peer, envelope.mail_from))
        # recorded before the 250: a client killed now has delivered without knowing it
        if not self.gate.is_set():
            await asyncio.to_thread(self.gate.wait)
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        return "250 2.0.0 accepted"


_SILENT = "421 4.3.2 (never seen: the connection is closed)"


class _ScriptedSMTP(SMTP):
    """aiosmtpd's session, with the DATA command itself scriptable (Recorder.script)."""

    async def smtp_DATA(self, arg: str) -> None:
        recorder = self.event_handler
        envelope = self.envelope
        if isinstance(recorder, Recorder) and envelope is not None and envelope.rcpt_tos:
            scripted = recorder._scripted("data", envelope.rcpt_tos[0])
            if scripted:
                reply = recorder._play(self, scripted)
                if reply is not None:
                    await self.push(reply)
                return
        await super().smtp_DATA(arg)


class _Controller(Controller):
    def factory(self) -> SMTP:
        return _ScriptedSMTP(self.handler, **self.SMTP_kwargs)


@dataclass
class Server:
    port: int
    recorder: Recorder
    controller: Controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)


USER = "bantin"


@contextmanager
def running_server(
    data_delay: float = 0.0,
    port: int | None = None,
    password: str | None = None,
    recorder: Recorder | None = None,
    pipelining: bool = True,
) -> Iterator[Server]:
    recorder = recorder or Recorder(data_delay=data_delay, pipelining=pipelining)
    port = port or free_port()
    options: dict[str, Any] = {}
    if password is not None:

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and (
                auth_data.login == USER.encode() and auth_data.password == password.encode()
            )
            return AuthResult(success=ok, handled=False)

        options = {"auth_required": True, "auth_require_tls": False, "authenticator": authenticator}
        # loopback only: AUTH without TLS is what the tests mean to allow
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
    controller = _Controller(
        recorder, hostname="127.0.0.1", port=port, decode_data=False, **options
    )
    controller.start()
    try:
        yield Server(port, recorder, controller)
    finally:
        recorder.release()  # nothing left waiting in a thread
        controller.stop()


@contextmanager
def refusing_server(greeting: str) -> Iterator[int]:
    """A server that greets every connection with ``greeting`` (421, 554...) and hangs up."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(greeting.encode() + b"\r\n")
        await writer.drain()
        writer.close()

    def serve() -> None:
        loop = asyncio.new_event_loop()
        state["loop"] = loop
        server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
        state["port"] = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    try:
        yield int(state["port"])
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(5)


@contextmanager
def silent_server() -> Iterator[int]:
    """A relay that accepts connections and never says a word (a hung mail server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
