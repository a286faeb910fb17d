"""The pages a reader sees, built from real files and read back as HTML."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from service.content.source import Source
from service.publish.build import Builder
from service.settings import Settings

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
Write = Callable[[str, str], Path]


def page(title: str, date: str, category: str = "Thông báo") -> str:
    return f"---\ntitle: {title}\ndate: {date}\ncategory: {category}\n---\nNội dung {title}.\n"


def build(settings: Settings) -> None:
    scan = Source(settings.source.dir, settings.site.zone).scan()
    Builder(settings, settings.site.templates_dir).build(scan, NOW)


def test_the_article_page_shows_the_time_of_a_reception(
    settings: Settings, write: Write, project: Path
) -> None:
    write("lich.md", page("Lịch tiếp công dân", "25/11/2026 08:00", "Lịch tiếp công dân"))
    write("nghi.md", page("Nghỉ lễ", "2026-11-20"))
    build(settings)
    reception = (project / "public/articles/lich/index.html").read_text(encoding="utf-8")
    assert "25 tháng 11 năm 2026 lúc 08:00" in reception
    holiday = (project / "public/articles/nghi/index.html").read_text(encoding="utf-8")
    assert "20 tháng 11 năm 2026 ·" in holiday and "lúc" not in holiday
    index = (project / "public/index.html").read_text(encoding="utf-8")
    assert "25/11/2026, 08:00" in index
