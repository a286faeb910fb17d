"""Where bounce and complaint messages wait: a Maildir, or a folder of an IMAP mailbox.

Both readers yield ``Incoming(data, ack)``: the message's bytes and what to call once it is
dealt with. ``ack()`` (or ``ack(True)``) marks it processed; ``ack(False)`` marks it as read
but not understood, kept for a person to look at. A message that is never acked (the state
was unreachable, the process stopped) is offered again by the next read. Nothing is ever
deleted or expunged:

- Maildir: messages in ``new/`` are offered; ``ack(True)`` moves one to ``cur/`` with the
  ``:2,S`` (seen) flag, ``ack(False)`` to ``cur/`` with ``:2,F`` (flagged, unseen), where
  mail programs show it flagged. Only ``new/`` is read, so neither is offered again.
- IMAP (imaplib, in the caller's thread): messages of ``imap_folder`` are fetched with
  ``BODY.PEEK[]`` (not marked seen by reading); ``ack(True)`` flags one ``\\Seen`` and moves it
  to ``imap_done_folder`` (MOVE, RFC 6851, or COPY then a ``BantinDone`` keyword where the
  server has no MOVE); ``ack(False)`` flags it ``\\Flagged`` and moves it there unseen. The
  done folder is created if missing.

Blocking I/O: run a reader on a thread, not on the event loop.
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

from service.errors import ConfigError
from service.settings import BouncesSettings

__all__ = ["Ack", "Incoming", "MailboxError", "connect_imap", "read_imap", "read_maildir"]

DONE_KEYWORD = "BantinDone"
FAILED_KEYWORD = "BantinFailed"


class Ack(Protocol):
    """Called once a message is dealt with: True processed, False read but not understood."""

    def __call__(self, processed: bool = True) -> None:
        """Mark the message (see the module)."""
        ...


class Incoming(NamedTuple):
    """One message waiting in a mailbox, and how to mark it done."""

    data: bytes
    ack: Ack


class MailboxError(Exception):
    """The IMAP server refused or failed (login, folder, connection); nothing was lost."""


# --- Maildir -----------------------------------------------------------------------------


def read_maildir(path: Path) -> Iterator[Incoming]:
    """The messages in ``path``/new, oldest name first; ConfigError if ``path`` is no Maildir."""
    new, cur = path / "new", path / "cur"
    if not new.is_dir() or not cur.is_dir():
        raise ConfigError(
            path, "bounces.maildir is not a Maildir (it needs new/ and cur/); check the path"
        )
    for name in sorted(os.listdir(new)):
        if name.startswith("."):
            continue
        source = new / name
        try:
            data = source.read_bytes()
        except FileNotFoundError:  # taken by another reader meanwhile
            continue
        except IsADirectoryError:
            continue
        yield Incoming(data, _maildir_ack(source, cur / name.split(":", 1)[0]))


def _maildir_ack(source: Path, target: Path) -> Ack:
    def ack(processed: bool = True) -> None:
        flags = "S" if processed else "F"
        # already moved (acked twice, or by another reader): nothing to do
        with contextlib.suppress(FileNotFoundError):
            os.replace(source, f"{target}:2,{flags}")

    return ack


# --- IMAP --------------------------------------------------------------------------------

_UIDS = re.compile(rb"\d+")


def _check(reply: tuple[str, Sequence[object]], what: str) -> Sequence[object]:
    status, data = reply
    if status != "OK":
        detail = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
        raise MailboxError(f"IMAP {what} failed: {detail or status}")
    return data


def _quote(folder: str) -> str:
    return '"' + folder + '"'  # the settings refuse '"' and '\\' in folder names


def connect_imap(settings: BouncesSettings) -> imaplib.IMAP4:
    """A logged-in IMAP connection as [bounces] describes; MailboxError if refused."""
    if settings.imap_host is None or settings.imap_password is None:
        raise ConfigError("[bounces]", "imap_host, imap_username and imap_password are needed")
    context = ssl.create_default_context()
    try:
        if settings.imap_tls == "tls":
            client: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                settings.imap_host, settings.port, ssl_context=context, timeout=30
            )
        else:
            client = imaplib.IMAP4(settings.imap_host, settings.port, timeout=30)
            if settings.imap_tls == "starttls":
                client.starttls(context)
        client.login(settings.imap_username or "", settings.imap_password.get_secret_value())
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        raise MailboxError(
            f"IMAP {settings.imap_host}:{settings.port}: {exc}; check bounces.imap_host, "
            "imap_port, imap_tls, imap_username and the password"
        ) from exc
    return client


def read_imap(settings: BouncesSettings, limit: int = 500) -> Iterator[Incoming]:
    """The messages of ``imap_folder`` not yet processed (at most ``limit``); the connection is
    logged out when the iteration ends. Ack each before taking the next."""
    client = connect_imap(settings)
    try:
        _check(client.select(_quote(settings.imap_folder)), f"SELECT {settings.imap_folder}")
        done = _quote(settings.imap_done_folder)
        status, _ = client.create(done)  # NO when it exists: fine
        if status == "OK":
            client.subscribe(done)
        # what the server offers once logged in (imaplib keeps only the greeting's list)
        offered = _check(client.capability(), "CAPABILITY")
        first = offered[0] if offered and isinstance(offered[0], bytes) else b""
        can_move = b"MOVE" in first.upper().split()
        found = _check(
            client.uid("SEARCH", f"NOT KEYWORD {DONE_KEYWORD} NOT KEYWORD {FAILED_KEYWORD}"),
            "SEARCH",
        )
        uids = _UIDS.findall(found[0] if found and isinstance(found[0], bytes) else b"")
        for uid in uids[:limit]:
            data = _fetch(client, uid.decode())
            if data is not None:
                yield Incoming(data, _imap_ack(client, uid.decode(), done, can_move))
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            client.logout()


def _fetch(client: imaplib.IMAP4, uid: str) -> bytes | None:
    for item in _check(client.uid("FETCH", uid, "(BODY.PEEK[])"), f"FETCH {uid}"):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None  # gone meanwhile


def _imap_ack(client: imaplib.IMAP4, uid: str, done: str, can_move: bool) -> Ack:
    def ack(processed: bool = True) -> None:
        flags = f"(\\Seen {DONE_KEYWORD})" if processed else f"(\\Flagged {FAILED_KEYWORD})"
        _check(client.uid("STORE", uid, "+FLAGS", flags), f"STORE {uid}")
        if can_move:
            _check(client.uid("MOVE", uid, done), f"MOVE {uid}")
        else:  # the keyword keeps it from being read again; it is never expunged
            _check(client.uid("COPY", uid, done), f"COPY {uid}")

    return ack
