"""VERP return paths: each message's envelope sender names its delivery, signed (pure, no I/O).

With ``mail.bounce_address = "bounces@example.gov.vn"`` a digest goes out with the envelope
sender (MAIL FROM, later Return-Path) ``bounces+<token>@example.gov.vn``; a bounce comes back
to that address, and the token says which delivery bounced without guessing from the bounce's
text. The ``mailto:`` List-Unsubscribe fallback is ``bounces+unsub-<token>@example.gov.vn``.

A token is ``base32(id || tag || mac)``, lower case, unpadded:

- ``id``: the delivery id, big-endian in as few bytes as it needs (1 to 8);
- ``tag``: 4 bytes of HMAC-SHA256(key, "address" purpose || lower-cased address): it lets the
  reader check which address a token was made for (``Verp.names``) without carrying it;
- ``mac``: 10 bytes (80 bits) of HMAC-SHA256(key, purpose || id || tag), where the purpose
  differs for bounce and unsubscribe tokens, and from tokens.py's: none stands for another.

At most 22 bytes, 36 characters: with the "+unsub-" they stay within the 64 octets RFC 5321
allows a local part when the bounce address's own local part has at most 21 (the settings
check it). Base32 rather than base64: some mail systems lower-case local parts on the way back.

Reading is strict: the canonical spelling only (any case), the MAC compared in constant time,
and everything else, garbage and forgeries included, reads as ``None``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "MAX_TOKEN",
    "UNSUBSCRIBE_PREFIX",
    "Purpose",
    "Verp",
    "find",
    "make_token",
    "read_address",
    "read_token",
    "return_path",
    "token_of",
    "unsubscribe_mailto",
]

Purpose = Literal["bounce", "unsubscribe"]
_PURPOSES: dict[Purpose, bytes] = {
    "bounce": b"bantin/verp-bounce/v1\x00",
    "unsubscribe": b"bantin/verp-unsubscribe/v1\x00",
}
_ADDRESS_PURPOSE = b"bantin/verp-address/v1\x00"
TAG_BYTES = 4
MAC_BYTES = 10
MAX_ID = 2**64 - 1
MAX_TOKEN = 36  # base32 characters of the longest token (an 8-byte id)
UNSUBSCRIBE_PREFIX = "unsub-"
_TOKEN = re.compile(r"[a-z2-7]{24,36}")  # 15 to 22 bytes
_ADDRESS = re.compile(r"<?\s*([^<>\s@]+)@([^<>\s@]+?)\s*>?")


@dataclass(frozen=True, slots=True)
class Verp:
    """What a valid token says: the delivery, the purpose, and a tag of the address."""

    delivery_id: int
    purpose: Purpose
    tag: bytes  # TAG_BYTES of a keyed hash of the address the token was made for
    key: bytes

    def names(self, email: str) -> bool:
        """Whether the token was made for ``email`` (case-insensitive)."""
        return hmac.compare_digest(self.tag, _tag(self.key, email))


def _tag(key: bytes, email: str) -> bytes:
    digest = hmac.new(key, _ADDRESS_PURPOSE + email.lower().encode("utf-8"), hashlib.sha256)
    return digest.digest()[:TAG_BYTES]


def _mac(key: bytes, purpose: Purpose, body: bytes) -> bytes:
    return hmac.new(key, _PURPOSES[purpose] + body, hashlib.sha256).digest()[:MAC_BYTES]


def _encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def make_token(key: bytes, delivery_id: int, email: str, purpose: Purpose = "bounce") -> str:
    """The token for delivery ``delivery_id`` to ``email``; ValueError on an empty key or an id
    outside 0..2**64-1."""
    if not key:
        raise ValueError("the VERP key is empty; set server.secret_key")
    if not 0 <= delivery_id <= MAX_ID:
        raise ValueError(f"delivery id {delivery_id} does not fit in 8 bytes")
    ident = delivery_id.to_bytes(max(1, (delivery_id.bit_length() + 7) // 8), "big")
    body = ident + _tag(key, email)
    return _encode(body + _mac(key, purpose, body))


def read_token(key: bytes, token: str, purpose: Purpose = "bounce") -> Verp | None:
    """What ``token`` says, if it is one we made for ``purpose``; else None."""
    token = token.lower()
    if not key or not _TOKEN.fullmatch(token):
        return None
    try:
        data = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    except (binascii.Error, ValueError):
        return None
    body, mac = data[:-MAC_BYTES], data[-MAC_BYTES:]
    ident = body[:-TAG_BYTES]
    if not 1 <= len(ident) <= 8 or _encode(data) != token:
        return None
    if not hmac.compare_digest(mac, _mac(key, purpose, body)):
        return None
    if len(ident) > 1 and ident[0] == 0:  # not the shortest spelling: not one we made
        return None
    return Verp(int.from_bytes(ident, "big"), purpose, body[-TAG_BYTES:], key)


def _split(bounce_address: str) -> tuple[str, str]:
    local, _, domain = bounce_address.rpartition("@")
    if not local or not domain:
        raise ValueError(f"{bounce_address!r} is not an address")
    return local, domain


def return_path(bounce_address: str, key: bytes, delivery_id: int, email: str) -> str:
    """The envelope sender for delivery ``delivery_id`` to ``email``: local+token@domain."""
    local, domain = _split(bounce_address)
    return f"{local}+{make_token(key, delivery_id, email)}@{domain}"


def unsubscribe_mailto(bounce_address: str, key: bytes, delivery_id: int, email: str) -> str:
    """The ``mailto:`` List-Unsubscribe fallback (RFC 2369) for that delivery."""
    local, domain = _split(bounce_address)
    token = make_token(key, delivery_id, email, "unsubscribe")
    return f"mailto:{local}+{UNSUBSCRIBE_PREFIX}{token}@{domain}?subject=unsubscribe"


def token_of(bounce_address: str, address: str) -> str | None:
    """The unverified token in ``address`` if it is ``bounce_address`` with one (local+token@
    domain, with or without <>, any case); ``unsub-`` kept in front when present."""
    match = _ADDRESS.fullmatch(address.strip())
    if match is None:
        return None
    local, domain = _split(bounce_address)
    got_local, got_domain = match[1], match[2].rstrip(".")
    if got_domain.lower() != domain.lower():
        return None
    head, plus, token = got_local.partition("+")
    if not plus or head.lower() != local.lower() or not token:
        return None
    return token.lower()


def read_address(bounce_address: str, key: bytes, address: str) -> Verp | None:
    """What the VERP ``address`` says (a bounce or an unsubscribe token), if we signed it."""
    token = token_of(bounce_address, address)
    if token is None:
        return None
    if token.startswith(UNSUBSCRIBE_PREFIX):
        return read_token(key, token.removeprefix(UNSUBSCRIBE_PREFIX), "unsubscribe")
    return read_token(key, token, "bounce")


def find(bounce_address: str, key: bytes, addresses: Iterable[str]) -> Verp | None:
    """The first of ``addresses`` that is a VERP address we signed, read; else None."""
    for address in addresses:
        verp = read_address(bounce_address, key, address)
        if verp is not None:
            return verp
    return None
