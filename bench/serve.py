"""Serving: GET /rss.xml against `bantin run` and against a static server, with a load generator.

The load generator is ``wrk`` when installed (C, does not compete for the GIL), else a bounded
asyncio client on httpx. The baseline server is nginx when installed (one worker, like bantin's
one process), else Python's ``http.server``. With nginx, also deploy/nginx.conf in front of
bantin against nginx alone with gzip_static, both sending the build's rss.xml.gz. Loopback
only; every server is stopped after use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench import procs


def load_generator() -> str:
    return "wrk" if shutil.which("wrk") else "asyncio+httpx"


def _seconds(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {value!r}")
    number, unit = float(match[1]), match[2]
    return number * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, Any]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*args, url], capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    p99 = _seconds(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    p50 = _seconds(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_second": rps,
        "p50_ms": p50 * 1000,
        "p99_ms": p99 * 1000,
        "non_2xx_3xx": int(errors[1]) if errors else 0,
        "socket_errors": sock[1] if sock else "",
    }


async def _async_load(
    url: str, headers: dict[str, str], seconds: float, connections: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def one() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                response = await client.get(url, headers=headers)
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_second": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "statuses": statuses,
    }


def load(url: str, headers: dict[str, str], seconds: float, connections: int) -> dict[str, Any]:
    if shutil.which("wrk"):
        return wrk(url, headers, seconds, connections)
    return asyncio.run(_async_load(url, headers, seconds, connections))


def conditional_headers(url: str) -> tuple[dict[str, str], str]:
    """Validators from one GET: If-None-Match given an ETag, else If-Modified-Since."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    etag = response.headers.get("etag")
    if etag:
        check = httpx.get(url, headers={"If-None-Match": etag}, timeout=10)
        return {"If-None-Match": etag}, f"ETag (304 check: {check.status_code})"
    modified = response.headers.get("last-modified")
    if modified:
        check = httpx.get(url, headers={"If-Modified-Since": modified}, timeout=10)
        return {"If-Modified-Since": modified}, f"no ETag; If-Modified-Since ({check.status_code})"
    return {}, "no ETag and no Last-Modified: conditional GET impossible"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )


def start_nginx(nginx: str, workdir: Path, name: str, http: str) -> subprocess.Popen[bytes]:
    """nginx (one worker, like bantin's one process) with ``http`` in its http block, in
    ``workdir/name``."""
    prefix = workdir / name
    prefix.mkdir(exist_ok=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""  # our temp dirs are 0700
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n  access_log off;\n"
        f"  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
        f"  fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n"
        f"  scgi_temp_path {prefix}/scgi;\n"
        f"{http}\n"
        "}\n"
    )
    return procs.start([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")])


def deployed_server(root: Path, port: int, upstream_port: int) -> str:
    """deploy/nginx.conf with only its placeholders replaced (the tests do the same)."""
    text = (procs.REPO / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    for old, new in (
        ("root /srv/bantin/public;", f"root {root};"),
        ("listen 80;", f"listen 127.0.0.1:{port};"),
        ("listen [::]:80;", ""),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};"),
    ):
        if text.count(old) != 1:
            raise ValueError(f"deploy/nginx.conf should hold {old!r} once")
        text = text.replace(old, new)
    return text


def start_nginx_pair(
    root: Path, workdir: Path, upstream_port: int
) -> tuple[dict[str, int], list[subprocess.Popen[bytes]]]:
    """deploy/nginx.conf in front of bantin, and nginx alone serving the same ``root`` with
    gzip_static: {"front": port, "alone": port} and the processes."""
    nginx = nginx_binary()
    if nginx is None:
        raise FileNotFoundError("nginx is not installed")
    ports = {"front": procs.free_port(), "alone": procs.free_port()}
    mime = "  include /etc/nginx/mime.types;\n  default_type application/octet-stream;\n"
    front = start_nginx(
        nginx,
        workdir,
        "nginx-front",
        mime + deployed_server(root, ports["front"], upstream_port),
    )
    alone = start_nginx(
        nginx,
        workdir,
        "nginx-alone",
        mime + f"  server {{ listen 127.0.0.1:{ports['alone']}; root {root}; etag on;"
        " gzip_static on; }",
    )
    for proc, port in ((front, ports["front"]), (alone, ports["alone"])):
        procs.wait_port(port, 10, proc)
    return ports, [front, alone]


def gzip_served(url: str) -> dict[str, Any]:
    """What one gzip'd GET of ``url`` answered: status, Content-Encoding, length, ETag."""
    with (
        httpx.Client(timeout=10) as client,
        client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as answer,
    ):
        body = b"".join(answer.iter_raw())
        return {
            "status": answer.status_code,
            "content_encoding": answer.headers.get("content-encoding"),
            "bytes": len(body),
            "etag": answer.headers.get("etag"),
        }


def start_static_server(root: Path, workdir: Path) -> tuple[str, subprocess.Popen[bytes], int]:
    """nginx (one worker) if installed, else python -m http.server, serving ``root``."""
    port = procs.free_port()
    nginx = nginx_binary()
    if nginx:
        proc = start_nginx(
            nginx,
            workdir,
            "nginx",
            "  types { application/rss+xml xml; text/html html; }\n"
            f"  server {{ listen 127.0.0.1:{port}; root {root}; etag on; }}",
        )
        procs.wait_port(port, 10, proc)
        return "nginx (1 worker)", proc, port
    proc = procs.start(
        [
            procs.PYTHON,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(root),
            str(port),
        ]
    )
    procs.wait_port(port, 10, proc)
    return "python -m http.server", proc, port


def serve_pair(url: str, seconds: float, connections: int) -> dict[str, Any]:
    headers, validator = conditional_headers(url)
    return {
        "unconditional": load(url, {}, seconds, connections),
        "conditional": load(url, headers, seconds, connections) if headers else None,
        "validator": validator,
    }


def wait_ok(url: str, timeout: float) -> None:
    """Until ``url`` answers 200: a service may listen before its first build is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


def bantin_serves_etag(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return "etag" in httpx.get(url, timeout=10).headers
    return False


async def _probe(url: str, seconds: float, interval: float) -> list[float]:
    """One GET every ``interval`` seconds for ``seconds``: the latency a feed reader sees."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(timeout=30) as client:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await client.get(url)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - started)))
    return latencies


def probe(url: str, seconds: float, interval: float = 0.02) -> dict[str, Any]:
    latencies = sorted(asyncio.run(_probe(url, seconds, interval)))
    if not latencies:
        return {"requests": 0}
    return {
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }
