"""The `bantin` command: parses arguments, loads Settings once, and hands them down."""

from __future__ import annotations

import argparse
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
from service.errors import BantinError
from service.settings import Settings, config_path, load_settings
from service.site import PAGE_TEMPLATES
from service.sources import Source
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


def check_problems(settings: Settings) -> list[str]:
    """Every problem `bantin check` reports, one line each."""
    problems: list[str] = []
    templates = Templates(settings.site.templates_dir, zone=settings.site.zone)
    problems += [str(p) for p in templates.check(PAGE_TEMPLATES)]
    try:
        scan = Source(settings.source.dir, settings.site.zone).scan()
    except BantinError as exc:
        return [*problems, str(exc)]
    problems += [f"{settings.source.dir}/{p}" for p in scan.problems]
    return problems


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    problems = check_problems(settings)
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
