"""`bantin subscribers export`, `bantin subscribers import` and `bantin forget`: the personal data
of subscribers, as the law asks: every subscriber with where they came from and their consent,
imports with a stated legal basis, and erasure on request."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from service import clock
from service.content.slug import category
from service.errors import ConfigError
from service.ledger import State
from service.ledger.signups import Signup
from service.mail.subscribers import check_address, read_entries
from service.model import FREQUENCIES, Subscriber
from service.settings import Settings

__all__ = ["COLUMNS", "cmd_export", "cmd_forget", "cmd_import"]

# one row per subscriber; a list (categories) is written "a;b" in CSV and as a list in JSON
COLUMNS = [
    "email",
    "name",
    "frequency",
    "categories",
    "source",  # file (the operators' list), form, import
    "status",  # subscribed, pending, expired, unsubscribed, suspended, suppressed
    "requested_at",
    "request_ip",
    "consent_text",
    "confirmed_at",
    "confirm_ip",
    "legal_basis",
    "in_file",  # a sign-up the operators' file names too (the file wins)
]
CHUNK = 500


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _status(unsubscribed: bool, suspended: bool, suppressed: bool) -> str:
    if unsubscribed:
        return "unsubscribed"
    if suspended:
        return "suspended"
    return "suppressed" if suppressed else "subscribed"


def rows(settings: Settings, state: State) -> Iterator[dict[str, Any]]:
    """Every subscriber: the file's entries (with what the ledger says of them), then every
    sign-up with its consent record, streamed."""
    now = clock.now()
    chunk: list[Subscriber] = []

    def file_rows() -> Iterator[dict[str, Any]]:
        states = state.subscribers.sync(chunk, now, record=False)
        for s in chunk:
            st = states[s.key]
            yield {
                "email": s.email,
                "name": s.name,
                "frequency": s.frequency,
                "categories": sorted(s.categories) if s.categories is not None else None,
                "source": "file",
                "status": _status(st.unsubscribed, st.suspended, st.suppressed),
            }

    for entry in read_entries(settings.mail.subscribers_file):
        if entry.subscriber is None:
            continue
        chunk.append(entry.subscriber)
        if len(chunk) >= CHUNK:
            yield from file_rows()
            chunk = []
    if chunk:
        yield from file_rows()
        chunk = []
    hours = settings.subscribe.confirm_hours
    page: list[Signup] = []

    def signup_rows() -> Iterator[dict[str, Any]]:
        states = state.subscribers.sync([p.subscriber for p in page], now, record=False)
        for p in page:
            st = states[p.email]
            if p.status == "pending":
                status = "expired" if p.expired(now, hours) else "pending"
            else:
                status = _status(st.unsubscribed, st.suspended, st.suppressed)
            yield {
                "email": p.address,
                "name": p.name,
                "frequency": p.frequency,
                "categories": sorted(p.categories) if p.categories is not None else None,
                "source": p.source,
                "status": status,
                "requested_at": _time(p.requested_at),
                "request_ip": p.request_ip,
                "consent_text": p.consent_text,
                "confirmed_at": _time(p.confirmed_at),
                "confirm_ip": p.confirm_ip,
                "legal_basis": p.legal_basis,
                "in_file": p.in_file,
            }

    for signup in state.signups.everyone():
        page.append(signup)
        if len(page) >= CHUNK:
            yield from signup_rows()
            page = []
    if page:
        yield from signup_rows()


def _write_csv(out: TextIO, records: Iterator[dict[str, Any]]) -> int:
    writer = csv.DictWriter(out, COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    count = 0
    for record in records:
        flat = dict(record)
        if isinstance(flat.get("categories"), list):
            flat["categories"] = ";".join(flat["categories"])
        if "in_file" in flat:
            flat["in_file"] = "yes" if flat["in_file"] else ""
        writer.writerow(flat)
        count += 1
    return count


def _write_json(out: TextIO, records: Iterator[dict[str, Any]]) -> int:
    count = 0
    out.write("[")
    for record in records:
        full = {column: record.get(column) for column in COLUMNS}
        out.write(("\n" if not count else ",\n") + json.dumps(full, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin subscribers export`: every subscriber, their source and consent, as CSV or JSON,
    on standard output or into ``--output``."""
    state = State(settings.state.url)
    try:
        target = Path(args.output) if args.output else None
        out = target.open("w", encoding="utf-8", newline="") if target else sys.stdout
        try:
            write = _write_json if args.format == "json" else _write_csv
            count = write(out, rows(settings, state))
        finally:
            if target:
                out.close()
    finally:
        state.close()
    where = f" to {target}" if target else ""
    print(f"bantin subscribers export: {count} subscriber(s){where}", file=sys.stderr)
    return 0


# -- import ------------------------------------------------------------------------------------


def _read(path: Path, kind: str | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(record number, record) of an exported file, CSV or JSON (by ``kind`` or extension)."""
    kind = kind or ("json" if path.suffix.lower() == ".json" else "csv")
    try:
        if kind == "json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise ConfigError(path, "is not a JSON list of subscribers, as export writes")
            yield from enumerate(data, start=1)
            return
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.DictReader(file)
            if not reader.fieldnames or "email" not in reader.fieldnames:
                raise ConfigError(path, "has no 'email' column; export writes the columns to use")
            for number, record in enumerate(reader, start=2):  # line 1 is the header
                categories = record.get("categories")
                yield (
                    number,
                    {
                        **record,
                        "categories": categories.split(";") if categories else None,
                    },
                )
    except FileNotFoundError:
        raise ConfigError(path, "not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise ConfigError(path, f"cannot be read: {exc}") from None


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone offset")
    return moment


def _subscriber(record: dict[str, Any]) -> Subscriber:
    email = str(record.get("email") or "").strip()
    problem = check_address(email) if email else "is missing"
    if problem:
        raise ValueError(f"email {problem}")
    frequency = record.get("frequency") or "daily"
    if frequency not in FREQUENCIES:
        raise ValueError(f"frequency {frequency!r}; use immediate, daily or weekly")
    categories = record.get("categories")
    if categories is not None and not (
        isinstance(categories, list) and all(isinstance(c, str) for c in categories)
    ):
        raise ValueError("categories must be a list of names or slugs")
    name = record.get("name")
    return Subscriber(
        email,
        str(name).strip() or None if name else None,
        frequency,
        frozenset(category(c).slug for c in categories) if categories else None,
    )


SKIPPED = {
    "file": "listed in an operators' file: keep it in config/subscribers.toml",
    "pending": "never confirmed",
    "expired": "never confirmed",
    "unsubscribed": "unsubscribed",
    "suspended": "suspended after failures",
    "suppressed": "bounced or complained",
}


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin subscribers import FILE --legal-basis TEXT`: add the file's subscribers as
    confirmed ones, recording the legal basis stated (and the consent record a file exported
    by bantin carries). Rows that are not subscribed where they come from are skipped, and so
    are addresses that unsubscribed, bounced or were forgotten here. 1 if a row was refused."""
    basis = " ".join(args.legal_basis.split())
    if len(basis) < 10:
        raise ConfigError(
            "--legal-basis",
            "say on what basis these people are mailed (at least 10 characters), e.g. "
            '"consent given on the paper form at the reception desk, 2025"',
        )
    path = Path(args.file)
    added = already = 0
    skipped: dict[str, int] = {}
    problems: list[str] = []
    now = clock.now()
    state = State(settings.state.url)
    try:
        for number, record in _read(path, args.format):
            why = SKIPPED.get(str(record.get("source") or "")) or SKIPPED.get(
                str(record.get("status") or "")
            )
            if why:
                skipped[why] = skipped.get(why, 0) + 1
                continue
            try:
                subscriber = _subscriber(record)
                requested = _moment(record.get("requested_at"))
                confirmed = _moment(record.get("confirmed_at"))
            except ValueError as exc:
                problems.append(f"{path}:{number}: {exc}; the row was not imported")
                continue
            done = state.signups.add(
                subscriber,
                basis,
                now,
                requested_at=requested,
                request_ip=record.get("request_ip") or None,
                consent=record.get("consent_text") or None,
                confirmed_at=confirmed,
                confirm_ip=record.get("confirm_ip") or None,
            )
            if done == "added":
                added += 1
            elif done == "already":
                already += 1
            else:
                skipped["unsubscribed, suppressed or forgotten here"] = (
                    skipped.get("unsubscribed, suppressed or forgotten here", 0) + 1
                )
    finally:
        state.close()
    for problem in problems:
        print(f"bantin: {problem}", file=sys.stderr)
    summary = f"bantin subscribers import: {added} added with the legal basis given"
    if already:
        summary += f", {already} subscribed already"
    for why, count in sorted(skipped.items()):
        summary += f", {count} skipped ({why})"
    if problems:
        summary += f", {len(problems)} refused (above)"
    print(summary)
    return 1 if problems else 0


# -- forget ------------------------------------------------------------------------------------


def cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin forget EMAIL`: erase the address's personal data from the state, keep its salted
    hash (so it is never mailed again unless it signs up anew), and say what was removed and
    where it is still listed (the operators' file, which bantin never edits)."""
    email = args.email.strip()
    state = State(settings.state.url)
    try:
        erased = state.erasure.forget(email, clock.now())
    finally:
        state.close()
    if erased.removed:
        print(f"bantin forget: erased from {state.describe()}:")
        for what, count in erased.removed.items():
            print(f"  {count:>6}  {what}")
    else:
        print(f"bantin forget: {state.describe()} held nothing more about this address")
    print(
        "  kept: a salted hash of the address, so that it is never mailed again unless it "
        "signs up and confirms anew" + (" (it was kept already)" if erased.already else "")
    )
    listed = [
        entry.line
        for entry in read_entries(settings.mail.subscribers_file)
        if entry.subscriber is not None and entry.subscriber.key == email.lower()
    ]
    if listed:
        print(
            f"  still listed in {settings.mail.subscribers_file} line {listed[0]}: remove that "
            "entry (bantin does not edit the operators' file; until then it is not mailed)"
        )
    print(
        "  not erased here: backups of the state database, the service's log (it names an "
        "address whose mail was refused or deferred, or that unsubscribed), mail delivered"
    )
    return 0
