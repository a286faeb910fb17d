"""Building: quiet rebuilds, atomic writes, stale files removed, every link resolves, safe pages."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import icalendar
import pytest
from lxml import etree, html

from service.content.source import Source
from service.publish.build import Builder
from service.publish.output import MANIFEST, Output
from service.settings import Settings

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
BASE = "https://tinh.example.gov.vn"
Write = Callable[[str, str], Path]


def article(title: str, date: str = "2026-11-20", category: str = "Thông báo", **extra: str) -> str:
    lines = "".join(f"{k}: {v}\n" for k, v in extra.items())
    return f"---\ntitle: {title}\ndate: {date}\ncategory: {category}\n{lines}---\nNội dung.\n"


def build(settings: Settings, builder: Builder | None = None, source: Source | None = None) -> Any:
    source = source or Source(settings.source.dir, settings.site.zone)
    builder = builder or Builder(settings, settings.site.templates_dir)
    return builder.build(source.scan(), NOW)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def touch_later(path: Path) -> None:
    os.utime(path, ns=(1_800_000_000_000_000_000,) * 2)


@pytest.fixture
def public(project: Path) -> Path:
    return project / "public"


def test_first_build_writes_every_file(settings: Settings, write: Write, public: Path) -> None:
    write("a.md", article("Lịch tiếp công dân", category="Lịch tiếp công dân"))
    write("b.md", article("Thông báo", "2026-11-21"))
    report = build(settings)
    assert report.published == 2
    expected = {
        "rss.xml", "atom.xml", "feed.json", "index.html", "calendar.ics",
        "sitemap.xml", "robots.txt", "assets/search.js", "assets/style.css", "404.html",
        "categories/index.html",
        "articles/a/index.html", "articles/b/index.html",
        "categories/lich-tiep-cong-dan/index.html", "categories/thong-bao/index.html",
        *(f"categories/{c}/{f}" for c in ("lich-tiep-cong-dan", "thong-bao")
          for f in ("rss.xml", "atom.xml", "feed.json", "calendar.ics")),
    }  # fmt: skip
    assert set(report.written) == expected
    assert report.files == len(expected)
    on_disk = {str(p.relative_to(public)) for p in public.rglob("*") if p.is_file()}
    gzipped = {p + ".gz" for p in expected}  # every one is text, for nginx's gzip_static
    assert on_disk == expected | gzipped | {MANIFEST}
    feeds = {p for p in expected if p.endswith(("rss.xml", "atom.xml", "feed.json"))}
    assert set(report.feeds_written) == feeds


def test_building_twice_rewrites_nothing(settings: Settings, write: Write, public: Path) -> None:
    write("a.md", article("A", category="Lịch tiếp công dân"))
    write("b.md", article("B", "2026-11-21", author="Nguyễn Nga"))
    write("bad.md", "---\ntitle: [\n")
    build(settings)
    before = snapshot(public)
    again = build(settings)  # a fresh builder and source, as `bantin build` run twice does
    assert again.written == ()
    assert again.removed == ()
    assert snapshot(public) == before
    source = Source(settings.source.dir, settings.site.zone)
    builder = Builder(settings, settings.site.templates_dir)
    for _ in range(2):  # and a long-running builder, as the daemon keeps
        assert build(settings, builder, source).written == ()
    assert snapshot(public) == before


def test_one_edit_rewrites_its_page_and_feeds_only(
    settings: Settings, write: Write, public: Path
) -> None:
    write("a.md", article("A", category="Lịch tiếp công dân"))
    write("b.md", article("B", "2026-11-21"))
    source = Source(settings.source.dir, settings.site.zone)
    builder = Builder(settings, settings.site.templates_dir)
    build(settings, builder, source)
    touch_later(write("b.md", article("B sửa", "2026-11-21")))
    report = build(settings, builder, source)
    assert set(report.written) == {
        "rss.xml", "atom.xml", "feed.json", "index.html", "articles/b/index.html",
        "categories/thong-bao/index.html", "categories/thong-bao/rss.xml",
        "categories/thong-bao/atom.xml", "categories/thong-bao/feed.json",
    }  # fmt: skip


def test_removed_articles_lose_their_files_but_operator_files_survive(
    settings: Settings, write: Write, project: Path, public: Path
) -> None:
    write("a.md", article("A", category="Lịch tiếp công dân"))
    write("b.md", article("B", "2026-11-21"))
    build(settings)
    (public / "robots.txt").write_text("User-agent: *\n")
    (public / "articles" / "a" / "anh.jpg").write_bytes(b"\xff\xd8")
    (public / "categories" / "lich-tiep-cong-dan" / "ghi-chu.txt").write_text("x")
    (project / "content" / "a.md").unlink()
    report = build(settings)
    assert set(report.removed) == {
        "articles/a/index.html",
        "categories/lich-tiep-cong-dan/index.html",
        "categories/lich-tiep-cong-dan/rss.xml",
        "categories/lich-tiep-cong-dan/atom.xml",
        "categories/lich-tiep-cong-dan/feed.json",
        "categories/lich-tiep-cong-dan/calendar.ics",
    }
    assert not (public / "articles/a/index.html").exists()
    assert (public / "robots.txt").read_text() == "User-agent: *\n"
    assert (public / "articles/a/anh.jpg").exists()
    assert (public / "categories/lich-tiep-cong-dan/ghi-chu.txt").exists()
    assert (public / "articles/b/index.html").exists()
    assert [e.title for e in feedparser.parse((public / "rss.xml").read_bytes()).entries] == ["B"]


def test_renamed_slug_moves_the_page_and_prunes_the_empty_directory(
    settings: Settings, write: Write, public: Path
) -> None:
    write("a.md", article("A"))
    build(settings)
    touch_later(write("a.md", article("A", slug="a-moi")))
    report = build(settings)
    assert report.removed == ("articles/a/index.html",)
    assert not (public / "articles/a").exists()
    assert (public / "articles/a-moi/index.html").exists()


def test_drafted_article_is_unpublished(settings: Settings, write: Write, public: Path) -> None:
    write("a.md", article("A"))
    write("b.md", article("B"))
    build(settings)
    touch_later(write("a.md", article("A", draft="true")))
    report = build(settings)
    assert "articles/a/index.html" in report.removed
    assert "A" not in [
        e.title for e in feedparser.parse((public / "atom.xml").read_bytes()).entries
    ]


def test_writes_are_atomic_and_leave_no_temporary_files(tmp_path: Path) -> None:
    output = Output(tmp_path / "out")
    assert output.write("a/b/c.txt", b"one") is True
    assert output.write("a/b/c.txt", b"one") is False
    inode = (tmp_path / "out/a/b/c.txt").stat().st_ino
    assert output.write("a/b/c.txt", b"two") is True
    assert (tmp_path / "out/a/b/c.txt").stat().st_ino != inode  # replaced, not rewritten in place
    assert (tmp_path / "out/a/b/c.txt").read_bytes() == b"two"
    assert output.write("a/b/c.txt", b"tw0") is True  # same size, other bytes
    assert sorted(p.name for p in (tmp_path / "out/a/b").iterdir()) == ["c.txt"]
    assert oct((tmp_path / "out/a/b/c.txt").stat().st_mode & 0o777) == "0o644"


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    output = Output(tmp_path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "sub").mkdir()  # a directory where the file should go
    with pytest.raises(OSError):
        output.write("dir/sub", b"x")
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["sub"]


def test_no_temporary_files_after_a_build(settings: Settings, write: Write, public: Path) -> None:
    for i in range(5):
        write(f"{i}.md", article(f"Bài {i}"))
    build(settings)
    assert [p for p in public.rglob("*") if p.name.startswith(".tmp-")] == []


def test_manifest_cannot_delete_outside_the_output_directory(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(f"{victim}\n../victim.txt\nsub/../../victim.txt\n")
    Output(out).finish(set())
    assert victim.read_text() == "keep"


def _links(document: bytes, kind: str) -> list[str]:
    if kind == "json":
        data = json.loads(document)
        urls = [data["home_page_url"], data["feed_url"]]
        return urls + [u for i in data["items"] for u in (i["url"], *_href(i["content_html"]))]
    if kind == "xml":
        root = etree.fromstring(document)
        found = [e.get("href") for e in root.iter("{http://www.w3.org/2005/Atom}link")]
        found += [e.text for e in root.iter("link")]
        found += [e.text for e in root.iter("{http://www.sitemaps.org/schemas/sitemap/0.9}loc")]
        for text in root.itertext():
            found += _href(text)
        return [f for f in found if f]
    if kind == "txt":  # robots.txt
        return [line.split(":", 1)[1].strip() for line in document.decode().splitlines()
                if line.startswith("Sitemap:")]  # fmt: skip
    if kind == "ics":
        calendar = icalendar.Calendar.from_ical(document)
        return [str(c["URL"]) for c in calendar.walk() if "URL" in c]
    return _href(document.decode())


def _href(markup: str) -> list[str]:
    if "<" not in markup:
        return []
    tree = html.fromstring(f"<div>{markup}</div>")
    return [v for e in tree.iter() for k, v in e.attrib.items() if k in ("href", "src")]


def test_every_link_under_base_url_resolves(settings: Settings, write: Write, public: Path) -> None:
    write("a.md", article("A", category="Lịch tiếp công dân"))
    write("b.md", article("B", "2026-11-21", category="Đảng ủy, đoàn thể"))
    write("c.md", article("C", "2026-11-22", url="https://baochinhphu.vn/x"))
    write("d.txt", "Tin tức sự kiện\nThứ hai 23/11/2026\nCổng\nThân.\nNguyễn Nga\n")
    build(settings)
    checked = 0
    for path in public.rglob("*"):
        if not path.is_file() or path.name == MANIFEST or path.suffix == ".gz":
            continue  # a .gz holds the same bytes as the file beside it
        kinds = {".xml": "xml", ".json": "json", ".html": "html", ".ics": "ics", ".txt": "txt"}
        if path.suffix in (".js", ".css"):  # the search script and stylesheet: no links in them
            continue
        kind = kinds[path.suffix]
        for url in _links(path.read_bytes(), kind):
            if url.startswith("webcal://"):  # a subscription: the same file over https
                url = "https://" + url.removeprefix("webcal://")
            if not url.startswith(BASE):
                assert urlsplit(url).scheme in ("http", "https", "mailto", "tel"), url
                continue
            relative = url[len(BASE) :].lstrip("/")
            target = public / relative
            if relative == "" or relative.endswith("/"):
                target = target / "index.html"
            assert target.is_file(), f"{path.relative_to(public)} links to {url}: no such file"
            checked += 1
    assert checked > 60
    links = {e.title: e.link for e in feedparser.parse((public / "rss.xml").read_bytes()).entries}
    assert links["C"] == "https://baochinhphu.vn/x"


def test_pages_escape_plain_text_and_keep_only_safe_markup(
    settings: Settings, write: Write, public: Path
) -> None:
    write(
        "evil.md",
        '---\ntitle: "<b>Đậm</b> & \\"nháy\\" \'đơn\'"\ndate: 2026-11-20\n'
        'category: "<i>Mục</i>"\nauthor: "<script>alert(0)</script>"\n'
        'summary: "<img src=x onerror=alert(1)> & tóm tắt"\nurl: "https://ok.vn/?a=1&b=\\"2"\n'
        "---\n<script>alert(2)</script>\n\n<img src=x onerror=alert(3)>\n\n"
        "[md](javascript:alert(4)) <a href='JAVASCRIPT:alert(5)'>raw</a> "
        "<a href='https://ok.vn' onclick='alert(6)'>ok</a>\n\n"
        "| Giờ | Nơi |\n|---|---|\n| 7h30 | Trụ sở |\n",
    )
    build(settings)
    pages = [public / "index.html", public / "articles/evil/index.html"]
    pages += list((public / "categories").glob("*/index.html"))
    assert len(pages) == 3
    for page in pages:
        text = page.read_text(encoding="utf-8")
        tree = html.fromstring(text)
        # the one script is the search box's, from our own site, with nothing inline
        [script] = tree.xpath("//script")
        assert script.get("src") == f"{BASE}/assets/search.js" and not script.text
        assert tree.xpath("//b | //i") == []  # title and category are text, not markup
        for element in tree.iter():
            for name, value in element.attrib.items():
                assert not name.lower().startswith("on"), (page, name)
                assert not value.strip().lower().startswith("javascript:"), (page, value)
        assert "&lt;b&gt;Đậm&lt;/b&gt; &amp; &#34;nháy&#34; &#39;đơn&#39;" in text
    page = (public / "articles/evil/index.html").read_text(encoding="utf-8")
    tree = html.fromstring(page)
    assert tree.xpath("//h2")[0].text_content() == "<b>Đậm</b> & \"nháy\" 'đơn'"
    assert tree.xpath("//table//td")[0].text == "7h30"
    assert [a.get("href") for a in tree.xpath("//article//a")][-2:] == [
        "https://ok.vn",
        'https://ok.vn/?a=1&b="2',
    ]
    index = html.fromstring((public / "index.html").read_bytes())
    assert "<img src=x onerror=alert(1)> & tóm tắt" in index.text_content()
    rss = (public / "rss.xml").read_text(encoding="utf-8")
    description = re.search(r"<description>(.*?)</description>", rss.split("<item>")[1]).group(1)
    # one XML decode leaves &lt;img ...&gt;: a reader that renders HTML shows the characters
    assert description == "&amp;lt;img src=x onerror=alert(1)&amp;gt; &amp;amp; tóm tắt"


def test_index_autodiscovery_and_feed_links(settings: Settings, write: Write, public: Path) -> None:
    write("a.md", article("A", category="Lịch tiếp công dân"))
    build(settings)
    tree = html.fromstring((public / "index.html").read_bytes())
    alternates = {
        (e.get("type"), e.get("href")) for e in tree.xpath("//head/link[@rel='alternate']")
    }
    assert alternates == {
        ("application/rss+xml", f"{BASE}/rss.xml"),
        ("application/atom+xml", f"{BASE}/atom.xml"),
        ("application/feed+json", f"{BASE}/feed.json"),
    }
    assert tree.get("lang") == "vi"
    hrefs = {a.get("href") for a in tree.xpath("//a")}
    assert f"{BASE}/categories/lich-tiep-cong-dan/rss.xml" in hrefs
    assert f"{BASE}/articles/a/" in hrefs
    page = html.fromstring((public / "articles/a/index.html").read_bytes())
    assert "thứ sáu, ngày 20 tháng 11 năm 2026" in page.text_content().lower()


def test_a_bad_template_is_a_template_error_and_the_old_files_stay(
    settings: Settings, write: Write, project: Path, public: Path
) -> None:
    from service.errors import TemplateError

    write("a.md", article("A"))
    build(settings)
    before = snapshot(public)
    (project / "templates" / "article.html.j2").write_text("{{ article.nope }}")
    with pytest.raises(TemplateError) as caught:
        build(settings)
    assert "article.html.j2" in str(caught.value)
    assert snapshot(public) == before


def test_unwritable_output_directory_is_a_config_error(
    project: Path, write: Write, settings: Settings
) -> None:
    from service.errors import ConfigError
    from service.settings import load_settings

    (project / "blocked").write_text("a file where the directory should be")
    config = project / "config" / "bantin.toml"
    config.write_text(config.read_text() + "[feeds]\noutput_dir = 'blocked'\n", encoding="utf-8")
    write("a.md", article("A"))
    blocked = load_settings(config)
    with pytest.raises(ConfigError) as caught:
        build(blocked)
    assert "blocked" in str(caught.value)
    assert "output_dir" in str(caught.value)
