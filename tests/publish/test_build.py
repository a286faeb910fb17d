"""`bantin build` end to end on real files: feeds parse back, rebuilds are quiet."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from service.content.source import Source
from service.errors import TemplateError
from service.publish import sections as build_module  # where feeds are rendered
from service.publish.build import Builder
from service.publish.feeds import FeedSpec
from service.settings import Settings

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def article(title: str, date: str, category: str = "Thông báo") -> str:
    return f"---\ntitle: {title}\ndate: {date}\ncategory: {category}\n---\nNội dung {title}.\n"


def test_build_writes_feeds_that_parse_back(
    settings: Settings, write: Callable[[str, str], Path], project: Path
) -> None:
    write("a.md", article("Lịch tiếp công dân tháng 12", "2026-11-25", "Lịch tiếp công dân"))
    write("b.md", article("Thông báo nghỉ lễ", "2026-11-20"))
    scan = Source(settings.source.dir, settings.site.zone).scan()
    report = Builder(settings, settings.site.templates_dir).build(scan, NOW)
    assert report.published == 2
    for name in ("rss.xml", "atom.xml"):
        parsed = feedparser.parse((project / "public" / name).read_bytes())
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert [e.title for e in parsed.entries] == [
            "Lịch tiếp công dân tháng 12",
            "Thông báo nghỉ lễ",
        ]
    category_feed = project / "public/categories/lich-tiep-cong-dan/rss.xml"
    assert len(feedparser.parse(category_feed.read_bytes()).entries) == 1
    again = Builder(settings, settings.site.templates_dir).build(scan, NOW)
    assert again.written == ()


def test_rebuild_renders_only_the_feeds_an_edit_touches(
    settings: Settings,
    write: Callable[[str, str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write("a.md", article("Lịch tiếp công dân tháng 12", "2026-11-25", "Lịch tiếp công dân"))
    write("b.md", article("Thông báo nghỉ lễ", "2026-11-20"))
    source = Source(settings.source.dir, settings.site.zone)
    builder = Builder(settings, settings.site.templates_dir)
    builder.build(source.scan(), NOW)

    rendered: list[str] = []
    real = build_module.feed_files

    def counting(spec: FeedSpec, *args: object) -> dict[str, bytes]:
        rendered.append(spec.prefix)
        return real(spec, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(build_module, "feed_files", counting)
    assert builder.build(source.scan(), NOW).written == ()
    assert rendered == []  # nothing changed: no feed is even rendered

    time.sleep(0.01)
    write("b.md", article("Thông báo nghỉ lễ (sửa)", "2026-11-20"))
    report = builder.build(source.scan(), NOW)
    assert sorted(rendered) == ["", "categories/thong-bao/"]
    assert "categories/lich-tiep-cong-dan/rss.xml" not in report.written
    assert "categories/thong-bao/rss.xml" in report.written


def huge_table(rows: int) -> str:
    """A Markdown table under the 2 MB file limit whose page exceeds the rendering cap."""
    line = "|" + "|".join("ô" for _ in range(40)) + "|\n"
    head = "|" + "|".join(f"c{i}" for i in range(40)) + "|\n|" + "---|" * 40 + "\n"
    return head + line * rows


def test_an_article_whose_page_cannot_be_rendered_is_skipped_and_never_linked(
    settings: Settings, write: Callable[[str, str], Path], project: Path
) -> None:
    write("a.md", article("Tin thường", "2026-11-25"))
    body = huge_table(15_000)
    path = write("bang.md", article("Bảng khổng lồ", "2026-11-26") + body)
    assert 1_000_000 < path.stat().st_size < 2_000_000
    scan = Source(settings.source.dir, settings.site.zone).scan()
    assert not scan.problems  # the file itself is fine: only its page is too large
    builder = Builder(settings, settings.site.templates_dir)
    report = builder.build(scan, NOW)
    assert report.published == 1
    [problem] = report.problems
    assert problem.path == "bang.md" and "page cannot be rendered" in problem.reason
    public = project / "public"
    for name in ("rss.xml", "atom.xml"):
        parsed = feedparser.parse((public / name).read_bytes())
        assert [e.title for e in parsed.entries] == ["Tin thường"]
    category = public / "categories" / "thong-bao" / "rss.xml"
    assert [e.title for e in feedparser.parse(category.read_bytes()).entries] == ["Tin thường"]
    assert not (public / "articles" / "bang").exists()
    assert "Bảng khổng lồ" not in (public / "index.html").read_text(encoding="utf-8")

    # fixed: the next build publishes it, pages and feeds together
    write("bang.md", article("Bảng khổng lồ", "2026-11-26") + huge_table(20))
    report = builder.build(Source(settings.source.dir, settings.site.zone).scan(), NOW)
    assert report.problems == () and report.published == 2
    assert (public / "articles" / "bang" / "index.html").exists()
    titles = [e.title for e in feedparser.parse((public / "rss.xml").read_bytes()).entries]
    assert titles == ["Bảng khổng lồ", "Tin thường"]


def test_a_template_that_fails_for_every_page_fails_the_build_and_keeps_the_files(
    settings: Settings, write: Callable[[str, str], Path], project: Path
) -> None:
    write("a.md", article("Một", "2026-11-25"))
    write("b.md", article("Hai", "2026-11-24"))
    builder = Builder(settings, settings.site.templates_dir)
    builder.build(Source(settings.source.dir, settings.site.zone).scan(), NOW)
    rss = (project / "public" / "rss.xml").read_bytes()
    template = project / "templates" / "article.html.j2"
    template.write_text("{{ article.khong_co_truong_nay }}", encoding="utf-8")
    write("c.md", article("Ba", "2026-11-23"))
    with pytest.raises(TemplateError):
        Builder(settings, settings.site.templates_dir).build(
            Source(settings.source.dir, settings.site.zone).scan(), NOW
        )
    assert (project / "public" / "rss.xml").read_bytes() == rss


def test_the_form_on_every_category_page_offers_a_category_that_appears(
    settings: Settings, write: Callable[[str, str], Path], project: Path
) -> None:
    form_on = settings.model_copy(
        update={"subscribe": settings.subscribe.model_copy(update={"enabled": True})}
    )
    write("a.md", article("Lịch tiếp công dân tháng 12", "2026-11-25", "Lịch tiếp công dân"))
    source = Source(settings.source.dir, settings.site.zone)
    builder = Builder(form_on, settings.site.templates_dir)
    builder.build(source.scan(), NOW)
    page = project / "public/categories/lich-tiep-cong-dan/index.html"
    assert 'value="lich-tiep-cong-dan" checked' in page.read_text(encoding="utf-8")
    assert 'value="tuyen-dung"' not in page.read_text(encoding="utf-8")
    assert builder.build(source.scan(), NOW).written == ()  # nothing new: nothing rendered

    write("b.md", article("Kết quả tuyển dụng", "2026-11-26", "Tuyển dụng"))
    report = builder.build(source.scan(), NOW)
    assert "categories/lich-tiep-cong-dan/index.html" in report.written
    assert 'value="tuyen-dung">' in page.read_text(encoding="utf-8")
    assert "categories/lich-tiep-cong-dan/rss.xml" not in report.written  # same bytes

    plain = Builder(settings, settings.site.templates_dir)  # the form off: no form at all
    plain.build(source.scan(), NOW)
    assert "/subscribe" not in page.read_text(encoding="utf-8")
