"""The complete archive: pages and RFC 5005 feeds reach every article once and stay put."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import feedparser
import pytest
from lxml import etree, html

from service.content.source import Source
from service.publish import sections
from service.publish.build import Builder, BuildReport
from service.settings import Settings, load_settings

Write = Callable[[str, str], Path]
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
BASE = "https://tinh.example.gov.vn"
PER_PAGE = 5
CATEGORIES = ("Thông báo", "Lịch tiếp công dân")
HISTORY = "http://purl.org/syndication/history/1.0"


def text(number: int) -> str:
    day = datetime(2026, 1, 1, 8, tzinfo=UTC) + timedelta(hours=number)
    category = CATEGORIES[number % 3 == 0]
    return (
        f"---\ntitle: Thông báo số {number}\ndate: {day.isoformat()}\ncategory: {category}\n"
        f"---\nNội dung {number}.\n"
    )


@pytest.fixture
def small(project: Path) -> Settings:
    """Feeds and pages of five entries, so a few dozen articles make many archive chunks."""
    config = project / "config" / "bantin.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + f"[feeds]\nmax_items = {PER_PAGE}\n", "utf-8"
    )
    return load_settings(config)


def publish(write: Write, numbers: range) -> None:
    for number in numbers:
        write(f"tb-{number}.md", text(number))


class Site:
    """One builder over one project, as the daemon keeps it between builds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = Source(settings.source.dir, settings.site.zone)
        self.builder = Builder(settings, settings.site.templates_dir)
        self.public = Path(settings.feeds.output_dir)

    def build(self) -> BuildReport:
        return self.builder.build(self.source.scan(), NOW)

    def file(self, url: str) -> bytes:
        relative = url.removeprefix(BASE).lstrip("/")
        path = self.public / relative
        return (path / "index.html" if relative == "" or url.endswith("/") else path).read_bytes()


def page_titles(site: Site, url: str) -> tuple[list[str], str | None]:
    tree = html.fromstring(site.file(url))
    titles = [t.text_content() for t in tree.xpath("//ul[@class='articles']/li/a/strong")]
    older = tree.xpath("//a[@rel='next']/@href")
    return titles, (older[0] if older else None)


def walk_pages(site: Site, start: str) -> list[str]:
    """Every title met following "older" links from ``start``."""
    titles: list[str] = []
    url: str | None = start
    seen = 0
    while url is not None:
        found, url = page_titles(site, url)
        titles += found
        seen += 1
        assert seen < 100, "the pages loop"
    return titles


def walk_feed(site: Site, start: str) -> list[str]:
    """Every entry title met following prev-archive links from ``start`` with feedparser."""
    titles: list[str] = []
    url: str | None = start
    first = True
    while url is not None:
        data = site.file(url)
        feed: Any = feedparser.parse(data)
        assert feed.bozo == 0, feed.get("bozo_exception")
        titles += [e.title for e in feed.entries]
        archived = etree.fromstring(data).find(f".//{{{HISTORY}}}archive") is not None
        assert archived != first  # archive documents are marked, the subscription feed is not
        links = [link.href for link in feed.feed.get("links", []) if link.rel == "prev-archive"]
        url = links[0] if links else None
        first = False
    return titles


def expected(numbers: range, category: str | None = None) -> list[str]:
    chosen = [n for n in numbers if category is None or CATEGORIES[n % 3 == 0] == category]
    return [f"Thông báo số {n}" for n in sorted(chosen, reverse=True)]


def test_paging_from_the_index_reaches_every_article_once(small: Settings, write: Write) -> None:
    publish(write, range(1, 24))
    site = Site(small)
    site.build()
    assert walk_pages(site, f"{BASE}/") == expected(range(1, 24))
    for category in CATEGORIES:
        start = (
            f"{BASE}/categories/{'thong-bao' if category == 'Thông báo' else 'lich-tiep-cong-dan'}/"
        )
        assert walk_pages(site, start) == expected(range(1, 24), category)
    # 23 articles: 5 on the front page, 18 in pages 1-3 (full) and 4 (3 articles)
    assert page_titles(site, f"{BASE}/page/1/")[0] == expected(range(1, 6))
    assert not (site.public / "page/5").exists()


def test_prev_archive_from_rss_and_atom_reaches_every_article_once(
    small: Settings, write: Write
) -> None:
    publish(write, range(1, 24))
    site = Site(small)
    site.build()
    for name in ("rss.xml", "atom.xml"):
        assert walk_feed(site, f"{BASE}/{name}") == expected(range(1, 24))
        category = f"{BASE}/categories/lich-tiep-cong-dan/{name}"
        assert walk_feed(site, category) == expected(range(1, 24), "Lịch tiếp công dân")
    current = feedparser.parse(site.file(f"{BASE}/archive/atom/2.xml")).feed.links
    assert {link.rel: link.href for link in current}["current"] == f"{BASE}/atom.xml"


def test_full_pages_and_archives_never_change_when_articles_are_added(
    small: Settings, write: Write
) -> None:
    publish(write, range(1, 21))  # 20: front 5, pages 1-3 full
    site = Site(small)
    site.build()
    full = ["page/1/index.html", "page/3/index.html", "archive/rss/3.xml", "archive/atom/1.xml"]
    before = {name: (site.public / name).read_bytes() for name in full}
    empty = html.fromstring((site.public / "page/4/index.html").read_bytes())
    assert empty.xpath("//ul[@class='articles']") == []  # where page 3's "newer" link leads
    for number in range(21, 29):
        publish(write, range(number, number + 1))
        report = site.build()
        assert not set(report.written) & set(full), report.written
    assert {name: (site.public / name).read_bytes() for name in full} == before
    assert walk_pages(site, f"{BASE}/") == expected(range(1, 29))


def test_an_edit_rewrites_its_own_archive_chunk_and_nothing_else_old(
    small: Settings, write: Write
) -> None:
    publish(write, range(1, 24))
    site = Site(small)
    site.build()
    write("tb-2.md", text(2).replace("Nội dung 2.", "Nội dung đã sửa."))
    written = set(site.build().written)
    assert {
        "articles/tb-2/index.html",
        "page/1/index.html",
        "archive/rss/1.xml",
        "archive/atom/1.xml",
        "categories/thong-bao/page/1/index.html",
    } <= written
    assert not any(p.startswith(("page/2", "page/3", "archive/rss/2")) for p in written), written
    assert "rss.xml" not in written  # the front did not change


def test_sitemap_lists_every_page_and_splits_past_its_limit(
    small: Settings, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(write, range(1, 24))
    site = Site(small)
    site.build()
    ns = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    root = etree.fromstring((site.public / "sitemap.xml").read_bytes())
    locations = root.xpath("//s:url/s:loc/text()", namespaces=ns)
    assert len(locations) == 23 + 2 + 1  # articles, categories, home
    assert f"{BASE}/articles/tb-1/" in locations
    assert "Sitemap: https://tinh.example.gov.vn/sitemap.xml" in (
        site.public / "robots.txt"
    ).read_text(encoding="utf-8")

    monkeypatch.setattr(sections, "MAX_URLS", 10)  # the real limit is 50,000
    site.build()
    index = etree.fromstring((site.public / "sitemap.xml").read_bytes())
    assert index.tag == "{http://www.sitemaps.org/schemas/sitemap/0.9}sitemapindex"
    parts = index.xpath("//s:sitemap/s:loc/text()", namespaces=ns)
    assert [p.removeprefix(f"{BASE}/") for p in parts] == [
        "sitemaps/pages.xml",
        "sitemaps/articles-1.xml",
        "sitemaps/articles-2.xml",
        "sitemaps/articles-3.xml",
    ]
    listed = []
    for part in parts:
        tree = etree.fromstring(site.file(part))
        listed += tree.xpath("//s:url/s:loc/text()", namespaces=ns)
    assert sorted(listed) == sorted(locations)
