"""Transports that take finished message bytes to their recipient: SMTP, or files in an outbox.

Both answer every message with an Outcome instead of raising, so one refused recipient never
stops the others. SMTP connections are pooled (``smtp.concurrency`` of them) and reused across
messages; we hand aiosmtplib bytes we built ourselves (``sendmail``), because
``send_message`` would re-flatten them with the stdlib's buggy header folding.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from service.settings import Settings, SmtpSettings


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message: accepted (250), deferred (4xx, network) or refused (5xx)."""

    ok: bool
    code: int | None = None
    reply: str = ""
    permanent: bool = False
    seconds: float = 0.0

    @property
    def reason(self) -> str:
        if self.ok:
            return "sent"
        if self.code:
            return f"smtp_{self.code // 100}xx"
        return "network"


class Transport(Protocol):
    concurrency: int

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome: ...

    async def close(self) -> None: ...


class FileTransport:
    """One .eml file per message in the outbox directory: what would be sent, to read."""

    concurrency = 1

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._count = 0

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        started = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._count += 1
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "@.-_" else "_" for c in recipient)
        name = f"{stamp}-{os.getpid()}-{self._count:06d}-{safe}.eml"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, self.directory / name)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            return Outcome(False, None, f"cannot write to {self.directory}: {exc.strerror}")
        return Outcome(True, 250, f"written to {name}", seconds=time.monotonic() - started)

    async def close(self) -> None:
        return None


class SmtpTransport:
    """A pool of SMTP connections, each used by one sender at a time."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.concurrency = settings.concurrency
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] = asyncio.LifoQueue()
        self._open: set[aiosmtplib.SMTP] = set()

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

    async def _acquire(self) -> aiosmtplib.SMTP:
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
            self._open.discard(client)
        client = self._client()
        await client.connect()
        self._open.add(client)
        return client

    async def _drop(self, client: aiosmtplib.SMTP) -> None:
        self._open.discard(client)
        # Closing a broken connection can fail in many ways; it is gone anyway.
        with contextlib.suppress(Exception):
            client.close()

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        started = time.monotonic()
        try:
            client = await self._acquire()
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            return _failure(exc, started)
        try:
            errors, reply = await client.sendmail(sender, [recipient], data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # The connection is still good: the server refused this recipient only.
            await _reset(client)
            self._idle.put_nowait(client)
            refusal = exc.recipients[0] if exc.recipients else None
            code = refusal.code if refusal else 550
            message = refusal.message if refusal else str(exc)
            return Outcome(
                False, code, message, permanent=code >= 500, seconds=time.monotonic() - started
            )
        except aiosmtplib.SMTPSenderRefused as exc:
            # Our own address was refused: a configuration matter, never the recipient's fault.
            await _reset(client)
            self._idle.put_nowait(client) if client.is_connected else await self._drop(client)
            return Outcome(
                False,
                exc.code,
                f"sender refused: {exc.message}",
                seconds=time.monotonic() - started,
            )
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            if client.is_connected:
                self._idle.put_nowait(client)
            else:
                await self._drop(client)
            return Outcome(
                False,
                exc.code,
                exc.message,
                permanent=500 <= exc.code < 600,
                seconds=time.monotonic() - started,
            )
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
            await self._drop(client)
            return _failure(exc, started)
        self._idle.put_nowait(client)
        if recipient in errors:  # a partial refusal is not an exception (see GOTCHAS)
            refused = errors[recipient]
            return Outcome(
                False,
                refused.code,
                refused.message,
                permanent=refused.code >= 500,
                seconds=time.monotonic() - started,
            )
        return Outcome(True, 250, reply, seconds=time.monotonic() - started)

    async def close(self) -> None:
        clients = list(self._open)
        self._open.clear()
        for client in clients:
            try:
                if client.is_connected:
                    await asyncio.wait_for(client.quit(), timeout=5)
            except Exception:  # the server may already be gone; nothing is lost by not saying QUIT
                client.close()


async def _reset(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.rset()
    except (TimeoutError, aiosmtplib.SMTPException, OSError):
        client.close()


def _failure(exc: BaseException, started: float) -> Outcome:
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    permanent = (
        isinstance(code, int)
        and 500 <= code < 600
        and not isinstance(exc, aiosmtplib.SMTPConnectError)
    )
    return Outcome(
        False,
        code if isinstance(code, int) else None,
        message,
        permanent=permanent,
        seconds=time.monotonic() - started,
    )


def transport_for(settings: Settings) -> Transport:
    if settings.mail.transport == "smtp":
        return SmtpTransport(settings.smtp)
    return FileTransport(settings.mail.outbox_dir)
