"""`python -m bench [--quick]`: run every benchmark, print the table, write bench/results.json.

--quick measures 10,000 articles and 10,000 subscribers (a few minutes); the full run adds
100,000 of each. --only picks benchmarks: scan, delivery, memory, serving, cluster, peers."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import data, peers, pg, procs, serve

HERE = Path(__file__).resolve().parent
BANTIN = procs.BANTIN

QUICK = {
    "articles": [10_000],  # the first size is also the peers' (issue 15: at 10,000)
    "subscribers": [10_000],
    "memory": (1_000, 10_000),
    "reps": {"rescan": 5, "build": 3, "delivery": 3, "cluster": 3, "peers": 3},
    "serve_seconds": 2,
    "send_during": 2000,
    "cluster_subscribers": 5000,
}
FULL = {
    "articles": [10_000, 100_000],
    "subscribers": [10_000, 100_000],
    "memory": (10_000, 100_000),
    "reps": {"rescan": 5, "build": 3, "delivery": 3, "cluster": 3, "peers": 3},
    "serve_seconds": 10,
    "send_during": 10_000,
    "cluster_subscribers": 20_000,  # issue 10's figure
}
BENCHMARKS = ["scan", "delivery", "memory", "serving", "cluster", "peers"]
NGINX_ROUNDS = 5  # alternated rounds of nginx in front of bantin against nginx alone
DIGEST_ARTICLES = 60  # published articles at digest time; each subscriber gets the newest 10


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine(sink: str, http_baseline: str) -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo", encoding="utf-8") as file:
        for line in file:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as file:
        memory_kib = int(file.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "smtp_sink": sink,
        "http_baseline": http_baseline,
        "load_generator": serve.load_generator(),
    }


# -- 1 and 2: scan and build -------------------------------------------------------------------


def bench_articles(work: Path, count: int, reps: dict[str, int]) -> dict[str, Any]:
    base = work / f"articles-{count}"
    content = base / "content"
    log(f"generating {count} articles")
    started = time.perf_counter()
    data.write_articles(content, count)
    generated = time.perf_counter() - started
    config = data.make_project(base / "project", content)
    build_reps = reps["build"] if count <= 10_000 else 1

    builds: list[float] = []
    parses: list[float] = []
    parses_in_process: list[float] = []
    for rep in range(build_reps):
        log(f"{count} articles: cold bantin build {rep + 1}/{build_reps}")
        shutil.rmtree(base / "project" / "public", ignore_errors=True)
        shutil.rmtree(base / "project" / "var" / "cache", ignore_errors=True)  # the indexes
        built = procs.run_worker(BANTIN, "--config", str(config), "build", cwd=base / "project")
        builds.append(built.seconds)
        parsed = procs.run_worker("parse-baseline", str(content))
        parses.append(parsed.seconds)
        parses_in_process.append(parsed.result["seconds"])

    # a restart: the same command again over the output and indexes the last build left
    warm: list[float] = []
    for rep in range(build_reps):
        log(f"{count} articles: warm bantin build {rep + 1}/{build_reps}")
        built = procs.run_worker(BANTIN, "--config", str(config), "build", cwd=base / "project")
        warm.append(built.seconds)

    log(f"{count} articles: rescans and one-file rebuilds (in one process)")
    shutil.rmtree(base / "project" / "public", ignore_errors=True)
    scan = procs.run_worker("rescan", str(config), "--reps", str(reps["rescan"])).result
    log(f"{count} articles: search index (Pagefind) of the built site")
    search = procs.run_worker("search-index", str(config)).result
    result = {
        "search_index": search,
        "articles": count,
        "generate_seconds": generated,
        "bantin_build_seconds": builds,
        "bantin_warm_build_seconds": warm,
        "parse_baseline_seconds": parses,
        "parse_baseline_in_process_seconds": parses_in_process,
        **scan,
    }
    shutil.rmtree(base, ignore_errors=True)
    return result


# -- 3 and 4: delivery and memory --------------------------------------------------------------


def digest_project(
    work: Path, sink: procs.Sink, subscribers: int, frequency: str, **options: Any
) -> Path:
    content = work / "digest-content"
    if not content.exists():
        data.write_articles(content, DIGEST_ARTICLES, seed=3)
    base = work / f"digest-{frequency}-{subscribers}"
    base.mkdir(parents=True, exist_ok=True)
    file = base / "subscribers.toml"
    data.write_subscribers(file, subscribers, frequency)
    return data.make_project(base, content, smtp_port=sink.port, subscribers=file, **options)


def bench_delivery(
    work: Path, sink: procs.Sink, subscribers: int, reps: int, profile: Path | None
) -> dict[str, Any]:
    config = digest_project(work, sink, subscribers, "daily")
    base = config.parent
    db = base / "var" / "bantin.db"
    template = base / "template.db"
    sample = base / "sample.eml"
    log(f"{subscribers} subscribers: preparing the ledger")
    setup = procs.run_worker("digest-setup", str(config), "--sample", str(sample)).result
    db.replace(template)
    runs: list[dict[str, Any]] = []
    raws: list[dict[str, Any]] = []
    for rep in range(reps):
        log(f"{subscribers} subscribers: digest run {rep + 1}/{reps}")
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, db)
        args = ["digest", str(config)]
        if profile is not None and rep == 0:
            args += ["--profile", str(profile)]
        finished = procs.run_worker(*args)
        runs.append({**finished.result, "wait4_max_rss_kib": finished.max_rss_kib})
        log(f"{subscribers} subscribers: raw aiosmtplib baseline {rep + 1}/{reps}")
        raw = procs.run_worker(
            "raw-smtp",
            "--port",
            str(sink.port),
            "--count",
            str(subscribers),
            "--connections",
            "4",
            "--message",
            str(sample),
        )
        raws.append(raw.result)
    shutil.rmtree(base, ignore_errors=True)
    return {"subscribers": subscribers, "setup": setup, "runs": runs, "raw_smtp": raws}


def _sent_in(run: procs.Finished, helper: procs.Finished | None = None) -> dict[str, Any]:
    sent = run.result["sent"]  # the planner reports the whole run's, every host's included
    seconds = run.result["seconds"]
    return {
        "seconds": seconds,
        "sent": sent,
        "messages_per_second": sent / seconds if seconds else 0.0,
        "helper_sent": helper.result["sent"] if helper else 0,
    }


def _host(core: int, *args: str) -> procs.Finished:
    """A bench worker as one host: pinned to its own core where taskset can pin it, so that
    two hosts on this machine are two one-core machines, not two processes sharing every core
    (bantin composes on every core it has, so unpinned one host already takes them all)."""
    taskset = shutil.which("taskset")
    if taskset is None or (os.cpu_count() or 1) < 2:
        return procs.run_worker(*args)
    return procs.run_worker(taskset, "-c", str(core), procs.PYTHON, "-m", "bench.worker", *args)


def bench_cluster(work: Path, sink: procs.Sink, subscribers: int, reps: int) -> dict[str, Any]:
    """Issue 10: one digest run on SQLite, on PostgreSQL, and on PostgreSQL with two hosts
    (a second process helps send, as a standby host does), all to the same sink; each host on
    a core of its own (``_host``)."""
    config = digest_project(work, sink, subscribers, "daily")
    base = config.parent
    db = base / "var" / "bantin.db"
    template = base / "template.db"
    result: dict[str, Any] = {"subscribers": subscribers, "sqlite": [], "postgres": []}
    result["postgres_two_hosts"] = []
    pinned = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    result["hosts"] = "one core each (taskset)" if pinned else "unpinned (no taskset or one core)"
    log(f"cluster, {subscribers} subscribers: SQLite ledger")
    procs.run_worker("digest-setup", str(config))
    db.replace(template)

    def on_sqlite(rep: int) -> None:
        log(f"cluster, {subscribers} subscribers: SQLite run {rep + 1}/{reps}")
        for suffix in ("-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(template, db)
        result["sqlite"].append(_sent_in(_host(0, "digest", str(config))))

    server, described = pg.start()
    result["postgres_server"] = described
    if server is None:
        log(described)
        for rep in range(reps):
            on_sqlite(rep)
        shutil.rmtree(base, ignore_errors=True)
        return result
    try:
        log(f"cluster, {subscribers} subscribers: PostgreSQL ledger")
        url = server.create("bench_template")
        procs.run_worker("digest-setup", str(config), "--state-url", url)
        # the backends alternate, so that drift in the machine hits each alike (single runs
        # here varied by 2x from one minute to the next)
        for rep in range(reps):
            on_sqlite(rep)
            for hosts in (1, 2):
                log(f"cluster, {subscribers} subscribers: PostgreSQL, {hosts} host(s), {rep + 1}")
                name = f"bench_{rep}_{hosts}"
                copy = server.create(name, template="bench_template")
                helper = None
                with ThreadPoolExecutor(1) as pool:
                    if hosts == 2:
                        helper = pool.submit(
                            _host, 1, "digest-help", str(config), "--state-url", copy
                        )
                    run = _host(0, "digest", str(config), "--state-url", copy)
                    helped = helper.result() if helper else None
                key = "postgres" if hosts == 1 else "postgres_two_hosts"
                result[key].append(_sent_in(run, helped))
                server.drop(name)
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    return result


# -- 5: serving ----------------------------------------------------------------------------------


def _sent(db: Path) -> int:
    """Deliveries the service has marked sent, read beside it (WAL lets readers in)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("select count(*) from deliveries where status = 'sent'")
            return int(row.fetchone()[0])
    except sqlite3.Error:
        return 0


def bench_serving(work: Path, sink: procs.Sink, seconds: float, send_count: int) -> dict[str, Any]:
    port = procs.free_port()
    config = digest_project(work, sink, send_count, "immediate", http_port=port, scan_interval=1)
    base = config.parent
    # every subscriber has seen every article: the one added later is the only news
    procs.run_worker("digest-setup", str(config), "--fresh", "0")
    log("starting bantin run")
    bantin = procs.start(
        [BANTIN, "--config", str(config), "run"], cwd=base, log=base / "bantin-run.log"
    )
    result: dict[str, Any] = {}
    static = None
    try:
        procs.wait_port(port, 180, bantin)
        url = f"http://127.0.0.1:{port}/rss.xml"
        serve.wait_ok(url, 180)
        result["bantin_etag"] = serve.bantin_serves_etag(url)
        kind, static, static_port = serve.start_static_server(base / "public", work)
        result["static_server"] = kind
        static_url = f"http://127.0.0.1:{static_port}/rss.xml"
        log("serving: bantin run vs " + kind)
        for name, target in (("bantin", url), ("baseline", static_url)):
            result[name] = serve.serve_pair(target, seconds, connections=32)
        procs.stop(static)
        static = None
        result["nginx_front"] = bench_nginx_front(base / "public", work, port, seconds)

        log(f"serving during a {send_count}-message send")
        result["idle_probe"] = serve.probe(url, 3)
        db = base / "var" / "bantin.db"
        data.write_articles(Path(data_dir(config)), 1, seed=99, start_number=900_000)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _sent(db) == 0:
            time.sleep(0.2)
        if _sent(db) == 0:
            result["during_send"] = {
                "skipped": "bantin run sent nothing within 15 s of a new article "
                "(no scheduler/immediate digests in `bantin run` yet)"
            }
        else:
            started = time.monotonic()
            probes: dict[str, Any] = {"requests": 0}
            while _sent(db) < send_count and time.monotonic() - started < 300:
                probes = _merge(probes, serve.probe(url, 2))
            result["during_send"] = {
                **probes,
                "sent": _sent(db),
                "seconds": time.monotonic() - started,
            }
    finally:
        if static is not None:
            procs.stop(static)
        procs.stop(bantin)
    shutil.rmtree(base, ignore_errors=True)
    return result


def bench_nginx_front(public: Path, work: Path, bantin_port: int, seconds: float) -> dict[str, Any]:
    """GET /rss.xml, gzip'd, through deploy/nginx.conf in front of bantin against nginx alone
    serving the same public/ with gzip_static: what the shipped site costs over bare nginx."""
    if serve.nginx_binary() is None:
        return {"skipped": "nginx is not installed (apt-get install nginx)"}
    ports, started = serve.start_nginx_pair(public, work, bantin_port)
    result: dict[str, Any] = {}
    try:
        headers = {"Accept-Encoding": "gzip"}
        for name in ("front", "alone"):
            url = f"http://127.0.0.1:{ports[name]}/rss.xml"
            result[f"{name}_answer"] = serve.gzip_served(url)
        # two configurations of one nginx serving one file differ by little: rounds alternated
        # (and their order swapped), the median round of each, so drift in the machine's load
        # hits both alike
        rounds: dict[str, list[dict[str, Any]]] = {"front": [], "alone": []}
        for i in range(NGINX_ROUNDS):
            log(f"serving: deploy/nginx.conf in front of bantin vs nginx alone, round {i + 1}")
            for name in ("front", "alone") if i % 2 == 0 else ("alone", "front"):
                url = f"http://127.0.0.1:{ports[name]}/rss.xml"
                rounds[name].append(serve.load(url, headers, seconds, connections=32))
        for name, runs in rounds.items():
            runs.sort(key=lambda run: float(run["requests_per_second"]))
            result[name] = runs[len(runs) // 2]
            result[f"{name}_rounds_per_second"] = [run["requests_per_second"] for run in runs]
    finally:
        for proc in started:
            procs.stop(proc)
    return result


def data_dir(config: Path) -> str:
    for line in config.read_text(encoding="utf-8").splitlines():
        if line.startswith("dir = "):
            return line.split("=", 1)[1].strip().strip('"')
    raise ValueError(f"{config}: no [source] dir")


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if not a.get("requests"):
        return b
    return {
        "requests": a["requests"] + b["requests"],
        "p50_ms": max(a["p50_ms"], b["p50_ms"]),
        "p99_ms": max(a["p99_ms"], b["p99_ms"]),  # worst window: conservative
        "max_ms": max(a["max_ms"], b["max_ms"]),
    }


# -- the table -------------------------------------------------------------------------------


def _s(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def rows_and_ratios(figures: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    ratios: dict[str, Any] = {}  # a ratio, or None with the reason beside it

    def row(
        name: str, fig: str, base: str, ratio: float | None, target: str, ok: bool | None
    ) -> None:
        rows.append(
            {
                "figure": name,
                "value": fig,
                "baseline": base,
                "ratio": None if ratio is None else round(ratio, 3),
                "target": target,
                "result": "—" if ok is None else ("pass" if ok else "MISS"),
            }
        )

    sizes = figures.get("articles", [])
    for i, size in enumerate(sizes):
        n = size["articles"]
        rescan, walk = median(size["rescan_seconds"]), median(size["scandir_seconds"])
        ratio = rescan / walk
        ratios[f"rescan_vs_scandir@{n}"] = ratio
        row(
            f"rescan, {n} unchanged",
            _s(rescan),
            f"scandir+stat {_s(walk)}",
            ratio,
            "≤ 1.5",
            ratio <= 1.5,
        )
        build, parse = median(size["bantin_build_seconds"]), median(size["parse_baseline_seconds"])
        ratio = build / parse
        ratios[f"build_vs_parse@{n}"] = ratio
        limited = n <= 10_000
        row(
            f"cold bantin build, {n}",
            _s(build),
            f"read+CSafeLoader {_s(parse)}",
            ratio,
            "≤ 3" if limited else "report",
            ratio <= 3 if limited else None,
        )
        rebuild, page = median(size["rebuild_seconds"]), median(size["page_seconds"])
        ratio = rebuild / rescan
        ratios[f"rebuild_vs_rescan@{n}"] = ratio
        row(
            f"one-file rebuild, {n}",
            _s(rebuild),
            f"rescan {_s(rescan)} + page {page * 1000:.1f} ms",
            ratio,
            f"≤ 1.5×rescan+page = {_s(1.5 * rescan + page)}",
            rebuild <= 1.5 * rescan + page,
        )
        if size.get("bantin_warm_build_seconds"):
            warm = median(size["bantin_warm_build_seconds"])
            ratio = warm / rescan
            ratios[f"warm_start_vs_rescan@{n}"] = ratio
            row(
                f"warm bantin build (a restart), {n}",
                _s(warm),
                f"unchanged rescan {_s(rescan)}",
                ratio,
                "≤ 2",
                ratio <= 2,
            )
            if i == len(sizes) - 1:
                ratios["warm_start_vs_rescan"] = ratio
        search = size.get("search_index")
        if search:
            per_page = search["seconds"] / max(search["pages"], 1)
            ratios[f"search_index_seconds@{n}"] = search["seconds"]
            row(
                f"search index (Pagefind), {search['pages']} pages",
                f"{_s(search['seconds'])} ({per_page * 1000:.2f} ms/page), "
                f"{search['bytes'] / 1e6:.0f} MB in {search['files']} files, "
                f"peak {search['indexer_peak_rss_kib'] / 1024:.0f} MiB",
                f"cold build {_s(build)}",
                search["seconds"] / build,
                "report (off the build path)",
                None,
            )
        if i == len(sizes) - 1:
            ratios["rescan_vs_scandir"] = ratios[f"rescan_vs_scandir@{n}"]
            ratios["rebuild_vs_rescan"] = ratios[f"rebuild_vs_rescan@{n}"]
        if i == 0:
            ratios["build_vs_parse"] = ratios[f"build_vs_parse@{n}"]

    deliveries = figures.get("delivery", [])
    for i, size in enumerate(deliveries):
        n = size["subscribers"]
        ours = median([r["messages_per_second"] for r in size["runs"]])
        raw = median([r["messages_per_second"] for r in size["raw_smtp"]])
        ratio = ours / raw
        ratios[f"delivery_vs_raw_smtp@{n}"] = ratio
        sent = min(r["sent"] for r in size["runs"])
        row(
            f"digest delivery, {n} subscribers ({sent} sent)",
            f"{ours:.0f} msg/s",
            f"aiosmtplib raw {raw:.0f} msg/s",
            ratio,
            "≥ 0.6",
            ratio >= 0.6,
        )
        if i == 0:
            ratios["delivery_vs_raw_smtp"] = ratio

    cluster = figures.get("cluster")
    if cluster:
        n = cluster["subscribers"]
        sqlite = median([r["messages_per_second"] for r in cluster["sqlite"]])
        if not cluster["postgres"]:
            for key in ("postgres_vs_sqlite", "two_hosts_vs_one"):
                ratios[key] = None
                ratios[f"{key}_reason"] = cluster["postgres_server"]
            row(f"PostgreSQL delivery, {n}", "—", cluster["postgres_server"], 0.0, "≥ 0.8", None)
        else:
            one = median([r["messages_per_second"] for r in cluster["postgres"]])
            two = median([r["messages_per_second"] for r in cluster["postgres_two_hosts"]])
            ratios["postgres_vs_sqlite"] = one / sqlite
            ratios["two_hosts_vs_one"] = two / one
            row(
                f"digest delivery on PostgreSQL, {n} subscribers",
                f"{one:.0f} msg/s",
                f"SQLite {sqlite:.0f} msg/s",
                one / sqlite,
                "≥ 0.8",
                one / sqlite >= 0.8,
            )
            helped = min(r["helper_sent"] for r in cluster["postgres_two_hosts"])
            row(
                f"two hosts on one PostgreSQL, {n} subscribers (the second sent ≥ {helped})",
                f"{two:.0f} msg/s",
                f"one host {one:.0f} msg/s",
                two / one,
                "≥ 1.6",
                two / one >= 1.6,
            )

    memory = figures.get("memory")
    if memory:
        small, large = memory["small"], memory["large"]
        rss_small, rss_large = median(memory["small_rss_kib"]), median(memory["large_rss_kib"])
        ratio = rss_large / rss_small
        ratios["memory_large_vs_small"] = ratio
        row(
            f"peak RSS of digest run, {large} subscribers",
            f"{rss_large / 1024:.0f} MiB",
            f"{small} subscribers {rss_small / 1024:.0f} MiB",
            ratio,
            "≤ 1.3",
            ratio <= 1.3,
        )

    serving = figures.get("serving")
    if serving and "bantin" in serving:
        for kind in ("unconditional", "conditional"):
            ours, base = serving["bantin"][kind], serving["baseline"][kind]
            if not ours or not base:
                continue
            note = "" if kind == "unconditional" else f" [{serving['bantin']['validator']}]"
            ratio = ours["requests_per_second"] / base["requests_per_second"]
            ratios[f"serving_{kind}_vs_static"] = ratio
            row(
                f"GET /rss.xml {kind}{note}",
                f"{ours['requests_per_second']:.0f} req/s, p99 {ours['p99_ms']:.1f} ms",
                f"{serving['static_server']} {base['requests_per_second']:.0f} req/s, "
                f"p99 {base['p99_ms']:.1f} ms",
                ratio,
                "report",
                None,
            )
        front = serving.get("nginx_front", {})
        if front.get("front") and front.get("alone"):
            ours, base = front["front"], front["alone"]
            ratio = ours["requests_per_second"] / base["requests_per_second"]
            ratios["nginx_front_vs_nginx"] = ratio
            sent = front["front_answer"]
            row(
                f"GET /rss.xml gzip via deploy/nginx.conf [{sent['content_encoding']}, "
                f"{sent['bytes']} B]",
                f"{ours['requests_per_second']:.0f} req/s, p99 {ours['p99_ms']:.1f} ms",
                f"nginx alone, gzip_static {base['requests_per_second']:.0f} req/s, "
                f"p99 {base['p99_ms']:.1f} ms",
                ratio,
                "≥ 0.8",
                ratio >= 0.8,
            )
        elif front.get("skipped"):
            ratios["nginx_front_vs_nginx"] = None
            ratios["nginx_front_vs_nginx_reason"] = front["skipped"]
            row("GET /rss.xml via deploy/nginx.conf", "—", front["skipped"], 0.0, "≥ 0.8", None)
        during = serving.get("during_send", {})
        idle = serving.get("idle_probe", {})
        if during.get("requests") and idle.get("requests"):
            ratio = during["p99_ms"] / idle["p99_ms"]
            ratios["get_p99_during_send_vs_idle"] = ratio
            row(
                f"GET p99 during {during['sent']}-message send",
                f"{during['p99_ms']:.1f} ms (max {during['max_ms']:.0f})",
                f"idle {idle['p99_ms']:.1f} ms",
                ratio,
                "report",
                None,
            )
        elif during.get("skipped"):
            row("GET during send", "not run", during["skipped"], float("nan"), "report", None)
    peer_rows(figures, row, ratios)
    return rows, ratios


def peer_rows(figures: dict[str, Any], row: Any, ratios: dict[str, Any]) -> None:
    """Issue 15's peers: a ratio each, or None and the reason beside it (``<key>_reason``)."""
    builds = figures.get("peers", {}).get("builds")
    if builds:
        n = builds["articles"]
        where = "tmpfs" if builds["tmpfs"] else "disk"
        ours = builds["bantin"]
        build = median(ours["seconds"])
        for peer, key, target, limit in (
            ("hugo", "build_vs_hugo", "≤ 1", 1.0),
            ("pelican", "pelican_vs_build", "≥ 5", 5.0),
        ):
            theirs = builds[peer]
            name = f"cold build, {n} articles ({where}), vs {peer.capitalize()}"
            reason = theirs.get("skipped") or ours.get("skipped")
            if reason:
                ratios[f"{key}@{n}"] = ratios[key] = None
                ratios[f"{key}_reason"] = reason
                row(name, "—", reason, None, target, None)
                continue
            other = median(theirs["seconds"])
            ratio = build / other if peer == "hugo" else other / build
            ratios[f"{key}@{n}"] = ratios[key] = ratio
            ok = ratio <= limit if peer == "hugo" else ratio >= limit
            row(name, f"bantin {_s(build)}", f"{theirs['tool']} {_s(other)}", ratio, target, ok)

    mailer = figures.get("peers", {}).get("rss2email")
    if mailer is not None:
        deliveries = figures.get("delivery") or [{}]
        runs = deliveries[0].get("runs")
        name = f"digest delivery vs rss2email ({peers.FEED_ENTRIES} entries, one recipient)"
        reason = mailer.get("skipped") or ("" if runs else "no digest delivery in this run")
        if reason or not mailer["runs"]:
            reason = reason or "rss2email did not run"
            ratios["delivery_vs_rss2email"] = None
            ratios["delivery_vs_rss2email_reason"] = reason
            row(name, "—", reason, None, "≥ 10", None)
            return
        ours = median([r["messages_per_second"] for r in runs])
        theirs = median([r["messages_per_second"] for r in mailer["runs"]])
        wall = median([r["wall_messages_per_second"] for r in mailer["runs"]])
        received = [r["received"] for r in mailer["runs"]]
        ratio = ours / theirs
        ratios["delivery_vs_rss2email"] = ratio
        row(
            name,
            f"bantin {ours:.0f} msg/s ({deliveries[0]['subscribers']} subscribers)",
            f"{mailer['tool']} {theirs:.0f} msg/s ({wall:.0f} with start-up; sink got {received})",
            ratio,
            "≥ 10",
            ratio >= 10,
        )


def print_table(rows: list[dict[str, Any]]) -> None:
    heads = ["figure", "value", "baseline", "ratio", "target", "result"]
    cells = [["—" if r[h] is None else str(r[h]) for h in heads] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    top.add_argument("--quick", action="store_true", help="10,000 only, a few minutes")
    top.add_argument("--only", nargs="*", choices=BENCHMARKS)
    top.add_argument("--output", default=str(HERE / "results.json"))
    top.add_argument("--profile", help="write a pyinstrument profile of one digest run here")
    top.add_argument("--keep", action="store_true", help="keep the temporary folder")
    top.add_argument(
        "--subscribers", type=int, nargs="*", help="delivery sizes instead of the plan's"
    )
    top.add_argument("--articles", type=int, nargs="*", help="article counts instead of the plan's")
    top.add_argument("--cluster-subscribers", type=int, help="the cluster run's size")
    args = top.parse_args(argv)

    def interrupted(signum: int, _frame: object) -> None:
        # SIGTERM (and SIGINT, which a background job may have ignored) must still run the
        # finally below: sinks and servers stopped, the temporary folder removed
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    plan: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.subscribers:
        plan["subscribers"] = args.subscribers
    if args.articles:
        plan["articles"] = args.articles
    if args.cluster_subscribers:
        plan["cluster_subscribers"] = args.cluster_subscribers
    only = set(args.only or BENCHMARKS)
    work = Path(tempfile.mkdtemp(prefix="bantin-bench-"))
    started = time.monotonic()
    figures: dict[str, Any] = {"mode": "quick" if args.quick else "full"}
    sink = procs.start_sink(work)
    log(f"work in {work}; SMTP sink: {sink.kind} on port {sink.port}")
    http_baseline = "nginx (1 worker)" if shutil.which("nginx") else "python -m http.server"
    try:
        if "scan" in only:
            figures["articles"] = [bench_articles(work, n, plan["reps"]) for n in plan["articles"]]
        if "delivery" in only or "memory" in only:
            profile = Path(args.profile) if args.profile else None
            figures["delivery"] = []
            for n in plan["subscribers"]:
                reps = plan["reps"]["delivery"] if n <= 10_000 else 1
                figures["delivery"].append(bench_delivery(work, sink, n, reps, profile))
                profile = None
        if "memory" in only:
            small, large = plan["memory"]
            by_size = {d["subscribers"]: d for d in figures["delivery"]}
            for n in (small, large):
                if n not in by_size:
                    by_size[n] = bench_delivery(work, sink, n, 1, None)
                    figures.setdefault("memory_runs", []).append(by_size[n])
            figures["memory"] = {
                "small": small,
                "large": large,
                "small_rss_kib": [r["peak_rss_kib"] for r in by_size[small]["runs"]],
                "large_rss_kib": [r["peak_rss_kib"] for r in by_size[large]["runs"]],
            }
        if "cluster" in only:
            figures["cluster"] = bench_cluster(
                work, sink, plan["cluster_subscribers"], plan["reps"]["cluster"]
            )
        if "peers" in only:
            if not figures.get("delivery"):  # bantin's side of delivery_vs_rss2email
                n = plan["subscribers"][0]
                figures["delivery"] = [
                    bench_delivery(work, sink, n, plan["reps"]["delivery"], None)
                ]
            figures["peers"] = {
                "builds": peers.bench_builds(work, plan["articles"][0], plan["reps"]["peers"]),
                "rss2email": peers.bench_rss2email(work, sink, plan["reps"]["peers"]),
            }
        if "serving" in only:
            figures["serving"] = bench_serving(
                work, sink, plan["serve_seconds"], plan["send_during"]
            )
    finally:
        procs.stop(sink.proc)
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows, ratios = rows_and_ratios(figures)
    results = {
        "ratios": ratios,
        "rows": rows,
        "machine": machine(sink.kind, http_baseline),
        "seconds": time.monotonic() - started,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "figures": figures,
    }
    Path(args.output).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(
        f"\nbantin benchmarks ({figures['mode']}), {results['machine']['cpu_model']}, "
        f"{results['machine']['nproc']} CPUs, Python {results['machine']['python']}, "
        f"SMTP sink: {sink.kind}, load: {results['machine']['load_generator']}\n"
    )
    print_table(rows)
    print(f"\n{time.monotonic() - started:.0f} s; raw figures in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
