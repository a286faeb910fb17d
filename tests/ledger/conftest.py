"""The ledger tests' database: every ledger test runs on both backends (tests/backends.py)."""

from backends import state, url

__all__ = ["state", "url"]
