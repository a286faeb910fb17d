"""The Service object in this process: orderings of its jobs too narrow to hit through a
subprocess (a scheduled digest that sees an article first, an idle rescan, a failed scan, the
WebSub ping). Jobs are awaited one after another; nothing waits for a scheduler or a clock.
"""

from __future__ import annotations

import asyncio
import http.server
import shutil
import threading
import urllib.parse
from pathlib import Path

import feedparser
import pytest
from servicekit import Mail, article, subscribers_toml

from service.runtime.service import Service
from service.settings import load_settings

FILE_CONFIG = """\
[site]
title = "Cổng thông tin tỉnh"
base_url = "https://tinh.example.gov.vn"

[schedule]
daily = "0 7 1 1 *"
weekly = "0 7 1 1 *"

[mail]
from = "Bản tin <bantin@tinh.example.gov.vn>"
transport = "file"
"""


@pytest.fixture
def in_process(project: Path) -> Service:
    (project / "config" / "bantin.toml").write_text(FILE_CONFIG, encoding="utf-8")
    (project / "config" / "subscribers.toml").write_text(
        subscribers_toml("hoa@example.org"), encoding="utf-8"
    )
    (project / "content" / "cu.md").write_text(article("Tin cũ", "2024-05-01"), encoding="utf-8")
    config = project / "config" / "bantin.toml"
    return Service(load_settings(config), config)


def outbox(project: Path, address: str) -> list[str]:
    """The plain-text parts of the messages the file transport wrote for ``address``."""
    directory = project / "var" / "outbox"
    files = sorted(directory.glob(f"*{address}.eml")) if directory.exists() else []
    return [Mail(address, f.read_bytes()).text for f in files]


def builds(service: Service) -> float:
    value = service.metrics.registry.get_sample_value(
        "bantin_run_duration_seconds_count", {"job": "build"}
    )
    return value or 0.0


def test_a_scheduled_digest_that_sees_an_article_first_does_not_keep_it_from_immediate_ones(
    in_process: Service, project: Path
) -> None:
    async def scenario() -> None:
        await in_process.scan_job()
        (project / "content" / "moi.md").write_text(
            article("Tin mới", "2024-05-02"), encoding="utf-8"
        )
        # the daily job happens to look at the articles before the next scan does
        await in_process.digest_job("daily")
        await in_process.scan_job()

    try:
        asyncio.run(scenario())
    finally:
        in_process.state.close()
    mails = outbox(project, "hoa@example.org")
    assert len(mails) == 1
    assert "Tin mới" in mails[0]


def test_an_unchanged_tree_is_not_rebuilt_even_with_a_problem_in_it(
    in_process: Service, project: Path
) -> None:
    outside = project / "elsewhere.md"
    outside.write_text(article("Ngoài", "2024-05-03"), encoding="utf-8")
    (project / "content" / "link.md").symlink_to(outside)

    async def scenario() -> None:
        await in_process.scan_job()
        assert builds(in_process) == 1
        await in_process.scan_job()
        await in_process.scan_job()

    try:
        asyncio.run(scenario())
    finally:
        in_process.state.close()
    assert builds(in_process) == 1


def test_a_scheduled_digest_whose_scan_fails_is_recorded_as_failed(
    in_process: Service, project: Path
) -> None:
    async def scenario() -> None:
        await in_process.scan_job()
        shutil.rmtree(project / "content")
        await in_process.digest_job("daily")  # must not raise into the scheduler

    try:
        asyncio.run(scenario())
        runs = {run.kind: run for run in in_process.state.runs.all()}
    finally:
        in_process.state.close()
    assert in_process.health.runs["digest:daily"]["ok"] is False
    assert "content" in in_process.health.runs["digest:daily"]["detail"]
    assert runs["digest:daily"].ok is False


def test_a_changed_feed_is_announced_to_the_websub_hub(project: Path) -> None:
    pings: list[dict[str, list[str]]] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            pings.append(urllib.parse.parse_qs(body.decode()))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    config = project / "config" / "bantin.toml"
    config.write_text(
        FILE_CONFIG.replace(
            "[schedule]", f'[feeds]\nwebsub_hub = "http://127.0.0.1:{hub.server_port}/"\n[schedule]'
        ),
        encoding="utf-8",
    )
    (project / "config" / "subscribers.toml").write_text("", encoding="utf-8")
    (project / "content" / "cu.md").write_text(article("Tin cũ", "2024-05-01"), encoding="utf-8")
    service = Service(load_settings(config), config)

    async def scenario() -> None:
        await service.scan_job()
        first = len(pings)
        await service.scan_job()  # nothing changed: no ping
        assert len(pings) == first
        (project / "content" / "moi.md").write_text(
            article("Tin mới", "2024-05-02", category="Thông báo"), encoding="utf-8"
        )
        await service.scan_job()

    try:
        asyncio.run(scenario())
    finally:
        service.state.close()
        hub.shutdown()
    announced = {p["hub.url"][0] for p in pings if p["hub.mode"] == ["publish"]}
    base = "https://tinh.example.gov.vn"
    assert {f"{base}/rss.xml", f"{base}/atom.xml"} <= announced
    assert f"{base}/categories/thong-bao/rss.xml" in announced
    assert not any(url.endswith("feed.json") for url in announced)
    rss = (project / "public" / "rss.xml").read_text(encoding="utf-8")
    assert f'href="http://127.0.0.1:{hub.server_port}/" rel="hub"' in rss


def test_a_draft_is_never_published_or_mailed_after_idle_rescans(
    in_process: Service, project: Path
) -> None:
    """The critical finding: an idle rescan lost the draft count, and the next change (an edit,
    a daily run) published the draft: its page, rss.xml, immediate and daily mail."""
    content = project / "content"
    draft = article("Dự thảo chưa đăng", "2024-05-03").replace("---\nNội", "draft: true\n---\nNội")
    (content / "du-thao.md").write_text(draft, encoding="utf-8")
    (project / "config" / "subscribers.toml").write_text(
        subscribers_toml("hoa@example.org")
        + subscribers_toml("lan@example.org", frequency="daily"),
        encoding="utf-8",
    )

    async def scenario() -> None:
        await in_process.scan_job()
        await in_process.scan_job()  # nothing changed: the idle rescan
        (content / "moi.md").write_text(article("Tin mới", "2024-05-04"), encoding="utf-8")
        await in_process.scan_job()
        await in_process.scan_job()  # idle again
        # an edit that keeps the article's id and slug, after an idle rescan
        (content / "moi.md").write_text(article("Tin mới (sửa)", "2024-05-04"), encoding="utf-8")
        await in_process.scan_job()
        await in_process.scan_job()
        await in_process.digest_job("daily")

    try:
        asyncio.run(scenario())
    finally:
        in_process.state.close()
    public = project / "public"
    titles = [e.title for e in feedparser.parse((public / "rss.xml").read_bytes()).entries]
    assert titles == ["Tin mới (sửa)", "Tin cũ"]
    assert not (public / "articles" / "du-thao").exists()
    assert "Dự thảo" not in (public / "index.html").read_text(encoding="utf-8")
    immediate = outbox(project, "hoa@example.org")
    daily = outbox(project, "lan@example.org")
    assert len(immediate) == 1 and "Tin mới" in immediate[0]
    assert len(daily) == 1 and "Tin mới" in daily[0]
    assert all("Dự thảo" not in mail for mail in immediate + daily)
