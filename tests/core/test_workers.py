"""Work spread over worker processes gives exactly what the same work gives in-process."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service import workers
from service.content.source import Source
from service.publish.build import Builder
from service.settings import Settings

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def corpus(write: Callable[[str, str], Path]) -> None:
    for i in range(23):
        write(
            f"{2020 + i % 3}/bai-{i}.md",
            f"---\ntitle: Bài {i} về lịch tiếp công dân\ndate: 2026-11-{i % 27 + 1:02d}\n"
            f"category: Mục {i % 4}\n---\nNội dung **{i}**.\n\n| a | b |\n|---|---|\n| {i} | x |\n",
        )
    write("hong.md", "---\ntitle: [không đóng\ndate: 2026-11-01\n---\n")
    write("khong-utf8.md", "")
    (Path("content") / "khong-utf8.md").write_bytes(b"---\ntitle: \xff\n---\n")


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_parallel_scan_and_build_match_serial(
    settings: Settings,
    write: Callable[[str, str], Path],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    corpus(write)
    serial_scan = Source(settings.source.dir, settings.site.zone).scan()
    Builder(settings, settings.site.templates_dir).build(serial_scan, NOW)
    serial = tree(project / "public")
    (project / "public").rename(project / "public-serial")

    monkeypatch.setattr(workers, "PARALLEL_MIN", 5)
    monkeypatch.setattr(workers, "BATCH", 4)  # several batches per worker
    if workers.cores() < 2:
        pytest.skip("worker processes need two cores")
    parallel_scan = Source(settings.source.dir, settings.site.zone).scan()
    report = Builder(settings, settings.site.templates_dir).build(parallel_scan, NOW)

    assert parallel_scan.articles == serial_scan.articles
    assert [str(p) for p in parallel_scan.problems] == [str(p) for p in serial_scan.problems]
    assert len(parallel_scan.problems) == 2  # the errors came back from the workers intact
    assert tree(project / "public") == serial
    assert report.published == 23
    assert sum(p.startswith("articles/") for p in report.written) == 23


def test_archives_made_by_workers_match_serial(
    settings: Settings,
    write: Callable[[str, str], Path],
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five items a feed: the site and each category have archive pages and feeds, which a
    large build renders in the same workers as the article pages."""
    corpus(write)
    feeds = settings.feeds.model_copy(update={"max_items": 5})
    settings = settings.model_copy(update={"feeds": feeds})
    scan = Source(settings.source.dir, settings.site.zone).scan()
    Builder(settings, settings.site.templates_dir).build(scan, NOW)
    serial = tree(project / "public")
    (project / "public").rename(project / "public-serial")

    monkeypatch.setattr(workers, "PARALLEL_MIN", 5)
    monkeypatch.setattr(workers, "BATCH", 8)  # batches of one or two archives
    if workers.cores() < 2:
        pytest.skip("worker processes need two cores")
    report = Builder(settings, settings.site.templates_dir).build(scan, NOW)

    assert tree(project / "public") == serial
    archives = {p for p in serial if p.startswith(("page/", "archive/", "categories/mu"))}
    assert {"page/1/index.html", "archive/rss/4.xml", "archive/atom/4.xml"} <= archives
    assert archives - {p for p in serial if p.endswith(("rss.xml", "atom.xml", "feed.json"))}
    # every file but the manifest and the gzips beside the files, which a report leaves out
    assert set(report.written) == {p for p in serial if not p.endswith(".gz")} - {
        ".bantin-manifest"
    }
