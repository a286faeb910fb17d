"""The `bantin` command: parses arguments, loads Settings once, and hands them down."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import __version__
from service.build import Builder
from service.delivery import DigestRun, RunReport, as_if_recorded
from service.digest import Composer, select
from service.errors import BantinError, ConfigError
from service.mailer import transport_for
from service.model import FREQUENCIES, Article, Frequency, Subscriber
from service.pool import default_processes
from service.settings import Settings, config_path, load_settings
from service.site import PAGE_TEMPLATES
from service.sources import Source
from service.state import State, message_id
from service.subscribers import read_entries, validate
from service.templates import Templates

log = logging.getLogger("bantin")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(verbose: bool, as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("apscheduler", "uvicorn.access", "mail.log", "aiosmtplib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def now() -> datetime:
    return datetime.now(UTC)


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    started = time.monotonic()
    scan = Source(settings.source.dir, settings.site.zone).scan()
    for problem in scan.problems:
        print(f"skipped {settings.source.dir}/{problem}", file=sys.stderr)
    report = Builder(settings, settings.site.templates_dir).build(scan, now())
    print(
        f"bantin build: {report.published} articles published, {len(scan.problems)} skipped, "
        f"{len(report.written)} files written, {len(report.removed)} removed, "
        f"{report.files} files in {settings.feeds.output_dir}/ ({time.monotonic() - started:.2f} s)"
    )
    return 0


def check_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """Every problem `bantin check` reports, and its warnings, one line each."""
    problems: list[str] = []
    templates = Templates(settings.site.templates_dir, zone=settings.site.zone)
    problems += [str(p) for p in templates.check(PAGE_TEMPLATES)]
    try:
        problems += [str(p) for p in Composer(settings, b"check").check()]
    except BantinError as exc:
        problems.append(str(exc))
    known: dict[str, str] | None = None
    try:
        scan = Source(settings.source.dir, settings.site.zone).scan()
        problems += [f"{settings.source.dir}/{p}" for p in scan.problems]
        known = {a.category.slug: a.category.name for a in scan.articles}
    except BantinError as exc:
        problems.append(str(exc))
    warnings: list[str] = []
    try:
        _, bad, warnings = validate(settings.mail.subscribers_file, known)
        problems += [str(p) for p in bad]
    except BantinError as exc:
        problems.append(str(exc))
    return problems, warnings


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    problems, warnings = check_problems(settings)
    for line in warnings:
        print(f"warning: {line}")
    for line in problems:
        print(line)
    if problems:
        print(
            f"bantin check: {len(problems)} problem{'s' if len(problems) > 1 else ''}",
            file=sys.stderr,
        )
        return 1
    print(f"bantin check: {args.config_file} and everything it points to are fine")
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from service.daemon import run_service

    return run_service(settings, args.config_file, log_json=args.log_json)


def _published(settings: Settings, at: datetime, *, quiet: bool = False) -> list[Article]:
    scan = Source(settings.source.dir, settings.site.zone).scan()
    if not quiet:
        for problem in scan.problems:
            print(f"skipped {settings.source.dir}/{problem}", file=sys.stderr)
    return scan.published(at)


class _ProgressBar:
    """A one-line progress display on a terminal, redrawn at most ten times a second."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.last = 0.0

    def __call__(self, report: RunReport) -> None:
        moment = time.monotonic()
        if moment - self.last < 0.1:
            return
        self.last = moment
        done = report.sent + report.deferred + report.failed
        width = 30
        filled = min(width, int(width * done / self.total)) if self.total else 0
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done} messages: "
            f"{report.sent} sent, {report.deferred} deferred, {report.failed} failed"
        )
        sys.stderr.flush()


def _count_subscribers(path: Path) -> int:
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            return sum(1 for line in file if line.strip().startswith("[[subscriber"))
    except OSError:
        return 0


def cmd_digest(settings: Settings, args: argparse.Namespace) -> int:
    frequency: Frequency = args.frequency
    state = State(settings.state.url)
    try:
        with state.locked(f"digest --frequency {frequency}"):
            started = now()
            published = _published(settings, started)
            known = {a.category.slug: a.category.name for a in published}
            composer = Composer(settings, state.secret_key(settings.server.secret_key))
            transport = transport_for(settings)
            progress = (
                _ProgressBar(_count_subscribers(settings.mail.subscribers_file))
                if sys.stderr.isatty()
                else None
            )
            run = DigestRun(
                state, composer, transport, progress=progress, processes=default_processes()
            )
            entries = read_entries(settings.mail.subscribers_file, known)

            async def go() -> RunReport:
                try:
                    return await run.run(frequency, published, entries, dry_run=args.dry_run)
                finally:
                    await transport.close()

            report = asyncio.run(go())
            if progress:
                sys.stderr.write("\n")
            if not args.dry_run:
                state.record_run(f"digest:{frequency}", started, now(), report.ok, report.summary())
    finally:
        state.close()
    print(report.summary())
    return 1 if report.stopped else 0


def _find_subscriber(settings: Settings, email: str) -> Subscriber:
    for entry in read_entries(settings.mail.subscribers_file):
        if entry.subscriber is not None and entry.subscriber.key == email.lower():
            return entry.subscriber
        if entry.problem is not None and email.lower() in entry.problem.reason.lower():
            raise entry.problem
    raise ConfigError(
        settings.mail.subscribers_file,
        f"{email} is not a subscriber; add a [[subscriber]] block for it",
    )


def cmd_preview(settings: Settings, args: argparse.Namespace) -> int:
    subscriber = _find_subscriber(settings, args.email)
    frequency: Frequency = args.frequency or subscriber.frequency
    moment = now()
    published = _published(settings, moment, quiet=True)
    state = State(settings.state.url)
    try:
        by_id = {a.id: a for a in published}
        unrecorded, start = as_if_recorded(state, published, state.last_seq())
        status = state.sync_subscribers([subscriber], moment, record=False, start=start)[
            subscriber.key
        ]
        fresh = [(seq, by_id[i]) for seq, i in state.articles_after(status.cursor) if i in by_id]
        fresh += unrecorded
        composer = Composer(settings, state.secret_key(settings.server.secret_key))
    finally:
        state.close()
    articles = select(status.cursor, fresh, subscriber)
    if not status.active:
        print(f"{subscriber.email} is unsubscribed or suspended: they get nothing", file=sys.stderr)
        return 0
    if not articles:
        print(f"nothing new for {subscriber.email}: no digest would be sent now", file=sys.stderr)
        return 0
    rendered = composer.render(subscriber, articles, frequency, moment)
    print(f"Subject: {rendered.subject}\n")
    print(rendered.text)
    if args.html:
        Path(args.html).write_text(rendered.html, encoding="utf-8")
    if args.eml:
        mid = message_id(subscriber.key, [a.id for a in articles], composer.domain)
        Path(args.eml).write_bytes(composer.message_bytes(subscriber, rendered, mid, moment))
    return 0


def _when(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.site.zone).strftime("%Y-%m-%d %H:%M")


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    by_frequency = dict.fromkeys(FREQUENCIES, 0)
    invalid = 0
    for entry in read_entries(settings.mail.subscribers_file):
        if entry.subscriber is None:
            invalid += 1
        else:
            by_frequency[entry.subscriber.frequency] += 1
    state = State(settings.state.url)
    try:
        counts = state.counts()
        runs = state.runs()
        problems = state.problems()
        suspended = state.addresses("suspended")
        unsubscribed = state.addresses("unsubscribed")
    finally:
        state.close()
    total = sum(by_frequency.values())
    print(
        f"Subscribers: {total} in {settings.mail.subscribers_file} "
        f"({', '.join(f'{k} {v}' for k, v in by_frequency.items())})"
        + (f", {invalid} invalid (see bantin check)" if invalid else "")
    )
    print(
        f"Deliveries: {counts['sent']} sent, {counts['pending']} pending, "
        f"{counts['failed']} failed, {counts['cancelled']} cancelled"
    )
    print("Last runs:" if runs else "Last runs: none yet")
    for run in runs:
        print(
            f"  {run.kind:<18} {_when(run.finished, settings)}  "
            f"{'ok' if run.ok else 'FAILED'}  {run.detail}"
        )
    if problems:
        print("Pending and failed deliveries:")
        for p in problems:
            when = _when(p.when, settings) if p.when else ""
            reply = f"{p.code or ''} {p.reply or ''}".strip() or "not tried yet"
            print(f"  {p.email:<32} {p.status:<8} {p.attempts} attempts  {when}  {reply}")
    for title, rows in (
        ("Suspended (bantin resume EMAIL)", suspended),
        ("Unsubscribed", unsubscribed),
    ):
        if rows:
            print(f"{title}:")
            for email, moment in rows:
                print(f"  {email:<32} since {_when(moment, settings)}")
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    state = State(settings.state.url)
    try:
        resumed = state.resume(args.email)
    finally:
        state.close()
    if resumed:
        print(f"{args.email} is no longer suspended; the next run mails them again")
        return 0
    print(f"{args.email} was not suspended; nothing changed", file=sys.stderr)
    return 1


Command = Callable[[Settings, argparse.Namespace], int]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="bantin", description="Feeds and email digests for announcements."
    )
    top.add_argument(
        "--config",
        metavar="PATH",
        help="config file (env BANTIN_CONFIG; default config/bantin.toml)",
    )
    top.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    top.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    top.add_argument("--version", action="version", version=f"bantin {__version__}")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=func)
        return sub

    add("build", cmd_build, "scan the articles and write feeds and pages")
    add("check", cmd_check, "validate config, templates and every article; exit 1 on any problem")
    add("run", cmd_run, "run the service: scheduler, feeds and pages over HTTP")
    digest = add("digest", cmd_digest, "send the due digests of one frequency")
    digest.add_argument("--frequency", choices=FREQUENCIES, default="daily")
    digest.add_argument(
        "--dry-run", action="store_true", help="render and report; send and record nothing"
    )
    preview = add("preview", cmd_preview, "print the digest EMAIL would get now; sends nothing")
    preview.add_argument("email")
    preview.add_argument("--frequency", choices=FREQUENCIES)
    preview.add_argument("--html", metavar="FILE", help="also write the HTML part here")
    preview.add_argument("--eml", metavar="FILE", help="also write the whole message here")
    add("status", cmd_status, "subscribers, last runs, pending and failed deliveries")
    resume = add("resume", cmd_resume, "lift the suspension of EMAIL")
    resume.add_argument("email")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose, args.log_json)
    args.config_file = config_path(args.config)
    try:
        settings = load_settings(Path(args.config_file))
        result: int = args.func(settings, args)
        return result
    except BantinError as exc:
        if args.verbose:
            log.exception("bantin %s failed", args.command)
        print(f"bantin: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
