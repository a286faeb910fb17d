"""The exception tree: every error a user can cause, carrying the input that caused it.

BantinError
├── ConfigError(file, line, reason)       bad settings or subscribers file: stop or refuse
├── ArticleError(path, reason)            one bad article: skip it and report
├── TemplateError(template, reason)       an operator's template fails to load or render
└── StateError(reason)                    the state database is unusable or locked
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ArticleError",
    "BantinError",
    "ConfigError",
    "StateError",
    "TemplateError",
    "printable",
]


def printable(text: str) -> str:
    """``text`` safe to print on a terminal or in a log line: bytes that are not UTF-8 (file
    names come with them) as ``\\xff``, control characters (escape sequences, line breaks) as
    ``\\x1b``, ``\\n``; everything else as it is."""
    decoded = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if decoded.isprintable():
        return decoded
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in decoded)


class BantinError(Exception):
    """Base class: str(error) is one line that says what failed, where, and what to do."""


class ConfigError(BantinError):
    """A setting, the subscribers file, or a path they name cannot be used: start-up stops on
    it, a reload refuses it and the old configuration runs on."""

    def __init__(self, file: Path | str, reason: str, line: int | None = None) -> None:
        # a path as the config writes it is relative to where bantin runs: name it whole, so
        # that someone who ran bantin from elsewhere sees which file was looked for
        self.file = str(file.absolute() if isinstance(file, Path) else file)
        self.line = line
        self.reason = reason
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        # errors cross process boundaries (worker processes): rebuild them from their fields
        return (type(self), (self.file, self.reason, self.line))


class ArticleError(BantinError):
    """One article cannot be published as it is: it is skipped and reported, the others go on."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path  # as the file system gave it; printed escaped
        self.reason = reason
        super().__init__(f"{printable(path)}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.path, self.reason))


class TemplateError(BantinError):
    """``limit``: the render hit a resource limit (output size, time, loop budget), which
    depends on the data rendered as much as on the template."""

    def __init__(self, template: str, reason: str, limit: bool = False) -> None:
        self.template = template
        self.reason = reason
        self.limit = limit
        super().__init__(f"template {template}: {reason}")

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.template, self.reason, self.limit))


class StateError(BantinError):
    """The state database is unusable (unreachable, failing, missing) or another runner holds it.

    ``transient``: it may work again soon (a connection lost, a restart, a lock another writer
    holds), so a retry is worth it.
    """

    def __init__(self, reason: str, transient: bool = False) -> None:
        self.reason = reason
        self.transient = transient
        super().__init__(reason)

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.reason, self.transient))
