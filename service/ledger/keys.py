"""The state's own secrets: the key that signs links when the operator set none, and the salt of
the hashes it keeps instead of addresses (forgotten ones, the form's rate limits)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from pydantic import SecretStr
from sqlalchemy import insert, select

from service.ledger.db import Database
from service.ledger.schema import meta_table

__all__ = ["Keys"]


class Keys:
    """The key that signs unsubscribe links when the operator set none, made once per state,
    and the state's salt."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._generated_key: bytes | None = None
        self._salt: bytes | None = None

    def secret_key(self, configured: SecretStr | None = None) -> bytes:
        """The key that signs unsubscribe links: server.secret_key if configured, else one
        generated on first use and kept in the state, so links stay valid across restarts."""
        if configured is not None:
            return configured.get_secret_value().encode()
        if self._generated_key is None:
            with self.db.tx() as conn:
                query = select(meta_table.c.value).where(meta_table.c.key == "secret_key")
                value = conn.scalar(query)
                if value is None:
                    value = secrets.token_urlsafe(32)
                    conn.execute(insert(meta_table).values(key="secret_key", value=value))
            self._generated_key = str(value).encode()
        return self._generated_key

    def salt(self) -> bytes:
        """The state's salt, made on first use: the same on every host that shares the state
        (two hosts making it at once keep the first one written)."""
        if self._salt is None:
            with self.db.tx() as conn:
                conn.execute(
                    self.db.insert_new(meta_table, "key").values(
                        key="salt", value=secrets.token_hex(32)
                    )
                )
                value = conn.scalar(select(meta_table.c.value).where(meta_table.c.key == "salt"))
            self._salt = str(value).encode()
        return self._salt

    def digest(self, text: str) -> str:
        """The salted hash of ``text`` (an address lower-cased, a rate limit's key): what the
        state keeps where it must recognise a value without holding it."""
        return hmac.new(self.salt(), text.encode("utf-8"), hashlib.sha256).hexdigest()
