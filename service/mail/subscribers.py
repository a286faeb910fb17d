"""The subscribers file (TOML, edited by operators): read entry by entry, validated like config.

    [[subscriber]]
    email = "hoa.nguyen@example.org"
    name = "Nguyễn Thị Hoa"                 # optional
    frequency = "daily"                      # immediate | daily | weekly (default daily)
    categories = ["Lịch tiếp công dân"]      # optional: names or slugs; absent = all

The file is read one ``[[subscriber]]`` block at a time, so 100,000 subscribers never sit in
memory at once; each bad entry is reported with its line and never mailed.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.content.markup import clean_text
from service.content.slug import category
from service.errors import ConfigError
from service.model import FREQUENCIES, Subscriber

_HEADER = re.compile(r"^\s*\[\[\s*subscriber\s*\]\]\s*(#.*)?$")
_TABLE = re.compile(r"^\s*\[")
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_KEYS = {"email", "name", "frequency", "categories"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One parsed block: a valid subscriber, or the problem that keeps it from mail."""

    line: int
    subscriber: Subscriber | None
    problem: ConfigError | None = None
    warning: str | None = None


def check_address(email: str) -> str | None:
    """Why ``email`` is not a usable address (syntax only, no DNS), or None."""
    if _CONTROL.search(email):
        return "contains a line break or control character"
    if len(email) > 254 or not _ADDRESS.match(email):
        return f"{email!r} is not an email address like ten@example.org"
    local = email.split("@", 1)[0]
    if local.startswith(".") or local.endswith(".") or ".." in local or len(local) > 64:
        return f"{email!r} is not an email address like ten@example.org"
    return None


def read_entries(path: Path, known_categories: dict[str, str] | None = None) -> Iterator[Entry]:
    """Every ``[[subscriber]]`` block of ``path`` in order; raises ConfigError if unreadable.

    ``known_categories`` maps slug -> name; when given, unknown categories produce warnings.
    """
    try:
        file = path.open(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(
            path, "subscribers file not found; create it or set [mail] subscribers_file"
        ) from None
    except OSError as exc:
        raise ConfigError(path, f"cannot be read: {exc.strerror}") from None
    seen: set[str] = set()
    with file:
        try:
            yield from _blocks(
                path, file, lambda line, text: _entry(path, line, text, seen, known_categories)
            )
        except UnicodeDecodeError:
            raise ConfigError(path, "is not UTF-8; save it as UTF-8") from None


def _blocks(path: Path, lines: Iterator[str], make: Callable[[int, str], Entry]) -> Iterator[Entry]:
    block: list[str] = []
    start = 0
    for number, line in enumerate(lines, start=1):
        if _HEADER.match(line):
            if start:
                yield make(start, "".join(block))
            block, start = [], number
            continue
        if not start:
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                yield Entry(
                    number,
                    None,
                    ConfigError(path, "expected a [[subscriber]] line before any key", number),
                )
            continue
        block.append(line)
    if start:
        yield make(start, "".join(block))


def _entry(path: Path, line: int, text: str, seen: set[str], known: dict[str, str] | None) -> Entry:
    def problem(reason: str, offset: int = 0) -> Entry:
        return Entry(line, None, ConfigError(path, reason, line + offset))

    for offset, raw in enumerate(text.splitlines(), start=1):
        if _TABLE.match(raw):
            return problem(
                f"unexpected table {raw.strip()!r}; only [[subscriber]] blocks belong here", offset
            )
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        offset = int(match.group(1)) if match else 0
        return problem(f"not valid TOML: {str(exc).split(' (at')[0]}", offset)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        return problem(f"unknown key {unknown[0]!r}; use email, name, frequency, categories")
    email = data.get("email")
    if not isinstance(email, str) or not email.strip():
        return problem("subscriber has no 'email'; add one")
    email = email.strip()
    bad = check_address(email)
    if bad:
        return problem(f"email {bad}")
    if email.lower() in seen:
        return problem(f"{email} is listed twice; remove one of the entries")
    seen.add(email.lower())
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str) or _CONTROL.search(name):
            return problem(f"name of {email} must be one line of text")
        name = clean_text(name).strip() or None
    frequency = data.get("frequency", "daily")
    if frequency not in FREQUENCIES:
        return problem(f"frequency of {email} is {frequency!r}; use immediate, daily or weekly")
    categories = data.get("categories")
    slugs: frozenset[str] | None = None
    warning = None
    if categories is not None:
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            return problem(f'categories of {email} must be a list of names, like ["Thông báo"]')
        # the very slug an article of that category gets (capped, "khac" when empty)
        slugs = frozenset(category(c).slug for c in categories)
        if known is not None:
            unknown_categories = sorted(c for c in categories if category(c).slug not in known)
            if unknown_categories:
                warning = (
                    f"{path}:{line}: {email} asks for unknown categor"
                    f"{'ies' if len(unknown_categories) > 1 else 'y'} "
                    f"{', '.join(map(repr, unknown_categories))}; "
                    f"known: {', '.join(sorted(known.values()))}"
                )
    return Entry(
        line,
        Subscriber(email=email, name=name, frequency=frequency, categories=slugs),
        warning=warning,
    )


def validate(
    path: Path, known_categories: dict[str, str] | None = None
) -> tuple[int, list[ConfigError], list[str]]:
    """(valid entries, problems, warnings) for the whole file, for `bantin check` and reloads."""
    count = 0
    problems: list[ConfigError] = []
    warnings: list[str] = []
    for entry in read_entries(path, known_categories):
        if entry.problem:
            problems.append(entry.problem)
        else:
            count += 1
        if entry.warning:
            warnings.append(entry.warning)
    return count, problems, warnings
