"""Signed unsubscribe tokens: an address and its HMAC in one URL-safe string (pure, no I/O).

A token is ``base64url(mac || address)`` without padding, where ``address`` is the lower-cased
email in UTF-8 and ``mac`` is HMAC-SHA256(key, purpose || address) cut to 16 bytes (128 bits).
The purpose prefix keeps these MACs from being valid for any other use of the same key.

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

PURPOSE = b"bantin/unsubscribe/v1\x00"
MAC_BYTES = 16
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_MAX_TOKEN = 1024  # an address is at most 254 octets; longer input is not ours


def _mac(key: bytes, address: bytes) -> bytes:
    return hmac.new(key, PURPOSE + address, hashlib.sha256).digest()[:MAC_BYTES]


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(key: bytes, email: str) -> str:
    """The token for ``email`` (case-insensitive: ``A@x`` and ``a@x`` get the same token)."""
    if not key:
        raise ValueError("the unsubscribe key is empty; set server.secret_key")
    address = email.lower().encode("utf-8")
    return _encode(_mac(key, address) + address)


def read_token(key: bytes, token: str) -> str | None:
    """The lower-cased address signed in ``token``, or None if it is not one we made."""
    if not key or len(token) > _MAX_TOKEN or not _ALPHABET.fullmatch(token):
        return None
    try:
        data = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(data) <= MAC_BYTES or _encode(data) != token:
        return None
    mac, address = data[:MAC_BYTES], data[MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, address)):
        return None
    try:
        return address.decode("utf-8")
    except UnicodeDecodeError:  # only a key holder could sign such bytes; refuse them anyway
        return None


def unsubscribe_url(base_url: str, key: bytes, email: str) -> str:
    """The one-click unsubscribe URL for ``email`` under the site's ``base_url``."""
    return f"{base_url.rstrip('/')}/unsubscribe/{make_token(key, email)}"
