"""The `bantin` command: parses arguments, loads Settings once, and hands them down.

content (build), check, doctor, mail (digest, preview, status, resume, resubscribe),
subscribers (export, import, forget), and run (the service); logs and progress are how they
report. Each command's module is imported only when that command runs: `bantin build` (a
restart of the site) never pays for the mail stack, the migrations or the DNS checks, and
`bantin --help` for none of them (tests/cli/test_imports.py keeps it so).

May import everything: the CLI is the outermost edge.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service import __version__
from service.cli.logs import setup_logging
from service.errors import BantinError
from service.model import FREQUENCIES

if TYPE_CHECKING:
    from service.settings import Settings

__all__ = ["main", "parser"]

log = logging.getLogger("bantin")

EX_TEMPFAIL = 75  # sysexits.h: an MTA keeps the message and tries again


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin run`: run the service until SIGTERM; StateError if another runner holds the state."""
    from service.runtime.service import run_service  # the service's imports, only for `run`

    return run_service(settings, args.config_file)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 1 to 1000")
    return value


Command = Callable[["Settings", argparse.Namespace], int]


class Deferred:
    """A command's handler, ``module:function``, imported when the command runs."""

    def __init__(self, name: str) -> None:
        self.module, self.function = name.split(":")

    def __call__(self, settings: Settings, args: argparse.Namespace) -> int:
        handler: Command = getattr(importlib.import_module(self.module), self.function)
        return handler(settings, args)

    def __repr__(self) -> str:
        return f"Deferred({self.module}:{self.function})"


def _deferred(name: str) -> Command:
    return Deferred(f"service.cli.{name}")


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

    def add(name: str, func: Command | str, help: str) -> argparse.ArgumentParser:
        """``func``: the handler, or its ``module:function`` under service.cli."""
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(func=_deferred(func) if isinstance(func, str) else func)
        return sub

    build = add("build", "content:cmd_build", "scan the articles and write feeds and pages")
    build.add_argument(
        "--search", action="store_true", help="then index the pages for the search box (Pagefind)"
    )
    add(
        "check",
        "check:cmd_check",
        "validate config, templates and every article; exit 1 on any problem",
    )
    add("run", cmd_run, "run the service: scheduler, feeds and pages over HTTP")
    digest = add("digest", "mail:cmd_digest", "send the due digests of one frequency")
    digest.add_argument("--frequency", choices=FREQUENCIES, default="daily")
    digest.add_argument(
        "--dry-run", action="store_true", help="render and report; send and record nothing"
    )
    preview = add(
        "preview", "mail:cmd_preview", "print the digest EMAIL would get now; sends nothing"
    )
    preview.add_argument("email")
    preview.add_argument("--frequency", choices=FREQUENCIES)
    preview.add_argument("--html", metavar="FILE", help="also write the HTML part here")
    preview.add_argument("--eml", metavar="FILE", help="also write the whole message here")
    preview.add_argument(
        "--latest",
        metavar="N",
        type=_positive,
        help="show the digest of the latest N articles they would receive, new or not "
        "(what it shows by itself when nothing is new, with N=5)",
    )
    preview.add_argument("--open", action="store_true", help="open the HTML in a web browser")
    init = add(
        "init",
        "mail:cmd_init",
        "make the state database (run by itself for a new installation; never erases one)",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="make it even though this installation ran before (its old state is lost)",
    )
    doctor = add(
        "doctor",
        "doctor:cmd_doctor",
        "check DNS (SPF, DKIM, DMARC, MX), the relay, unsubscribe, size",
    )
    doctor.add_argument(
        "--nameserver",
        action="append",
        metavar="IP[:PORT]",
        help="ask this DNS server (repeatable; default: the system's resolvers)",
    )
    doctor.add_argument(
        "--relay-ip",
        action="append",
        metavar="IP",
        help="the address the relay sends from, for SPF (default: smtp.host's addresses)",
    )
    doctor.add_argument("--timeout", type=float, default=10.0, help="seconds per network check")
    add("status", "mail:cmd_status", "subscribers, last runs, pending and failed deliveries")
    resume = add("resume", "mail:cmd_resume", "lift the suspension or suppression of EMAIL")
    resume.add_argument("email")
    resubscribe = add(
        "resubscribe",
        "mail:cmd_resubscribe",
        "take back EMAIL's unsubscription when they asked for the digest again (asks to confirm)",
    )
    resubscribe.add_argument("email")
    resubscribe.add_argument("--yes", action="store_true", help="confirm without asking")
    bounce = add(
        "bounce",
        "mail:cmd_bounce",
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
    export.set_defaults(func=_deferred("subscribers:cmd_export"))
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--output", metavar="FILE", help="write here instead of standard output")
    imported = people_commands.add_parser(
        "import", help="add confirmed subscribers from a CSV or JSON file, with a legal basis"
    )
    imported.set_defaults(func=_deferred("subscribers:cmd_import"))
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
        "subscribers:cmd_forget",
        "erase EMAIL's personal data from the state, keeping a salted hash so it is never "
        "mailed again; say what was removed",
    )
    forget.add_argument("email")
    return top


class Stopped(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so both stop a command alike."""


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise Stopped()


# What a command stopped by a signal leaves behind, when there is more to say than "stopped"
_AFTER_STOP = {
    "digest": "what was not sent stays pending, and the next run sends it",
    "run": "what was not sent stays pending, and the next run sends it",
}


def _stopped(args: argparse.Namespace, by_sigterm: bool) -> int:
    name, status = ("SIGTERM", 143) if by_sigterm else ("Ctrl-C", 130)
    after = _AFTER_STOP.get(args.command)
    print(
        f"bantin {args.command}: stopped by {name}" + (f"; {after}" if after else ""),
        file=sys.stderr,
    )
    return status


def _pipe_closed() -> int:
    """The reader of our output went away (`bantin status | head -1`): stop quietly, as other
    Unix tools do, and keep the interpreter from failing again when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a tool the closed pipe killed


def main(argv: Sequence[str] | None = None) -> int:
    """The `bantin` command; returns the exit status. Nothing prints a traceback unless ``-v``:
    not a BantinError, not Ctrl-C or SIGTERM (130, 143), not a closed pipe (141)."""
    args = parser().parse_args(argv)
    setup_logging(args.verbose, args.log_json)
    from service.settings import config_path, load_settings  # pydantic: not for --help

    args.config_file = config_path(args.config)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if main_thread else None
    try:
        settings = load_settings(Path(args.config_file))
        result: int = args.func(settings, args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return result
    except BantinError as exc:
        if args.verbose:
            log.exception("bantin %s failed", args.command)
        print(f"bantin: {exc}", file=sys.stderr)
        failure: int = getattr(args, "failure_status", 2)
        return failure
    except BrokenPipeError:
        if args.verbose:
            log.exception("bantin %s: its output was closed", args.command)
        return _pipe_closed()
    except KeyboardInterrupt as exc:
        if args.verbose:
            log.exception("bantin %s stopped", args.command)
        return _stopped(args, isinstance(exc, Stopped))
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
