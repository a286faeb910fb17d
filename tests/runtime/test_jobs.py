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


async def scan(service: Service) -> None:
    """A scan job and the immediate digest it starts beside it."""
    await service.scan_job()
    await service.settled()


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
        await scan(in_process)
        (project / "content" / "moi.md").write_text(
            article("Tin mới", "2024-05-02"), encoding="utf-8"
        )
        # the daily job happens to look at the articles before the next scan does
        await in_process.digest_job("daily")
        await scan(in_process)

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
        await scan(in_process)
        assert builds(in_process) == 1
        await scan(in_process)
        await scan(in_process)

    try:
        asyncio.run(scenario())
    finally:
        in_process.state.close()
    assert builds(in_process) == 1


def test_a_scheduled_digest_whose_scan_fails_is_recorded_as_failed(
    in_process: Service, project: Path
) -> None:
    async def scenario() -> None:
        await scan(in_process)
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
        await scan(service)
        first = len(pings)
        await scan(service)  # nothing changed: no ping
        assert len(pings) == first
        (project / "content" / "moi.md").write_text(
            article("Tin mới", "2024-05-02", category="Thông báo"), encoding="utf-8"
        )
        await scan(service)

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
        await scan(in_process)
        await scan(in_process)  # nothing changed: the idle rescan
        (content / "moi.md").write_text(article("Tin mới", "2024-05-04"), encoding="utf-8")
        await scan(in_process)
        await scan(in_process)  # idle again
        # an edit that keeps the article's id and slug, after an idle rescan
        (content / "moi.md").write_text(article("Tin mới (sửa)", "2024-05-04"), encoding="utf-8")
        await scan(in_process)
        await scan(in_process)
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


@pytest.mark.parametrize(
    "mistake",
    [
        'from = "Bản tin không địa chỉ"',  # refused by the settings themselves
        'dkim_domain = "tinh.example.gov.vn"\ndkim_selector = "s"\ndkim_key_file = "khong-co.pem"',
    ],
    ids=["invalid mail.from", "unreadable DKIM key"],
)
def test_a_refused_config_edit_changes_nothing(
    in_process: Service, project: Path, mistake: str
) -> None:
    """Finding 2: an edit of title, transport and SMTP port with one bad value was logged as
    refused, yet the next digest went to the new SMTP server under the new title."""
    config = project / "config" / "bantin.toml"
    edited = (
        FILE_CONFIG.replace("Cổng thông tin tỉnh", "Tên mới")
        .replace('from = "Bản tin <bantin@tinh.example.gov.vn>"\ntransport = "file"', mistake)
        .replace("[mail]", '[mail]\ntransport = "smtp"')
        + '[smtp]\nhost = "127.0.0.1"\nport = 1\nsecurity = "none"\n'
    )

    async def scenario() -> None:
        await scan(in_process)
        config.write_text(edited, encoding="utf-8")
        assert not await in_process.reloader.reload_config()
        (project / "content" / "moi.md").write_text(
            article("Tin mới", "2024-05-02"), encoding="utf-8"
        )
        await scan(in_process)

    try:
        asyncio.run(scenario())
    finally:
        in_process.state.close()
    assert in_process.health.config["ok"] is False
    assert in_process.settings.site.title == "Cổng thông tin tỉnh"
    assert in_process.composer.settings.site.title == "Cổng thông tin tỉnh"
    assert in_process.settings.mail.transport == "file"
    [mail] = outbox(project, "hoa@example.org")  # the old transport, the old title
    assert "Tin mới" in mail and "Cổng thông tin tỉnh" in mail
    titles = feedparser.parse((project / "public" / "rss.xml").read_bytes()).feed.title
    assert titles == "Cổng thông tin tỉnh"


def test_reloading_a_large_subscribers_file_leaves_the_loop_free(
    in_process: Service, project: Path
) -> None:
    """Finding 12: a reload of 100,000 subscribers blocked the HTTP server for 7.6 s. The
    loop must keep running other work while the file is read and registered."""
    (project / "config" / "subscribers.toml").write_text(
        "".join(f'[[subscriber]]\nemail = "nguoi{n}@example.org"\n' for n in range(50_000)),
        encoding="utf-8",
    )
    ticks: list[int] = []

    async def scenario() -> None:
        async def ticker() -> None:
            while True:
                ticks.append(len(ticks))
                await asyncio.sleep(0.005)

        running = asyncio.create_task(ticker())
        await in_process.reloader.reload_subscribers()
        running.cancel()

    try:
        asyncio.run(scenario())
        assert in_process.health.subscribers["count"] == 50_000
        assert in_process.state.subscribers.counts() == {"suspended": 0, "unsubscribed": 0}
    finally:
        in_process.state.close()
    assert len(ticks) >= 10, "the event loop stood still while the file was reloaded"
