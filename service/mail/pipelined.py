"""SMTP with PIPELINING (RFC 2920): a message in two round trips instead of four.

aiosmtplib sends one command and waits for its reply: MAIL, RCPT, DATA and the message are four
round trips, each with its share of Python around it, and that, not the network, is what bounds
a run's speed on a relay next door. A server that offers PIPELINING takes MAIL, RCPT and DATA in
one write; its three replies come back together, then the message goes and its 250 comes back.
``PipelinedConnection`` is one such connection, lean enough that sending costs a fraction of
what it did. aiosmtplib still sets every session up (connect, greeting, STARTTLS, login: its
failures are mapped as before, in transport.py) and keeps the sessions of servers that do not
offer PIPELINING; with one that does, ``SmtpTransport`` takes the session over for sending.

The guarantees are the transport's: each message's outcome comes from its own final reply (a
250 after its data, or the first refusal of its MAIL, RCPT or DATA), nothing of the next message
is written before the caller has that outcome, and every failure comes back as an Outcome naming
its stage, as aiosmtplib's exceptions are mapped (transport.py), so replies.classify judges both
alike. After a refusal the envelope is reset (RSET) before the next message; after a 421 or a
lost connection the connection is closed and a new one is made for the next message.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from dataclasses import dataclass

import aiosmtplib

from service.mail.replies import Stage

__all__ = ["PipelinedConnection", "Reply"]

_LINE_ENDINGS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_UNSAFE_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_MAX_REPLY = 100_000  # bytes of one reply's lines: more is not an SMTP server


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: its code and its text (the lines after the code, joined by newlines)."""

    code: int
    text: str


class _Lost(Exception):
    """The connection closed, broke or timed out while a reply was awaited."""


class _Replies(asyncio.Protocol):
    """The socket's side of a connection: replies are parsed as they arrive and queued."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.replies: deque[Reply] = deque()
        self.lost: str | None = None  # why the connection is gone, once it is
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > _MAX_REPLY:
                    self._lose("the server sent a line far longer than SMTP allows")
                return
            line = bytes(buffer[:end]).rstrip(b"\r")
            del buffer[: end + 1]
            if len(line) < 3 or not line[:3].isdigit():
                self._lose(f"the server sent something that is not an SMTP reply: {line[:80]!r}")
                return
            self._lines.append(line[4:].decode("utf-8", "replace"))
            if line[3:4] == b"-":  # more lines of this reply follow
                continue
            self.replies.append(Reply(int(line[:3]), "\n".join(self._lines)))
            self._lines = []
            self._wake()

    def eof_received(self) -> bool:
        self._lose("the server closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection lost: {exc}" if exc else "the server closed the connection")

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = why
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def reply(self, timeout: float) -> Reply:
        """The next reply; _Lost if the connection is gone or nothing came within ``timeout``."""
        if not self.replies:
            if self.lost is not None:
                raise _Lost(self.lost)
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
            if not self.replies:
                if self.lost is None:
                    self._lose(f"no reply within {timeout:g} s")
                raise _Lost(self.lost or "connection lost")
        return self.replies.popleft()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _address(address: str) -> bytes:
    """``<address>`` for MAIL FROM and RCPT TO; ValueError for one that could inject a command,
    as aiosmtplib refuses it."""
    if _UNSAFE_ADDRESS.search(address):
        raise ValueError(f"address {address!r} cannot be sent on an SMTP command line")
    return b"<" + address.encode("ascii") + b">"


def _message_data(data: bytes) -> bytes:
    """The message as DATA carries it: CRLF line endings, leading dots doubled, the final dot."""
    crlf = data.count(b"\r\n")  # counting is ~15x faster than a regex search of the message
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_ENDINGS.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data + b".\r\n"


class PipelinedConnection:
    """One SMTP session with a server that offers PIPELINING, taken over from aiosmtplib once
    it has connected, greeted, started TLS and logged in (``take_over``)."""

    def __init__(self, transport: asyncio.Transport, extensions: set[str], timeout: float):
        self.timeout = timeout
        self.extensions = extensions
        self.protocol = _Replies()
        self.protocol.transport = transport
        transport.set_protocol(self.protocol)  # from now on every reply comes to us
        self._dirty = False  # a refused envelope may be open on the server: RSET first

    @classmethod
    def take_over(cls, client: aiosmtplib.SMTP, timeout: float) -> PipelinedConnection | None:
        """The session of ``client`` (connected, past EHLO, TLS and login) as a pipelined one,
        or None if its server does not offer PIPELINING (then ``client`` is left as it was)."""
        transport = client.transport
        if not client.supports_extension("pipelining") or not isinstance(
            transport, asyncio.Transport
        ):
            return None
        extensions = {name.upper() for name in client.esmtp_extensions}
        # aiosmtplib lets go without closing: the socket is ours now
        client.transport = None
        client.protocol = None
        return cls(transport, extensions, timeout)

    @property
    def is_connected(self) -> bool:
        """Whether the session can take another message."""
        transport = self.protocol.transport
        return self.protocol.lost is None and transport is not None and not transport.is_closing()

    async def send(self, sender: str, recipient: str, data: bytes) -> tuple[Stage, Reply | None]:
        """Send one message: ("data", its 250) if accepted, else the stage that failed and the
        reply there (None: the connection broke or timed out, the message is in doubt).

        :raises ValueError: an address with characters an SMTP command cannot carry
        """
        envelope = b"MAIL FROM:" + _address(sender)
        command = b"\r\nRCPT TO:" + _address(recipient) + b"\r\nDATA\r\n"
        body = _message_data(data)
        try:
            return await self._exchange(envelope, command, body)
        except BaseException:
            # cancelled (or worse) between a command and its reply: a reply still to come would
            # be read as the next message's, so this session cannot be used again
            self.close()
            raise

    async def _exchange(
        self, envelope: bytes, then: bytes, body: bytes
    ) -> tuple[Stage, Reply | None]:
        if "SIZE" in self.extensions:
            envelope += b" SIZE=%d" % (len(body) - 3)  # RFC 1870: without the final dot
        envelope += then
        if self._dirty:
            envelope = b"RSET\r\n" + envelope
        protocol, timeout = self.protocol, self.timeout
        transport = protocol.transport
        if transport is None or protocol.lost is not None:
            return "network", None
        transport.write(envelope)
        replies: list[Reply] = []
        try:
            if self._dirty:
                await protocol.reply(timeout)  # RSET's: whatever it says, MAIL's tells more
                self._dirty = False
            for _ in range(3):
                replies.append(await protocol.reply(timeout))
        except _Lost:
            return self._broken(replies)
        mail, rcpt, start = replies
        if start.code == 354 and (mail.code != 250 or rcpt.code not in (250, 251)):
            # a server that starts DATA without a recipient: an empty message ends it, and it
            # is delivered to nobody (RFC 2920, 3.1)
            transport.write(b".\r\n")
            with contextlib.suppress(_Lost):
                await protocol.reply(timeout)
        if mail.code != 250:
            return self._refused("mail", mail)
        if rcpt.code not in (250, 251):
            return self._refused("rcpt", rcpt)
        if start.code != 354:
            return self._refused("data", start)
        transport.write(body)
        try:
            final = await protocol.reply(timeout)
        except _Lost:
            return "network", None
        if final.code != 250:
            return self._refused("data", final, dirty=False)
        return "data", final

    def _refused(self, stage: Stage, reply: Reply, dirty: bool = True) -> tuple[Stage, Reply]:
        if reply.code == 421:  # the server is closing this session
            self.close()
        else:
            self._dirty = dirty
        return stage, reply

    def _broken(self, replies: list[Reply]) -> tuple[Stage, Reply | None]:
        """The connection went while the envelope's replies were read: a refusal that came
        first is the outcome (a server that says 421 and hangs up); else it is in doubt."""
        self.close()
        for stage, reply in zip(("mail", "rcpt", "data"), replies, strict=False):
            if reply.code not in (250, 251, 354):
                return stage, reply  # type: ignore[return-value]
        return "network", None

    def close(self) -> None:
        """Drop the connection at once."""
        transport = self.protocol.transport
        if transport is not None:
            transport.close()
        if self.protocol.lost is None:
            self.protocol.lost = "closed by bantin"

    async def quit(self) -> None:
        """Say QUIT, wait for the goodbye (up to 5 s), and close."""
        transport = self.protocol.transport
        if self.is_connected and transport is not None:
            transport.write(b"QUIT\r\n")
            with contextlib.suppress(_Lost):
                await self.protocol.reply(min(self.timeout, 5.0))
        self.close()
