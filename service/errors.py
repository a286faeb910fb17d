"""The exception tree: every error a user can cause, carrying the input that caused it.

BantinError
├── ConfigError(file, line, reason)       bad settings or subscribers file: stop or refuse
├── ArticleError(path, reason)            one bad article: skip it and report
├── TemplateError(template, reason)       an operator's template fails to load or render
├── StateError(reason)                    the state database is unusable or locked
└── DeliveryError(address, code, reply)   the SMTP server refused a message
"""

from __future__ import annotations

from pathlib import Path


class BantinError(Exception):
    """Base class: str(error) is one line that says what failed, where, and what to do."""


class ConfigError(BantinError):
    def __init__(self, file: Path | str, reason: str, line: int | None = None) -> None:
        self.file = str(file)
        self.line = line
        self.reason = reason
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {reason}")


class ArticleError(BantinError):
    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class TemplateError(BantinError):
    def __init__(self, template: str, reason: str) -> None:
        self.template = template
        self.reason = reason
        super().__init__(f"template {template}: {reason}")


class StateError(BantinError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DeliveryError(BantinError):
    def __init__(self, address: str, code: int | None, reply: str, *, permanent: bool) -> None:
        self.address = address
        self.code = code
        self.reply = reply
        self.permanent = permanent
        kind = "refused" if permanent else "deferred"
        super().__init__(f"{address}: {kind} by the mail server: {code or ''} {reply}".strip())
