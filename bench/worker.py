"""Subprocess entry points: each measurement that needs a fresh interpreter runs here.

``python -m bench.worker COMMAND ...`` prints one JSON object on its last stdout line. Running
each in its own process keeps one measurement's memory and caches out of the next, and lets
the parent read the child's peak RSS with ``os.wait4``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

_FRONT = re.compile(rb"\A---[ \t]*\n(.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.S | re.M)


def peak_rss_kib() -> int:
    """VmHWM of this process, in KiB (the high-water mark of its resident set)."""
    with open("/proc/self/status", encoding="ascii") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def scandir_stat(root: str) -> int:
    """The baseline walk: recursive os.scandir + stat of every file; returns the file count."""
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    entry.stat()
                    count += 1
    return count


def parse_front_matter(root: str) -> int:
    """The build baseline: read every file and parse its front matter with yaml.CSafeLoader."""
    count = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                with open(entry.path, "rb") as file:
                    raw = file.read()
                match = _FRONT.match(raw)
                if match:
                    yaml.load(match.group(1).decode("utf-8"), Loader=yaml.CSafeLoader)
                    count += 1
    return count


def cmd_parse_baseline(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    count = parse_front_matter(args.root)
    return {"seconds": time.perf_counter() - started, "files": count}


def cmd_rescan(args: argparse.Namespace) -> dict[str, Any]:
    """Rescan of an unchanged tree vs scandir+stat, then one-file-change rebuilds vs rescan."""
    from bench.data import touch_article
    from service.content.source import Source
    from service.publish.build import Builder
    from service.settings import load_settings

    settings = load_settings(Path(args.config))
    root = settings.source.dir
    source = Source(root, settings.site.zone)
    now = datetime.now(UTC)
    started = time.perf_counter()
    scan = source.scan()
    cold_scan = time.perf_counter() - started
    builder = Builder(settings, settings.site.templates_dir)
    started = time.perf_counter()
    builder.build(scan, now)
    cold_build = time.perf_counter() - started

    rescans: list[float] = []
    walks: list[float] = []
    for _ in range(args.reps):  # interleaved, so drift in the machine hits both alike
        started = time.perf_counter()
        scandir_stat(str(root))
        walks.append(time.perf_counter() - started)
        started = time.perf_counter()
        again = source.scan()
        rescans.append(time.perf_counter() - started)
        assert again is scan or again.articles == scan.articles, "unchanged tree changed"

    published = scan.published(now)
    victims = [Path(root, a.source) for a in published[len(published) // 2 :]][: args.reps]
    rebuilds: list[float] = []
    pages: list[float] = []
    written: list[list[str]] = []
    for generation, path in enumerate(victims, start=1):
        touch_article(path, generation)
        started = time.perf_counter()
        scan = source.scan()
        report = builder.build(scan, now)
        rebuilds.append(time.perf_counter() - started)
        written.append(list(report.written))
        article = next(a for a in scan.articles if a.source == str(path.relative_to(root)))
        started = time.perf_counter()
        builder.pages.article(article)
        pages.append(time.perf_counter() - started)
    return {
        "articles": len(scan.articles),
        "cold_scan_seconds": cold_scan,
        "cold_build_in_process_seconds": cold_build,
        "rescan_seconds": rescans,
        "scandir_seconds": walks,
        "rebuild_seconds": rebuilds,
        "page_seconds": pages,
        "rebuild_written": [len(w) for w in written],
        "rebuild_written_example": written[0] if written else [],
    }


def cmd_search_index(args: argparse.Namespace) -> dict[str, Any]:
    """Index the built site for search (Pagefind), as the daemon does after builds: the time,
    the index's size and the indexer's peak memory. The output directory must be built."""
    import resource

    from service.publish.search import index_site
    from service.settings import load_settings

    settings = load_settings(Path(args.config))
    report = index_site(settings.feeds.output_dir)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "pages": report.pages,
        "seconds": report.seconds,
        "bytes": report.bytes,
        "files": report.files,
        "indexer_peak_rss_kib": children.ru_maxrss,
    }


def _digest_inputs(config: Path, state_url: str | None = None) -> tuple[Any, list[Any]]:
    from service.content.source import Source
    from service.settings import load_settings

    settings = load_settings(config)
    if state_url:  # another ledger than the config's (PostgreSQL: bench/pg.py)
        settings = settings.model_copy(
            update={"state": settings.state.model_copy(update={"url": state_url})}
        )
    scan = Source(settings.source.dir, settings.site.zone).scan()
    return settings, scan.published(datetime.now(UTC))


def cmd_digest_setup(args: argparse.Namespace) -> dict[str, Any]:
    """A ledger where every subscriber has seen all but the newest ``--fresh`` articles.

    Also writes one composed digest to ``--sample`` for the raw-SMTP baseline.
    """
    from service.ledger import State
    from service.mail.compose import Composer
    from service.mail.mime import message_id
    from service.mail.subscribers import read_entries

    settings, published = _digest_inputs(Path(args.config), args.state_url)
    now = datetime.now(UTC)
    state = State(settings.state.url)
    try:
        old = published[args.fresh :]
        state.articles.record([(a.id, a.fingerprint, a.source) for a in old], now)
        chunk = []
        count = 0
        for entry in read_entries(settings.mail.subscribers_file):
            if entry.subscriber is not None:
                chunk.append(entry.subscriber)
            if len(chunk) >= 1000:
                state.subscribers.sync(chunk, now)
                count += len(chunk)
                chunk = []
        if chunk:
            state.subscribers.sync(chunk, now)
            count += len(chunk)
        size = 0
        if args.sample:
            composer = Composer(settings, settings.server.secret_key.get_secret_value().encode())
            entry = next(iter(read_entries(settings.mail.subscribers_file)))
            assert entry.subscriber is not None
            fresh = published[: args.fresh]
            mid = message_id(entry.subscriber.key, [a.id for a in fresh], composer.domain)
            data = composer.compose(entry.subscriber, fresh, "daily", mid, now)
            Path(args.sample).write_bytes(data)
            size = len(data)
    finally:
        state.close()
    return {"subscribers": count, "published": len(published), "sample_bytes": size}


def cmd_digest(args: argparse.Namespace) -> dict[str, Any]:
    """One digest run end to end: subscribers file, select, render, MIME, ledger, SMTP."""
    from service.ledger import State
    from service.mail.compose import Composer
    from service.mail.compose_workers import default_processes
    from service.mail.run import DigestRun
    from service.mail.subscribers import read_entries
    from service.mail.transport import SmtpTransport

    settings, published = _digest_inputs(Path(args.config), args.state_url)
    known = {a.category.slug: a.category.name for a in published}
    rss_before = peak_rss_kib()
    profiler = None
    if args.profile:
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="enabled")
    state = State(settings.state.url)
    try:
        composer = Composer(settings, settings.server.secret_key.get_secret_value().encode())
        run = DigestRun(
            state,
            composer,
            SmtpTransport(settings.smtp),
            "daily",
            published,
            read_entries(settings.mail.subscribers_file, known),
            retry_delays=(),
            processes=default_processes(),
            host=args.host,
        )

        async def go() -> Any:
            try:
                return await run.run()
            finally:
                await run.transport.close()

        if profiler:
            profiler.start()
        started = time.perf_counter()
        report = asyncio.run(go())
        seconds = time.perf_counter() - started
        if profiler:
            profiler.stop()
            Path(args.profile).write_text(profiler.output_text(unicode=True, show_all=False))
    finally:
        state.close()
    return {
        "seconds": seconds,
        "sent": report.sent,
        "deferred": report.deferred,
        "failed": report.failed,
        "subscribers": report.subscribers,
        "messages_per_second": report.sent / seconds if seconds else 0.0,
        "rss_before_run_kib": rss_before,
        "peak_rss_kib": peak_rss_kib(),
    }


def cmd_digest_help(args: argparse.Namespace) -> dict[str, Any]:
    """A second host: waits for the run another process plans, and helps send it (the
    standby's senders, runtime/helping.py) until nothing is left."""
    from service import clock
    from service.ledger import State
    from service.mail.compose import Composer
    from service.mail.compose_workers import ComposeWorkers, default_processes
    from service.mail.outcomes import Outcomes, RunReport
    from service.mail.senders import Senders
    from service.mail.transport import SmtpTransport

    settings, published = _digest_inputs(Path(args.config), args.state_url)
    state = State(settings.state.url)
    deadline = time.monotonic() + args.wait
    try:
        composer = Composer(settings, settings.server.secret_key.get_secret_value().encode())
        articles = {a.id: a for a in published}
        composers = ComposeWorkers(composer, articles.values(), default_processes())
        while not (runs := state.claims.active()):
            if time.monotonic() > deadline:
                raise SystemExit(f"no run started within {args.wait} s")
            time.sleep(0.05)
        run = runs[0]
        report = RunReport(run.frequency)  # type: ignore[arg-type]
        transport = SmtpTransport(settings.smtp)
        outcomes = Outcomes(state, report, where=transport.name, clock=clock.now)
        senders = Senders(
            state,
            composer,
            transport,
            run.run,
            args.host,
            articles,
            outcomes,
            composers,
            clock=clock.now,
            planner=False,
            halted=lambda: report.stopped is not None,
        )

        def planning() -> bool:
            return any(r.run == run.run for r in state.claims.active())

        async def go() -> None:
            try:
                await senders.drain(planning)
            finally:
                await transport.close()

        started = time.perf_counter()
        asyncio.run(go())
        seconds = time.perf_counter() - started
        composers.close()
    finally:
        state.close()
    return {"seconds": seconds, "sent": report.sent, "stopped": report.stopped}


def cmd_raw_smtp(args: argparse.Namespace) -> dict[str, Any]:
    """The delivery baseline: identical pre-built messages over ``--connections`` connections."""
    import aiosmtplib

    data = Path(args.message).read_bytes()
    sender = "bantin@laichau.example.gov.vn"

    async def sender_task(numbers: range) -> int:
        client = aiosmtplib.SMTP(hostname=args.host, port=args.port, start_tls=False, timeout=30)
        await client.connect()
        sent = 0
        for number in numbers:
            errors, _ = await client.sendmail(sender, [f"nguoi.dung.{number}@example.org"], data)
            sent += not errors
        await client.quit()
        return sent

    async def go() -> int:
        n, c = args.count, args.connections
        shares = [range(i, n, c) for i in range(c)]
        return sum(await asyncio.gather(*(sender_task(share) for share in shares)))

    started = time.perf_counter()
    sent = asyncio.run(go())
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "sent": sent,
        "messages_per_second": sent / seconds if seconds else 0.0,
        "message_bytes": len(data),
        "peak_rss_kib": peak_rss_kib(),
    }


def cmd_aiosmtpd_sink(args: argparse.Namespace) -> dict[str, Any]:
    """An SMTP sink that accepts and discards everything, for machines without smtp-sink."""
    import signal
    import threading

    from aiosmtpd.controller import Controller

    class Discard:
        count = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            Discard.count += 1
            print(f"mesg={Discard.count}", end="\r", flush=True)  # as smtp-sink -c does
            return "250 OK"

    controller = Controller(Discard(), hostname="127.0.0.1", port=args.port)
    controller.start()
    print(json.dumps({"listening": args.port}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return {"received": Discard.count}


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="python -m bench.worker")
    commands = top.add_subparsers(dest="command", required=True)
    p = commands.add_parser("parse-baseline")
    p.add_argument("root")
    p.set_defaults(func=cmd_parse_baseline)
    p = commands.add_parser("rescan")
    p.add_argument("config")
    p.add_argument("--reps", type=int, default=5)
    p.set_defaults(func=cmd_rescan)
    p = commands.add_parser("search-index")
    p.add_argument("config")
    p.set_defaults(func=cmd_search_index)
    p = commands.add_parser("digest-setup")
    p.add_argument("config")
    p.add_argument("--fresh", type=int, default=10)
    p.add_argument("--state-url")
    p.add_argument("--sample")
    p.set_defaults(func=cmd_digest_setup)
    p = commands.add_parser("digest")
    p.add_argument("config")
    p.add_argument("--profile", help="write a pyinstrument profile of the run here")
    p.add_argument("--state-url")
    p.add_argument("--host", default="bench-a")
    p.set_defaults(func=cmd_digest)
    p = commands.add_parser("digest-help")
    p.add_argument("config")
    p.add_argument("--state-url")
    p.add_argument("--host", default="bench-b")
    p.add_argument("--wait", type=float, default=300)
    p.set_defaults(func=cmd_digest_help)
    p = commands.add_parser("raw-smtp")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--message", required=True)
    p.set_defaults(func=cmd_raw_smtp)
    p = commands.add_parser("aiosmtpd-sink")
    p.add_argument("--port", type=int, required=True)
    p.set_defaults(func=cmd_aiosmtpd_sink)
    args = top.parse_args(argv)
    result = args.func(args)
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
