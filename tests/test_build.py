"""`bantin build` end to end on real files: feeds parse back, rebuilds are quiet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import feedparser

from service.build import Builder
from service.settings import Settings
from service.sources import Source

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
