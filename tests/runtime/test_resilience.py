"""`bantin run` under faults: a hung relay, a looping template, a hostile client.

The real service in a subprocess, watched from outside; every wait is bounded, and nothing
here asserts a duration: each test checks an order of events (the feed changed while the mail
was still stuck) or an outcome (the service answered, then stopped on SIGTERM).
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
from pathlib import Path

import feedparser
import httpx
from servicekit import Bantin
from smtpserver import silent_server


def feed_titles(bantin: Bantin) -> list[str]:
    return [e.title for e in feedparser.parse(bantin.get("/rss.xml").content).entries]


def test_a_hung_relay_delays_mail_never_the_feeds(project: Path) -> None:
    """Finding 10: immediate digests ran inside the scan job, so a relay that never answered
    held new articles out of rss.xml for minutes."""
    with silent_server() as port:
        bantin = Bantin(project, port)
        bantin.write_config(bantin.config_text().replace("timeout = 5", "timeout = 120"))
        bantin.subscribe("hoa@example.org")
        bantin.publish("Tin cũ")
        try:
            bantin.start()
            before = bantin.health()
            assert before is not None
            startup_run = before["runs"]["digest:immediate"]  # nothing was news at start
            first = bantin.publish("Tin thứ nhất")  # its immediate digest hangs on the relay
            bantin.wait(lambda: first in feed_titles(bantin), 15, "the first article in the feed")
            second = bantin.publish("Tin thứ hai")
            bantin.wait(lambda: second in feed_titles(bantin), 15, "the second article")
            health = bantin.health()
            assert health is not None
            stuck = health["runs"]["digest:immediate"]
            assert stuck["at"] == startup_run["at"]  # no digest run has ended since start-up
            assert stuck["running_since"] is not None  # the mail is still stuck on the relay
            assert bantin.stop() == 0
        finally:
            bantin.stop()
            print(bantin.log_text())
    assert "maximum number of running instances" not in bantin.log_text()


def test_a_looping_email_template_fails_its_run_and_the_service_stays_responsive(
    project: Path,
) -> None:
    """Finding 7: a looping email template froze the event loop: /healthz timed out and
    SIGTERM was ignored."""
    with silent_server() as port:
        bantin = Bantin(project, port)
        bantin.subscribe("hoa@example.org")
        bantin.publish("Tin cũ")
        template = project / "templates" / "email" / "digest.txt.j2"
        template.write_text(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            encoding="utf-8",
        )
        try:
            bantin.start()
            bantin.publish("Tin mới")

            def failed_run() -> dict[str, object] | None:
                health = bantin.health()
                run = health["runs"].get("digest:immediate") if health else None
                return run if run and not run["ok"] else None

            run = bantin.wait(failed_run, 30, "the immediate digest to fail on its template")
            assert "digest.txt.j2" in str(run["detail"])
            assert "loop iterations" in str(run["detail"])
            assert bantin.stop() == 0
        finally:
            bantin.stop()
            print(bantin.log_text())


def test_healthz_fails_when_scans_fail_and_shows_the_public_nothing_private(
    project: Path,
) -> None:
    """Finding 11: /healthz said ok while every scan raised, and showed anyone the errors, the
    file paths and the subscribers' addresses."""
    with silent_server() as port:
        bantin = Bantin(project, port)
        bantin.subscribe("hoa.nguyen@example.org")
        bantin.publish("Tin cũ")
        try:
            bantin.start()
            public = {"X-Forwarded-For": "203.0.113.9"}  # as nginx relays a visitor
            assert bantin.get("/healthz", headers=public).json()["status"] == "ok"
            (project / "content").rename(project / "content-cu")

            def failing() -> dict[str, object] | None:
                answer = bantin.get("/healthz")
                return answer.json() if answer.status_code == 503 else None

            detailed = bantin.wait(failing, 15, "/healthz to say failing")
            [reason] = detailed["problems"]
            assert reason.startswith("the last scan failed: ") and "content" in reason
            moments = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[^\"]*", json.dumps(detailed))
            assert len(moments) > 5 and all(m.endswith("+00:00") for m in moments), moments
            assert detailed["config"]["file"] == str(project / "config" / "bantin.toml")
            seen = bantin.get("/healthz", headers=public)
            assert seen.status_code == 503
            assert set(seen.json()) == {"status", "checked", "started", "last_success"}
            assert "content" not in seen.text and "@" not in seen.text
            (project / "content-cu").rename(project / "content")
            bantin.wait(lambda: bantin.get("/healthz").status_code == 200, 15, "ok again")
        finally:
            bantin.stop()
            print(bantin.log_text())


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hostile_clients_cannot_starve_the_service_of_file_descriptors(project: Path) -> None:
    """Finding 9: 1,100 idle connections at the default 1,024 open files made other clients
    fail for 25 s, every scan fail with "Too many open files", and filled the log with
    accept-error tracebacks."""
    limit = 256
    with silent_server() as port:
        bantin = Bantin(project, port)
        bantin.write_config(bantin.config_text() + "header_timeout = 1\n")
        bantin.publish("Tin cũ")
        bantin.subscribe("hoa@example.org")

        def low_file_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with bantin.log.open("ab") as log:
            bantin.proc = subprocess.Popen(
                bantin.command("run"),
                cwd=project,
                env=bantin.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=low_file_limit,
            )
        idle: list[socket.socket] = []
        try:
            bantin.wait(bantin.running, 20, "the service to start")
            for _ in range(2 * limit):  # far more than the service may hold
                idle.append(socket.create_connection(("127.0.0.1", bantin.port)))
            assert bantin.proc is not None
            assert _open_fds(bantin.proc.pid) < limit
            title = bantin.publish("Tin mới trong lúc bị tấn công")

            def served() -> bool:
                try:
                    return title in feed_titles(bantin)
                except httpx.TransportError:
                    return False

            bantin.wait(served, 30, "a real client to get the new article while idle ones wait")
            assert _open_fds(bantin.proc.pid) < limit
            assert bantin.stop() == 0
        finally:
            for connection in idle:
                connection.close()
            bantin.stop()
    text = bantin.log_text()
    print(text)
    assert "Traceback" not in text
    assert "Too many open files" not in text
    assert "scan failed" not in text
    assert len(text.splitlines()) < 60  # no flood: at most a line a minute per kind of refusal


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_large_file_of_the_operator_is_streamed_not_loaded(project: Path) -> None:
    """Finding 12: files over 8 MB in public/ were re-read and re-gzipped on every request
    (16 requests for a 105 MB file peaked at 1.9 GB)."""
    with silent_server() as port:
        bantin = Bantin(project, port)
        bantin.publish("Tin cũ")
        big = project / "public" / "bao-cao.txt"
        try:
            bantin.start()
            payload = os.urandom(32 * 1024 * 1024)
            big.write_bytes(payload)
            assert bantin.proc is not None
            before = _peak_rss_kib(bantin.proc.pid)
            for _ in range(6):
                answer = httpx.get(
                    bantin.url + "/bao-cao.txt", headers={"Accept-Encoding": "gzip"}, timeout=30
                )
                assert answer.status_code == 200 and answer.content == payload
                assert "content-encoding" not in answer.headers
            etag = answer.headers["etag"]
            again = httpx.get(bantin.url + "/bao-cao.txt", headers={"If-None-Match": etag})
            assert again.status_code == 304
            grown = _peak_rss_kib(bantin.proc.pid) - before
            assert grown < 24 * 1024, f"serving a 32 MB file six times grew the peak by {grown} KiB"
        finally:
            bantin.stop()
