"""A real aiosmtpd server on 127.0.0.1 that records what arrives and scripts replies per recipient.

with running_server() as server:
    server.script("busy@example.org", "450 4.2.1 try later", times=2)
    server.script("gone@example.org", "550 5.1.1 no such user")
    server.script("drop@example.org", "drop")   # 421 and the connection closed
    ...
    server.received   # [Received(recipient, data, message_id), ...]
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Received:
    recipient: str
    data: bytes

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
    received: list[Received] = field(default_factory=list)
    started: int = 0  # DATA commands begun
    attempts: dict[str, int] = field(default_factory=dict)  # RCPT commands seen per address
    _script: dict[str, list[str]] = field(default_factory=dict)
    _always: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, address: str, reply: str, times: int | None = None) -> None:
        """Answer RCPT TO ``address`` with ``reply`` ``times`` times (None: always)."""
        if times is None:
            self._always[address] = reply
        else:
            self._script.setdefault(address, []).extend([reply] * times)

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

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            self.attempts[address] = self.attempts.get(address, 0) + 1
            queued = self._script.get(address)
            reply = queued.pop(0) if queued else self._always.get(address)
        if reply == "drop":
            asyncio.get_running_loop().call_later(0.01, server.transport.close)
            return "421 4.3.2 closing the connection"
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        assert isinstance(data, bytes)
        with self._lock:
            self.started += 1
            for rcpt in envelope.rcpt_tos:
                self.received.append(Received(rcpt, data))
        if self.data_delay:
            # recorded before the 250: a client killed now has delivered without knowing it
            await asyncio.sleep(self.data_delay)
        return "250 2.0.0 accepted"


@dataclass
class Server:
    port: int
    recorder: Recorder
    controller: Controller

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)


@contextmanager
def running_server(data_delay: float = 0.0, port: int | None = None) -> Iterator[Server]:
    recorder = Recorder(data_delay=data_delay)
    port = port or free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    try:
        yield Server(port, recorder, controller)
    finally:
        controller.stop()
