"""`bantin build` end to end on real files: feeds parse back, rebuilds are quiet."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from service.content.source import Source
from service.publish import build as build_module
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
