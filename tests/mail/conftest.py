"""Fixtures of the mail tests: both state backends (tests/backends.py), for those that must hold
on each."""

from backends import state, url

__all__ = ["state", "url"]
