"""The .gz beside each text file of the output, for nginx's gzip_static: written with its file,
the gzip of exactly its bytes, the same on every host, stamped with its file's mtime, untouched
while the file is, and gone with it."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.content.source import Source
from service.publish.build import Builder, BuildReport
from service.publish.output import MANIFEST, Output, gzip_bytes
from service.settings import Settings

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
Write = Callable[[str, str], Path]


def article(title: str, day: int, category: str = "Thông báo", **extra: str) -> str:
    lines = "".join(f"{k}: {v}\n" for k, v in extra.items())
    return (
        f"---\ntitle: {title}\ndate: 2026-11-{day:02d}\ncategory: {category}\n{lines}---\n"
        + "Nội dung của bài, đủ dài để gzip làm nó nhỏ đi. " * 20
        + "\n"
    )


def build(settings: Settings, *, index: bool = False) -> BuildReport:
    """A fresh source and builder, as `bantin build` (``index``: with the build index, as a
    restart of `bantin run` has)."""
    state = settings.state
    source = Source(
        settings.source.dir, settings.site.zone, index=state.scan_index if index else None
    )
    builder = Builder(
        settings, settings.site.templates_dir, index=state.build_index if index else None
    )
    return builder.build(source.scan(), NOW)


def stamps(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def public(project: Path) -> Path:
    return project / "public"


@pytest.fixture
def site(settings: Settings, write: Write) -> Settings:
    write("a.md", article("Lịch tiếp công dân tháng 12", 20, "Lịch tiếp công dân"))
    write("b.md", article("Thông báo nghỉ lễ", 21))
    return settings


def test_every_text_file_has_its_gzip_beside_it_and_nothing_else_does(
    site: Settings, public: Path
) -> None:
    report = build(site)
    assert report.written
    for relative in report.written:
        path = public / relative
        packed = path.with_name(path.name + ".gz")
        assert packed.is_file(), relative
        data = packed.read_bytes()
        assert gzip.decompress(data) == path.read_bytes(), relative
        assert data == gzip_bytes(path.read_bytes())
        assert len(data) < path.stat().st_size
        # nginx's Last-Modified (and the mtime half of its ETag) come from the .gz itself
        assert packed.stat().st_mtime_ns == path.stat().st_mtime_ns, relative
        # the header names no file and no time: every host writes the same bytes
        assert data[3] == 0  # FLG: no FNAME, no FEXTRA, no FCOMMENT
        assert data[4:8] == b"\0\0\0\0"  # MTIME
    gz = {p.name for p in public.rglob("*.gz")}
    assert not {name for name in gz if name.endswith(".gz.gz")}
    assert f"{MANIFEST}.gz" not in gz
    assert report.written and "robots.txt.gz" in gz
    manifest = (public / MANIFEST).read_text(encoding="utf-8")
    assert ".gz" not in manifest  # the .gz follow their files; the manifest lists the files


def test_hosts_building_the_same_site_write_the_same_gzip_files(
    site: Settings, public: Path, project: Path
) -> None:
    build(site)
    elsewhere = project / "host-b"
    other = site.model_copy(
        update={"feeds": site.feeds.model_copy(update={"output_dir": elsewhere})}
    )
    Builder(other, site.site.templates_dir).build(
        Source(site.source.dir, site.site.zone).scan(), NOW
    )
    ours = {str(p.relative_to(public)): p.read_bytes() for p in public.rglob("*.gz")}
    theirs = {str(p.relative_to(elsewhere)): p.read_bytes() for p in elsewhere.rglob("*.gz")}
    assert ours and ours == theirs


def test_an_unchanged_file_keeps_its_gzip_untouched_an_edited_one_gets_a_new_one(
    site: Settings, write: Write, public: Path
) -> None:
    build(site)
    before = stamps(public)
    assert build(site).written == ()
    assert stamps(public) == before  # the .gz files too: nothing written
    page = public / "articles" / "b" / "index.html"
    edited = write("b.md", article("Thông báo nghỉ lễ Tết", 21))
    os.utime(edited, ns=(1_800_000_000_000_000_000,) * 2)
    report = build(site)
    assert "articles/b/index.html" in report.written
    packed = public / "articles" / "b" / "index.html.gz"
    assert gzip.decompress(packed.read_bytes()) == page.read_bytes()
    assert "Tết".encode() in page.read_bytes()
    assert packed.stat().st_mtime_ns == page.stat().st_mtime_ns
    after = stamps(public)
    changed = {p for p in after if after[p] != before.get(p)}
    assert changed - {MANIFEST} == {*report.written, *(p + ".gz" for p in report.written)}


def test_a_removed_file_takes_its_gzip_along(site: Settings, project: Path, public: Path) -> None:
    build(site)
    assert (public / "articles" / "a" / "index.html.gz").is_file()
    (project / "content" / "a.md").unlink()
    report = build(site)
    assert "articles/a/index.html" in report.removed
    assert not (public / "articles" / "a").exists()  # the .gz gone, the folder pruned
    category = public / "categories" / "lich-tiep-cong-dan"
    assert not category.exists()
    left = {str(p.relative_to(public)) for p in public.rglob("*.gz")}
    files = {str(p.relative_to(public)) for p in public.rglob("*") if p.is_file()}
    assert {p.removesuffix(".gz") for p in left} <= files


def test_missing_or_stale_gzip_files_are_written_without_rewriting_their_files(
    site: Settings, public: Path
) -> None:
    """As after an upgrade from a bantin that wrote no .gz, or an operator who deleted them."""
    build(site, index=True)
    pages = ["index.html", "articles/a/index.html", "rss.xml"]
    for relative in pages:
        (public / (relative + ".gz")).unlink()
    stale = public / "atom.xml.gz"
    stale.write_bytes(gzip_bytes(b"<feed>old</feed>"))
    before = {p: (public / p).stat().st_mtime_ns for p in [*pages, "atom.xml"]}
    report = build(site, index=True)  # a restart: the build index vouches for the pages
    assert report.written == ()
    for relative in [*pages, "atom.xml"]:
        path = public / relative
        assert path.stat().st_mtime_ns == before[relative]  # the file itself untouched
        packed = path.with_name(path.name + ".gz")
        assert gzip.decompress(packed.read_bytes()) == path.read_bytes()
        assert packed.stat().st_mtime_ns == before[relative]


def test_a_warm_restart_rewrites_no_gzip_file(site: Settings, public: Path) -> None:
    build(site, index=True)
    before = stamps(public)
    report = build(site, index=True)
    assert report.written == ()
    assert stamps(public) == before


def test_a_file_gzip_would_enlarge_gets_none_and_loses_a_stale_one(tmp_path: Path) -> None:
    output = Output(tmp_path)
    output.write("tiny.txt", b"a")
    assert not (tmp_path / "tiny.txt.gz").exists()
    body = "Lịch tiếp công dân. ".encode() * 100
    output.write("x.txt", body)
    assert (tmp_path / "x.txt.gz").read_bytes() == gzip_bytes(body)
    output.write("x.txt", b"x")  # now tiny: its old .gz would be served for it
    assert not (tmp_path / "x.txt.gz").exists()


def test_images_and_compressed_files_get_no_gzip(tmp_path: Path) -> None:
    output = Output(tmp_path)
    noise = bytes(range(256)) * 64  # compressible bytes: only the name decides
    for name in ("logo.png", "anh.jpg", "bai.pdf", "rss.xml.gz", "feed.json"):
        output.write(name, noise)
    assert sorted(p.name for p in tmp_path.glob("*.gz")) == ["feed.json.gz", "rss.xml.gz"]
    assert (tmp_path / "rss.xml.gz").read_bytes() == noise  # written as given, not wrapped


def test_a_gzip_that_cannot_be_written_leaves_no_stale_one_and_is_caught_up(
    tmp_path: Path,
) -> None:
    output = Output(tmp_path)
    body = b"<p>x</p>" * 500
    output.write("a/index.html", body)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["index.html", "index.html.gz"]
    # the .gz's temporary file cannot be made (a directory is in its way)
    blocker = tmp_path / "a" / f".index.html.gz.{os.getpid()}.part"
    blocker.mkdir()
    with pytest.raises(OSError):
        output.write("a/index.html", body + b"more")
    assert (tmp_path / "a" / "index.html").read_bytes() == body + b"more"
    # the old .gz is gone rather than sent for the new file: nginx sends the file itself
    assert not (tmp_path / "a" / "index.html.gz").exists()
    blocker.rmdir()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["index.html"]
    assert output.write("a/index.html", body + b"more") is False  # the file is as wanted...
    packed = (tmp_path / "a" / "index.html.gz").read_bytes()
    assert gzip.decompress(packed) == body + b"more"  # ...and its .gz caught up


def test_an_operator_robots_txt_loses_bantins_gzip_beside_it(site: Settings, public: Path) -> None:
    build(site)
    assert (public / "robots.txt.gz").is_file()
    (public / "robots.txt").write_text("User-agent: *\nDisallow: /private/\n" * 20)
    build(site)
    # nginx would send bantin's robots.txt.gz for the operator's file to every gzip client
    assert not (public / "robots.txt.gz").exists()
    mine = (public / "robots.txt").read_bytes()
    (public / "robots.txt.gz").write_bytes(gzip.compress(mine))  # the operator's own, matching
    build(site)
    assert gzip.decompress((public / "robots.txt.gz").read_bytes()) == mine


def test_a_copied_output_directory_is_not_taken_for_ours(site: Settings, project: Path) -> None:
    """shutil.copytree keeps mtimes: the .gz still match their files, and nothing is rewritten."""
    build(site)
    copy = project / "copy"
    shutil.copytree(project / "public", copy)
    other = site.model_copy(update={"feeds": site.feeds.model_copy(update={"output_dir": copy})})
    before = stamps(copy)
    report = Builder(other, site.site.templates_dir).build(
        Source(site.source.dir, site.site.zone).scan(), NOW
    )
    assert report.written == ()
    assert stamps(copy) == before
