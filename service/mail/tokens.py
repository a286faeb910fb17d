"""Signed link tokens: an address and its HMAC in one URL-safe string (pure, no I/O).

A token is ``base64url(mac || payload)`` without padding, where ``payload`` is the lower-cased
email in UTF-8 and ``mac`` is HMAC-SHA256(key, purpose || payload) cut to 16 bytes (128 bits).
Each use has its own purpose prefix, so an unsubscribe token opens no preferences page and a
preferences token confirms nothing. A confirmation token's payload starts with the moment it
was issued (5 bytes, seconds since the epoch): it expires, and names the one request it
confirms.

Reading is strict: only the canonical encoding is accepted (base64 leaves spare bits in the
last character, so a lenient decoder would take two spellings of one token), the MAC is
compared in constant time, and anything else, garbage included, reads as ``None``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from datetime import UTC, datetime

PURPOSE = b"bantin/unsubscribe/v1\x00"
PREFERENCES = b"bantin/preferences/v1\x00"
CONFIRM = b"bantin/confirm/v1\x00"
MAC_BYTES = 16
_STAMP_BYTES = 5  # seconds since the epoch: enough until the year 36812
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_MAX_TOKEN = 1024  # an address is at most 254 octets; longer input is not ours


def _mac(key: bytes, address: bytes, purpose: bytes = PURPOSE) -> bytes:
    return hmac.new(key, purpose + address, hashlib.sha256).digest()[:MAC_BYTES]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(key: bytes, email: str, purpose: bytes = PURPOSE) -> str:
    """The token for ``email`` (case-insensitive: ``A@x`` and ``a@x`` get the same token)."""
    return _seal(key, email.lower().encode("utf-8"), purpose)


def read_token(key: bytes, token: str, purpose: bytes = PURPOSE) -> str | None:
    """The lower-cased address signed in ``token``, or None if it is not one we made."""
    payload = _open(key, token, purpose)
    return None if payload is None else _text(payload)


def confirm_token(key: bytes, email: str, issued: datetime) -> str:
    """The confirmation token of the request for ``email`` made at ``issued``."""
    stamp = int(issued.timestamp()).to_bytes(_STAMP_BYTES, "big")
    return _seal(key, stamp + email.lower().encode("utf-8"), CONFIRM)


def read_confirm_token(key: bytes, token: str) -> tuple[str, int] | None:
    """(address, when it was issued in whole seconds since the epoch) of a confirmation token,
    or None if it is not one we made. Whether it has expired is the caller's to say."""
    payload = _open(key, token, CONFIRM)
    if payload is None or len(payload) <= _STAMP_BYTES:
        return None
    address = _text(payload[_STAMP_BYTES:])
    if address is None:
        return None
    return address, int.from_bytes(payload[:_STAMP_BYTES], "big")


def issued_at(seconds: int) -> datetime:
    """The moment a confirmation token's seconds stand for."""
    return datetime.fromtimestamp(seconds, UTC)


def _seal(key: bytes, payload: bytes, purpose: bytes) -> str:
    if not key:
        raise ValueError("the signing key is empty; set server.secret_key")
    return _encode(_mac(key, payload, purpose) + payload)


def _open(key: bytes, token: str, purpose: bytes) -> bytes | None:
    if not key or len(token) > _MAX_TOKEN or not _ALPHABET.fullmatch(token):
        return None
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(data) <= MAC_BYTES or _encode(data) != token:
        return None
    mac, payload = data[:MAC_BYTES], data[MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, payload, purpose)):
        return None
    return payload


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:  # only a key holder could sign such bytes; refuse them anyway
        return None


def unsubscribe_url(base_url: str, key: bytes, email: str) -> str:
    """The one-click unsubscribe URL for ``email`` under the site's ``base_url``."""
    return f"{base_url.rstrip('/')}/unsubscribe/{make_token(key, email)}"


def preferences_url(base_url: str, key: bytes, email: str) -> str:
    """The URL of ``email``'s preferences page under the site's ``base_url``."""
    return f"{base_url.rstrip('/')}/preferences/{make_token(key, email, PREFERENCES)}"


def confirm_url(base_url: str, key: bytes, email: str, issued: datetime) -> str:
    """The URL that confirms the request for ``email`` made at ``issued``."""
    return f"{base_url.rstrip('/')}/subscribe/confirm/{confirm_token(key, email, issued)}"
