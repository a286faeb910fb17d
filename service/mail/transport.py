"""Transports that take finished message bytes to their recipient: SMTP, or files in an outbox.

Both answer every message with an Outcome instead of raising, so one refused recipient never
stops the others. SMTP connections are pooled (``smtp.concurrency`` of them) and reused across
messages; we hand aiosmtplib bytes we built ourselves (``sendmail``), because
``send_message`` would re-flatten them with the stdlib's buggy header folding.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from service.mail.pipelined import PipelinedConnection
from service.mail.replies import Stage, Verdict, classify
from service.settings import Settings, SmtpSettings


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: accepted (250) or not, at which stage, with what reply."""

    ok: bool
    code: int | None = None
    reply: str = ""
    stage: Stage = "rcpt"  # where the session failed (see replies.classify)
    seconds: float = 0.0

    @property
    def verdict(self) -> Verdict:
        """Who a failure concerns and whether it lasts (replies.classify)."""
        return classify(self.stage, self.code, self.reply)

    @property
    def permanent(self) -> bool:
        """A refusal of this recipient that retrying will not change."""
        verdict = self.verdict
        return not self.ok and verdict.scope == "recipient" and verdict.permanent

    @property
    def reason(self) -> str:
        """A short code for metrics: ``sent``, ``smtp_5xx`` and such, or ``network`` (no reply)."""
        if self.ok:
            return "sent"
        if self.code:
            return f"smtp_{self.code // 100}xx"
        return "network"


class Transport(Protocol):
    """Where finished messages go: each gets an Outcome, never an exception; ``concurrency``
    senders may use it at once, and ``name`` says which transport it is in messages."""

    concurrency: int
    name: str  # for messages: "mail server smtp.example.org:587"

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        """Hand ``data`` over for ``recipient``; the Outcome says what became of it."""
        ...

    async def close(self) -> None:
        """Let go of connections; nothing is sent after."""
        ...


_OUTBOX_NUMBERS = itertools.count(1)


class FileTransport:
    """One .eml file per message in the outbox directory: what would be sent, to read."""

    concurrency = 1

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = f"outbox {directory}"

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        """Write the message as a new .eml file in the outbox; an outbox that cannot be written
        is a connect failure, which stops the run (every message would fail alike)."""
        started = time.monotonic()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in recipient)
        # numbered for the whole process: two runs in one second must not share a name
        name = f"{stamp}-{os.getpid()}-{next(_OUTBOX_NUMBERS):06d}-{safe}.eml"
        tmp: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, self.directory / name)
        except OSError as exc:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            # the outbox is this host's own: every message would fail alike
            return Outcome(
                False,
                None,
                f"cannot write to {self.directory}: {exc.strerror}; check mail.outbox_dir "
                "and its permissions",
                "connect",
            )
        return Outcome(True, 250, f"written to {name}", seconds=time.monotonic() - started)

    async def close(self) -> None:
        """Nothing to close."""
        return None


@dataclass(frozen=True, slots=True)
class Sent:
    """One message a MemoryTransport accepted: envelope sender, recipient and bytes."""

    sender: str
    recipient: str
    data: bytes


class MemoryTransport:
    """Messages kept in a list, for tests and previews, as httpx ships MockTransport.

    ``reply(recipient)`` may return an Outcome to script a refusal; None accepts the message.
    """

    def __init__(
        self,
        reply: Callable[[str], Outcome | None] = lambda recipient: None,
        concurrency: int = 1,
    ) -> None:
        self.sent: list[Sent] = []
        self.reply = reply
        self.concurrency = concurrency
        self.name = "memory transport"

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        """Keep the message in ``sent``, unless ``reply`` scripts an Outcome for ``recipient``."""
        scripted = self.reply(recipient)
        if scripted is not None:
            return scripted
        self.sent.append(Sent(sender, recipient, data))
        return Outcome(True, 250, "kept in memory", "data")

    async def close(self) -> None:
        """Nothing to close; the messages stay in ``sent``."""
        return None


_Connection = aiosmtplib.SMTP | PipelinedConnection


class SmtpTransport:
    """A pool of SMTP connections, each used by one sender at a time.

    aiosmtplib sets each session up (connect, STARTTLS, login); with a server that offers
    PIPELINING (RFC 2920, unless ``smtp.pipelining = false``) the session is then taken over by
    a PipelinedConnection (pipelined.py), which sends a message in two round trips instead of
    four. Both give the same Outcome for the same reply.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.concurrency = settings.concurrency
        self.name = f"mail server {settings.host}:{settings.port}"
        self.timeout = settings.timeout  # seconds per SMTP operation
        self._idle: asyncio.LifoQueue[_Connection] = asyncio.LifoQueue()
        self._open: set[_Connection] = set()
        self.pipelined = 0  # sessions taken over for pipelining (for tests and benchmarks)

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        password = s.password.get_secret_value() if s.password else None
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            username=s.username,
            password=password if s.username else None,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",  # required, never opportunistic
            timeout=s.timeout,
            tls_context=ssl.create_default_context() if s.security != "none" else None,
        )

    async def _acquire(self) -> _Connection:
        while not self._idle.empty():
            connection = self._idle.get_nowait()
            if connection.is_connected:
                return connection
            self._open.discard(connection)
        client = self._client()
        await client.connect()
        if self.settings.pipelining:
            if client.is_ehlo_or_helo_needed:  # no login or STARTTLS asked for one yet
                with contextlib.suppress(aiosmtplib.SMTPHeloError):
                    await client.ehlo()  # a server without EHLO: sendmail falls back to HELO
            pipelined = PipelinedConnection.take_over(client, self.timeout)
            if pipelined is not None:
                self.pipelined += 1
                self._open.add(pipelined)
                return pipelined
        self._open.add(client)
        return client

    def _release(self, connection: _Connection) -> None:
        if connection.is_connected:
            self._idle.put_nowait(connection)
        else:
            self._open.discard(connection)

    async def _drop(self, client: aiosmtplib.SMTP) -> None:
        self._open.discard(client)
        # Closing a broken connection can fail in many ways; it is gone anyway.
        with contextlib.suppress(Exception):
            client.close()

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        """Send over an idle pooled connection, or a new one; a refusal, or a failure to connect,
        start TLS or log in, comes back as an Outcome naming its stage."""
        started = time.monotonic()

        def outcome(stage: Stage, code: int | None, reply: str) -> Outcome:
            return Outcome(False, code, reply, stage, time.monotonic() - started)

        try:
            client = await self._acquire()
        except BaseException as exc:
            failure = _session_failure(exc)
            if failure is None:
                raise
            return outcome(*failure)
        if isinstance(client, PipelinedConnection):
            try:
                stage, answer = await client.send(sender, recipient, data)
            finally:
                self._release(client)
            if answer is None:
                return outcome(stage, None, client.protocol.lost or "connection lost")
            if stage == "data" and answer.code == 250:
                return Outcome(True, 250, answer.text, "data", time.monotonic() - started)
            return outcome(stage, answer.code, answer.text)
        # aiosmtplib resets the envelope (RSET) itself after a refusal: the connection is
        # reused as it is, or dropped if the server closed it.
        try:
            _, reply = await client.sendmail(sender, [recipient], data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            self._release(client)
            # one recipient per message: the refusal is that recipient's
            refusal = exc.recipients[0]
            return outcome("rcpt", refusal.code, refusal.message)
        except aiosmtplib.SMTPSenderRefused as exc:
            self._release(client)
            return outcome("mail", exc.code, exc.message)
        except aiosmtplib.SMTPResponseException as exc:  # SMTPDataError and the like
            self._release(client)
            return outcome("data", exc.code, exc.message)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self._drop(client)
            return outcome("network", None, _message(exc))
        self._idle.put_nowait(client)
        return Outcome(True, 250, reply, "data", time.monotonic() - started)

    async def close(self) -> None:
        """Say QUIT on every open connection; one that does not answer within 5 s is just closed."""
        clients = list(self._open)
        self._open.clear()
        for client in clients:
            try:
                if client.is_connected:
                    await asyncio.wait_for(client.quit(), timeout=5)
            except Exception:  # the server may already be gone; nothing is lost by not saying QUIT
                client.close()
            if isinstance(client, PipelinedConnection):
                client.close()


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    return " ".join(str(text).split())


def _session_failure(exc: BaseException) -> tuple[Stage, int | None, str] | None:
    """Where setting up a session failed (connect, TLS, login), or None if not an SMTP matter."""
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return "auth", exc.code, _message(exc)
    if isinstance(exc, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
        error = exc if isinstance(exc, ssl.SSLError) else exc.__cause__
        assert isinstance(error, ssl.SSLError)
        return "tls", None, f"TLS failed: {error.reason or error}"
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return "helo", exc.code, _message(exc)
    if isinstance(exc, aiosmtplib.SMTPConnectError | TimeoutError | OSError):
        code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
        return "connect", code, _message(exc)
    if isinstance(exc, aiosmtplib.SMTPException):
        # raised by aiosmtplib's own checks: no STARTTLS, no AUTH, a refused STARTTLS command
        text = _message(exc)
        code = exc.code if isinstance(exc, aiosmtplib.SMTPResponseException) else None
        if "AUTH" in text:
            return "auth", code, text
        if "TLS" in text:
            return "tls", code, text
        return "connect", code, text
    return None


def transport_for(settings: Settings) -> Transport:
    """The transport ``mail.transport`` names."""
    if settings.mail.transport == "smtp":
        return SmtpTransport(settings.smtp)
    return FileTransport(settings.mail.outbox_dir)
