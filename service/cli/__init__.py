"""The `bantin` command: parses arguments, loads Settings once, and hands them down.

content (build, check), mail (digest, preview, status, resume), subscribers (export, import,
forget), and run (the service); logs and progress are how they report.

May import everything: the CLI is the outermost edge.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from service import __version__
from service.cli.content import cmd_build, cmd_check
from service.cli.doctor import add_arguments as doctor_arguments
from service.cli.doctor import cmd_doctor
from service.cli.logs import setup_logging
from service.cli.mail import (
    cmd_bounce,
    cmd_digest,
    cmd_init,
    cmd_preview,
    cmd_resume,
    cmd_status,
)
from service.cli.subscribers import cmd_export, cmd_forget, cmd_import
from service.errors import BantinError
from service.model import FREQUENCIES
from service.settings import Settings, config_path, load_settings

__all__ = ["main", "parser"]

log = logging.getLogger("bantin")

EX_TEMPFAIL = 75  # sysexits.h: an MTA keeps the message and tries again


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin run`: run the service until SIGTERM; StateError if another runner holds the state."""
    from service.runtime.service import run_service  # the service's imports, only for `run`

    return run_service(settings, args.config_file)


Command = Callable[[Settings, argparse.Namespace], int]


def parser() -> argparse.ArgumentParser:
    """The `bantin` command line: global options, one subcommand per command (handler: ``func``)."""
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

    build = add("build", cmd_build, "scan the articles and write feeds and pages")
    build.add_argument(
        "--search", action="store_true", help="then index the pages for the search box (Pagefind)"
    )
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
    init = add(
        "init",
        cmd_init,
        "make the state database (run by itself for a new installation; never erases one)",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="make it even though this installation ran before (its old state is lost)",
    )
    doctor_arguments(
        add("doctor", cmd_doctor, "check DNS (SPF, DKIM, DMARC, MX), the relay, unsubscribe, size")
    )
    add("status", cmd_status, "subscribers, last runs, pending and failed deliveries")
    resume = add("resume", cmd_resume, "lift the suspension or suppression of EMAIL")
    resume.add_argument("email")
    bounce = add(
        "bounce",
        cmd_bounce,
        "read one bounce or complaint on stdin and act on it (for the MTA's pipe); "
        "exit 75 when the state cannot be reached, so the MTA retries",
    )
    bounce.set_defaults(failure_status=EX_TEMPFAIL)
    people = commands.add_parser(
        "subscribers",
        help="export or import subscribers with their consent",
        description="Export every subscriber with their source and consent, or import some.",
    )
    people_commands = people.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = people_commands.add_parser(
        "export", help="write every subscriber (file and form) with their source and consent"
    )
    export.set_defaults(func=cmd_export)
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    imported = people_commands.add_parser(
        "import", help="add confirmed subscribers from a CSV or JSON file, with a legal basis"
    )
    imported.set_defaults(func=cmd_import)
    imported.add_argument("file", metavar="FILE", help="as `bantin subscribers export` writes")
    imported.add_argument(
        "--legal-basis",
        required=True,
        metavar="TEXT",
        help="on what basis they are mailed, recorded with each (e.g. the consent on paper)",
    )
    imported.add_argument("--format", choices=["csv", "json"], help="default: by extension")
    forget = add(
        "forget",
        cmd_forget,
        "erase EMAIL's personal data from the state, keeping a salted hash so it is never "
        "mailed again; say what was removed",
    )
    forget.add_argument("email")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """The `bantin` command; returns the exit status."""
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
        failure: int = getattr(args, "failure_status", 2)
        return failure
    except KeyboardInterrupt:
        return 130
