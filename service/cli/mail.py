"""`bantin digest`, `preview`, `status`, `resume` and `bounce`: the subscribers' side, from the
shell."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
import tempfile
import webbrowser
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from pathlib import Path

from service import clock
from service.cli.progress import ProgressBar, count_subscribers
from service.content.source import Source
from service.errors import ConfigError
from service.ledger import State, migrations
from service.ledger.lock import held, runner_lock
from service.mail.audience import everyone
from service.mail.compose import Composer
from service.mail.compose_workers import default_processes
from service.mail.intake import Intake
from service.mail.mime import message_id, read_dkim_key
from service.mail.news import news_for
from service.mail.pace import paced_transport
from service.mail.run import DigestRun, RunReport, run_digest
from service.mail.subscribers import read_entries
from service.model import FREQUENCIES, Article, Frequency, Subscriber
from service.settings import Settings

__all__ = [
    "cmd_bounce",
    "cmd_digest",
    "cmd_init",
    "cmd_preview",
    "cmd_resubscribe",
    "cmd_resume",
    "cmd_status",
]

log = logging.getLogger("bantin")

MAX_BOUNCE = 25 * 2**20  # bytes of a returned message bantin bounce reads


def _published(
    settings: Settings, state: State, at: datetime, *, quiet: bool = False
) -> list[Article]:
    identities = state.articles.identities()
    source = Source(
        settings.source.dir, settings.site.zone, *identities, index=settings.state.scan_index
    )
    scan = source.scan()
    if not quiet:
        for problem in scan.problems:
            print(f"skipped {settings.source.dir}/{problem}", file=sys.stderr)
    return scan.published(at)


def _composer(settings: Settings, state: State) -> Composer:
    mail = settings.mail
    dkim = read_dkim_key(mail.dkim_domain, mail.dkim_selector, mail.dkim_key_file)
    return Composer(settings, state.keys.secret_key(settings.server.secret_key), dkim)


def cmd_digest(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin digest`: send the due digests of one frequency and print the run's summary.

    ``--dry-run`` renders and counts, and sends and records nothing. 1 if sending stopped early
    on a fault; StateError if another runner holds the state.
    """
    frequency: Frequency = args.frequency
    state = State(settings.state.url)
    # a dry run sends and records nothing, so it runs beside `bantin run` without its lock
    lock: AbstractContextManager[object] = (
        nullcontext()
        if args.dry_run
        else held(runner_lock(state), f"digest --frequency {frequency}")
    )
    try:
        with lock:
            published = _published(settings, state, clock.now())
            known = {a.category.slug: a.category.name for a in published}
            progress = (
                ProgressBar(count_subscribers(settings.mail.subscribers_file))
                if sys.stderr.isatty()
                else None
            )
            run = DigestRun(
                state,
                _composer(settings, state),
                paced_transport(settings),
                frequency,
                published,
                everyone(
                    state,
                    read_entries(settings.mail.subscribers_file, known),
                    record=not args.dry_run,
                ),
                dry_run=args.dry_run,
                progress=progress,
                processes=default_processes(),
            )
            report: RunReport = asyncio.run(_stoppable(run))
            if progress:
                sys.stderr.write("\n")
    finally:
        state.close()
    print(report.summary())
    return 1 if report.stopped else 0


async def _stoppable(run: DigestRun) -> RunReport:
    """``run_digest(run)``, which SIGTERM ends as Ctrl-C does: by cancelling its task, so that
    its clean-up (compose workers, connections) runs inside the loop; then Stopped, as
    everywhere else. Raised by the signal handler itself, Stopped could land in the loop's own
    clean-up and leave the run's task unfinished ("Task was destroyed but it is pending!")."""
    from service.cli import Stopped  # the CLI's package imports this module

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    previous = signal.getsignal(signal.SIGTERM)
    terms: list[bool] = []

    def stop() -> None:
        terms.append(True)
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, stop)
    except (RuntimeError, ValueError):  # not the main thread: the handler there stays
        return await run_digest(run)
    try:
        return await run_digest(run)
    except asyncio.CancelledError:
        if terms:
            raise Stopped() from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)


def _find_subscriber(settings: Settings, email: str) -> Subscriber:
    for entry in read_entries(settings.mail.subscribers_file):
        if entry.subscriber is not None and entry.subscriber.key == email.lower():
            return entry.subscriber
        if entry.problem is not None and email.lower() in entry.problem.reason.lower():
            raise entry.problem
    state = State(settings.state.url)
    try:
        signup = state.signups.get(email)
    finally:
        state.close()
    if signup is not None and signup.status == "confirmed":
        return signup.subscriber
    raise ConfigError(
        settings.mail.subscribers_file,
        f"{email} is not a subscriber (nor a confirmed sign-up); add a [[subscriber]] block for it",
    )


PREVIEW_LATEST = 5  # articles a preview shows when nothing is new for the subscriber


def cmd_preview(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin preview`: print the digest EMAIL would get now; sends and records nothing.

    With nothing new for them (or with ``--latest N``) it shows the digest of the latest N
    published articles of their categories, and says so. ``--html`` and ``--eml`` also write
    its HTML part and its whole message to files; ``--open`` shows the HTML in a browser.
    ConfigError if EMAIL is not a valid entry of the subscribers file.
    """
    subscriber = _find_subscriber(settings, args.email)
    frequency: Frequency = args.frequency or subscriber.frequency
    moment = clock.now()
    state = State(settings.state.url)
    try:
        published = _published(settings, state, moment, quiet=True)
        news = news_for(state, subscriber, published, moment)
        composer = _composer(settings, state)
    finally:
        state.close()
    articles = news.articles
    if not news.status.active:
        print(
            f"{subscriber.email} is unsubscribed, suspended or suppressed: they get nothing",
            file=sys.stderr,
        )
        if args.latest is None:
            return 0
    if args.latest is not None or not articles:
        count = args.latest or PREVIEW_LATEST
        theirs = [a for a in published if subscriber.wants(a)]
        theirs.sort(key=lambda a: (a.date, a.id), reverse=True)
        if args.latest is None:
            print(
                f"nothing new for {subscriber.email}: no digest would be sent now. Here is "
                f"what one looks like with the latest {count} article(s) they would receive "
                "(--latest N to choose how many):",
                file=sys.stderr,
            )
        articles = theirs[:count]
        if not articles:
            print(
                f"no published article is in {subscriber.email}'s categories yet: nothing to show",
                file=sys.stderr,
            )
            return 0
    rendered = composer.render(subscriber, articles, frequency, moment)
    print(f"Subject: {rendered.subject}\n")
    print(rendered.text)
    html_file = Path(args.html) if args.html else None
    if html_file is not None:
        html_file.write_text(composer.viewable(rendered.html), encoding="utf-8")
    if args.eml:
        mid = message_id(subscriber.key, [a.id for a in articles], composer.domain)
        Path(args.eml).write_bytes(composer.message_bytes(subscriber, rendered, mid, moment))
    if args.open:
        _open_in_browser(composer.viewable(rendered.html), html_file, subscriber.key)
    return 0


def _open_in_browser(html: str, html_file: Path | None, key: str) -> None:
    if html_file is None:
        folder = Path(tempfile.gettempdir())
        html_file = folder / f"bantin-preview-{re.sub(r'[^a-z0-9]+', '-', key)}.html"
        html_file.write_text(html, encoding="utf-8")
    url = html_file.resolve().as_uri()
    if not webbrowser.open(url):
        print(f"no browser to open here; the preview is {html_file.resolve()}", file=sys.stderr)
    else:
        print(f"opened {url}", file=sys.stderr)


def _when(moment: datetime, settings: Settings) -> str:
    return moment.astimezone(settings.site.zone).strftime("%Y-%m-%d %H:%M")


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin status`: active subscribers by frequency, deliveries by status, the last run of
    each job, pending and failed deliveries; suspended, unsubscribed and suppressed addresses
    listed apart (they are not counted as subscribers)."""
    entries = [e.subscriber for e in read_entries(settings.mail.subscribers_file)]
    invalid = sum(1 for s in entries if s is None)
    listed = [s for s in entries if s is not None]
    state = State(settings.state.url)
    try:
        leader = state.leader()
        counts = state.counts()
        runs = state.runs.all()
        problems = state.deliveries.problems()
        suspended = state.subscribers.addresses("suspended")
        unsubscribed = state.subscribers.addresses("unsubscribed")
        suppressed = state.suppressions.all()
        signups = state.signups.counts(clock.now(), settings.subscribe.confirm_hours)
    finally:
        state.close()
    inactive = (
        {e for e, _ in suspended} | {e for e, _ in unsubscribed} | {s.email for s in suppressed}
    )
    by_frequency = dict.fromkeys(FREQUENCIES, 0)
    for subscriber in listed:
        if subscriber.key not in inactive:
            by_frequency[subscriber.frequency] += 1
    total = sum(by_frequency.values())
    apart = len(listed) - total
    print(
        f"Subscribers: {total} active in {settings.mail.subscribers_file} "
        f"({', '.join(f'{k} {v}' for k, v in by_frequency.items())})"
        + (f", {apart} more listed but not mailed (below)" if apart else "")
        + (f", {invalid} invalid (see bantin check)" if invalid else "")
    )
    print(
        f"Sign-ups (form): {signups['confirmed']} confirmed, {signups['pending']} pending, "
        f"{signups['expired']} expired"
        + ("" if settings.subscribe.enabled else " (the form is off: subscribe.enabled)")
    )
    print(
        f"Deliveries: {counts['sent']} sent, {counts['pending']} pending, "
        f"{counts['failed']} failed, {counts['cancelled']} cancelled"
    )
    if leader is not None:
        age = (clock.now() - leader.heartbeat).total_seconds()
        print(
            f"Leader: {leader.host}, pid {leader.pid} (`{leader.command}`), since "
            f"{_when(leader.since, settings)}, last heartbeat {age:.0f} s ago"
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
    if suppressed:
        print("Suppressed: bounced or complained, not mailed (bantin resume EMAIL):")
        for s in suppressed:
            said = s.evidence.get("status") or ""
            diagnostic = s.evidence.get("diagnostic") or ""
            why = f"{said} {diagnostic}".strip()
            print(
                f"  {s.email:<32} {s.reason.replace('_', ' '):<12} since "
                f"{_when(s.since, settings)}" + (f"  {why[:100]}" if why else "")
            )
    return 0


def cmd_resume(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin resume`: lift EMAIL's suspension and suppression so the next run mails them;
    1 if it had neither."""
    state = State(settings.state.url)
    try:
        resumed = state.subscribers.resume(args.email)
        lifted = state.suppressions.lift(args.email)
        unsubscribed = dict(state.subscribers.addresses("unsubscribed")).get(args.email.lower())
    finally:
        state.close()
    if unsubscribed is not None:
        print(
            f"{args.email} unsubscribed on {_when(unsubscribed, settings)}; if they asked for "
            f"the digest again: bantin resubscribe {args.email}",
            file=sys.stderr,
        )
    if resumed or lifted:
        what = " and ".join(
            w for w, done in (("suspended", resumed), ("suppressed", lifted)) if done
        )
        print(f"{args.email} is no longer {what}; the next run mails them again")
        return 0
    print(f"{args.email} was neither suspended nor suppressed; nothing changed", file=sys.stderr)
    return 1


def _confirmed(question: str) -> bool:
    """Ask the operator on stderr; yes only for an answer that says so (EOF is no)."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes", "có", "co")


def cmd_resubscribe(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin resubscribe`: take back EMAIL's unsubscription, when they asked the office for the
    digest again; confirmed by the operator (``--yes`` or an answer) and logged. A complaint's
    suppression goes with it; a bounce's stays (``bantin resume``). 1 if EMAIL was not
    unsubscribed or the operator did not confirm."""
    email = args.email.strip()
    state = State(settings.state.url)
    try:
        unsubscribed = dict(state.subscribers.addresses("unsubscribed"))
        since = unsubscribed.get(email.lower())
        if since is None:
            print(f"{email} is not unsubscribed; nothing changed", file=sys.stderr)
            return 1
        question = (
            f"{email} unsubscribed on {_when(since, settings)}. Mail them again only if they "
            "asked you to. Resubscribe them?"
        )
        if not (args.yes or _confirmed(question)):
            print(f"{email} stays unsubscribed (not confirmed; --yes confirms)", file=sys.stderr)
            return 1
        state.subscribers.resubscribe(email)
        complaint = state.suppressions.lift(email, reason="complaint")
        still = [s for s in state.suppressions.all() if s.email == email.lower()]
    finally:
        state.close()
    log.info(
        "resubscribed %s by the operator (unsubscribed since %s%s)",
        email.lower(),
        _when(since, settings),
        "; their spam complaint lifted" if complaint else "",
    )
    print(
        f"{email} is subscribed again from the next article on "
        "(what appeared while they were away is not sent)"
    )
    if still:
        print(
            f"{email} is still suppressed ({still[0].reason.replace('_', ' ')}); "
            "bantin resume EMAIL lifts that once the address works",
            file=sys.stderr,
        )
    entries = read_entries(settings.mail.subscribers_file)
    if not any(e.subscriber and e.subscriber.key == email.lower() for e in entries):
        print(
            f"{email} is not in {settings.mail.subscribers_file}; add a [[subscriber]] block "
            "for it, or they get nothing",
            file=sys.stderr,
        )
    return 0


def cmd_bounce(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin bounce`: read one returned message on stdin and act on it (see mail.intake).

    For an MTA's pipe: 0 once the message is dealt with (acted on or not), 75 (EX_TEMPFAIL)
    when the state cannot be reached, so the MTA keeps the message and tries again.
    """
    data = sys.stdin.buffer.read(MAX_BOUNCE + 1)
    if len(data) > MAX_BOUNCE:
        print(
            f"bantin bounce: the message is over {MAX_BOUNCE // 2**20} MB; a bounce is never "
            "that large, so it is not read",
            file=sys.stderr,
        )
        return 0
    state = State(settings.state.url)
    try:
        intake = Intake(
            state, state.keys.secret_key(settings.server.secret_key), settings, clock.now
        )
        for handled in intake.take(data, "pipe"):
            print(f"bantin bounce: {handled.kind}: {handled.why}")
    finally:
        state.close()
    return 0


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    """Make the state database on purpose; never erases one that exists."""
    state = State(settings.state.url, create=args.force)
    try:
        revision = migrations.current_revision(state.db.engine)
        print(f"bantin init: state database {state.describe()} is ready (schema {revision})")
    finally:
        state.close()
    return 0
