"""The key that signs unsubscribe links, when the operator set none: kept in the state."""

from __future__ import annotations

import secrets

from pydantic import SecretStr
from sqlalchemy import insert, select

from service.ledger.db import Database
from service.ledger.schema import meta_table

__all__ = ["Keys"]


class Keys:
    """The key that signs unsubscribe links when the operator set none, made once per state."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._generated_key: bytes | None = None

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
