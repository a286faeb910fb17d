"""The build index: a restarted build renders no page it wrote before, and is never wrong.

Each test builds, "restarts" (a new Source and Builder reading the indexes, as `bantin run`
and `bantin build` do), changes one thing, and checks which pages were rendered again and that
the output is byte for byte what a build from nothing writes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service import cli
from service.content import index
from service.content.source import Source
from service.publish import sections
from service.publish.build import Builder
from service.settings import Settings, load_settings

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)


def article(title: str, day: int, category: str = "Thông báo") -> str:
    return f"---\ntitle: {title}\ndate: 2026-11-{day:02d}\ncategory: {category}\n---\nNội dung.\n"


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


GROUPS: list[str] = []  # the groups of section files the last start made again


def start(settings: Settings) -> tuple[int, int, dict[str, bytes]]:
    """A restart: (files parsed, pages rendered, the output); GROUPS, the section files made."""
    source = Source(settings.source.dir, settings.site.zone, index=settings.state.scan_index)
    builder = Builder(settings, settings.site.templates_dir, index=settings.state.build_index)
    builder.build(source.scan(), NOW)
    GROUPS[:] = builder.groups_made
    return source.parsed, builder.rendered, files(Path(settings.feeds.output_dir))


def cold(settings: Settings, project: Path) -> dict[str, bytes]:
    """What a build from nothing writes, in a folder of its own."""
    out = project / "cold-public"
    shutil.rmtree(out, ignore_errors=True)
    fresh = settings.model_copy(
        update={"feeds": settings.feeds.model_copy(update={"output_dir": out})}
    )
    Builder(fresh, settings.site.templates_dir).build(
        Source(settings.source.dir, settings.site.zone).scan(), NOW
    )
    return files(out)


@pytest.fixture
def site(project: Path, write: Callable[[str, str], Path]) -> Settings:
    config = project / "config" / "bantin.toml"
    with config.open("a", encoding="utf-8") as file:
        file.write("[feeds]\nmax_items = 5\n")  # 12 articles: the archive has pages
    settings = load_settings(config)
    for n in range(1, 13):
        write(f"tin-{n}.md", article(f"Tin số {n}", n, "Lịch tiếp công dân" if n % 3 else "Tin"))
    parsed, rendered, _ = start(settings)
    assert (parsed, rendered) == (12, 12)
    assert "" in GROUPS and "page/1" in GROUPS  # the front page and feeds, the archive
    return settings


def test_a_restart_renders_nothing(site: Settings, project: Path) -> None:
    parsed, rendered, output = start(site)
    assert (parsed, rendered, GROUPS) == (0, 0, [])
    assert output == cold(site, project)


def test_a_restart_renders_no_part_of_a_split_sitemap(
    site: Settings, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond MAX_URLS the sitemap is an index of files of 50,000 articles each (100,000
    articles: two). A restart learns each file's lastmod again from its articles; it renders
    none of them, and the index it writes is the one a build from nothing writes."""
    monkeypatch.setattr(sections, "MAX_URLS", 5)  # the real limit is 50,000
    start(site)  # the sitemap split: written once
    parts = [p for p in files(Path(site.feeds.output_dir)) if p.startswith("sitemaps/articles-")]
    parts = [p for p in parts if p.endswith(".xml")]
    assert len(parts) == 3
    rendered: list[int] = []
    real = sections.urlset
    monkeypatch.setattr(sections, "urlset", lambda *a, **k: (rendered.append(1), real(*a, **k))[1])
    parsed, pages, output = start(site)
    assert (parsed, pages, GROUPS, rendered) == (0, 0, [], [])
    assert output == cold(site, project)
    assert b"<lastmod>" in output["sitemap.xml"]


def test_an_article_edited_while_stopped_is_the_only_page_rendered(
    site: Settings, write: Callable[[str, str], Path], project: Path
) -> None:
    write("tin-4.md", article("Tin số 4 (đã sửa)", 4))
    parsed, rendered, output = start(site)
    assert (parsed, rendered) == (1, 1)
    assert output == cold(site, project)
    assert "Tin số 4 (đã sửa)" in output["articles/tin-4/index.html"].decode()
    # the archive pages that held it are made again (it moved to a new category, "Thông báo");
    # those of the other category are not
    assert {"page/1", "categories/lich-tiep-cong-dan/page/1"} <= set(GROUPS)
    assert not [g for g in GROUPS if g.startswith("categories/tin/")]


@pytest.mark.parametrize("path", ["rss.xml", "page/1/index.html", "categories/tin/atom.xml"])
@pytest.mark.parametrize("how", ["edited", "removed"])
def test_a_list_or_feed_changed_in_the_output_is_written_again(
    site: Settings, project: Path, path: str, how: str
) -> None:
    target = project / "public" / path
    assert target.is_file()
    if how == "edited":
        target.write_bytes(target.read_bytes().replace(b"Tin", b"Tun"))
    else:
        target.unlink()
    parsed, rendered, output = start(site)
    assert (parsed, rendered) == (0, 0)
    assert len(GROUPS) == 1
    assert output == cold(site, project)


@pytest.mark.parametrize("how", ["edited", "removed"])
def test_a_page_changed_in_the_output_is_written_again(
    site: Settings, project: Path, how: str
) -> None:
    page = project / "public" / "articles" / "tin-7" / "index.html"
    if how == "edited":
        page.write_bytes(b"<p>someone edited the output</p>")
    else:
        page.unlink()
    parsed, rendered, output = start(site)
    assert (parsed, rendered) == (0, 1)
    assert output == cold(site, project)


def test_a_changed_template_renders_every_page(site: Settings, project: Path) -> None:
    [template] = [
        t for t in (project / "templates").glob("*.j2") if "</footer>" in t.read_text("utf-8")
    ]
    template.write_text(
        template.read_text("utf-8").replace("</footer>", "<!-- mới --></footer>"), "utf-8"
    )
    _, rendered, output = start(site)
    assert rendered == 12
    assert output == cold(site, project)
    assert b"<!-- m" in output["articles/tin-1/index.html"]


def test_a_changed_site_setting_renders_every_page(site: Settings, project: Path) -> None:
    config = project / "config" / "bantin.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("Cổng thông tin tỉnh", "Cổng thông tin mới"),
        encoding="utf-8",
    )
    changed = load_settings(config)
    _, rendered, output = start(changed)
    assert rendered == 12
    assert output == cold(changed, project)


def test_a_new_bantin_renders_every_page(
    site: Settings, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index, "_code", "another release")
    parsed, rendered, output = start(site)
    assert (parsed, rendered) == (12, 12)
    assert output == cold(site, project)


@pytest.mark.parametrize("which", ["scan.index", "build.index"])
def test_a_damaged_index_means_a_cold_build(site: Settings, project: Path, which: str) -> None:
    saved = site.state.cache_dir / which
    raw = saved.read_bytes()
    saved.write_bytes(raw[:-7] + b"garbage")
    parsed, rendered, output = start(site)
    # each index stands alone: the other one still saves its work
    assert (parsed, rendered) == ((12, 0) if which == "scan.index" else (0, 12))
    assert output == cold(site, project)


def test_bantin_build_keeps_its_indexes_in_the_cache_folder(
    project: Path, write: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    write("a.md", article("Một", 20))
    config = str(project / "config" / "bantin.toml")
    assert cli.main(["--config", config, "build"]) == 0
    assert (project / "var" / "cache" / "scan.index").exists()
    assert (project / "var" / "cache" / "build.index").exists()
    capsys.readouterr()
    assert cli.main(["--config", config, "build"]) == 0
    assert "0 files written" in capsys.readouterr().out
