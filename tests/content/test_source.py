"""The articles directory: bad files reported by name, duplicates resolved, rescans cheap."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from service.content import source as sources
from service.content.source import Source
from service.errors import ArticleError, ConfigError

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
Write = Callable[[str, str], Path]


def article(title: str = "Bài", date: str = "2026-11-20", extra: str = "") -> str:
    return f"---\ntitle: {title}\ndate: {date}\n{extra}---\nNội dung {title}.\n"


def scan_of(root: Path) -> sources.Scan:
    return Source(root, ZONE).scan()


def problems(scan: sources.Scan) -> dict[str, str]:
    return {p.path: p.reason for p in scan.problems}


@pytest.fixture
def content(project: Path) -> Path:
    return project / "content"


@pytest.fixture
def parse_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every parser call, by source path, through the PARSERS table the scanner uses."""
    calls: list[str] = []
    for ext, parser in list(sources.PARSERS.items()):

        def counting(text: str, source: str, zone: ZoneInfo, _parser: Any = parser) -> Any:
            calls.append(source)
            return _parser(text, source, zone)

        monkeypatch.setitem(sources.PARSERS, ext, counting)
    return calls


def test_a_directory_full_of_traps(content: Path, write: Write) -> None:
    write("good.md", article("Tốt"))
    write("sub/dir/deep.md", article("Sâu", "2026-11-21"))
    write("portal.txt", "Thông báo\nThứ tư 25/11/2026\nTiêu đề cổng\nĐoạn một.\nNguyễn Nga\n")
    (content / "latin1.md").write_bytes(article("Tiêu đề").encode("cp1258", "replace"))
    (content / "latin1b.md").write_bytes(
        "---\ntitle: caf\xe9\ndate: 2026-11-20\n---\n".encode("latin-1")
    )
    (content / "bom-crlf.md").write_bytes(
        b"\xef\xbb\xbf" + article("BOM CRLF", "2026-11-19").replace("\n", "\r\n").encode()
    )
    write("empty.md", "")
    write("no-front.md", "Chỉ có nội dung.\n")
    write("no-title.md", "---\ndate: 2026-11-20\n---\nx\n")
    write("no-date.md", "---\ntitle: Không ngày\n---\nx\n")
    write("bad-date.md", article("Ngày sai", "32/13/2026"))
    write("broken-yaml.md", "---\ntitle: [oops\ndate: 2026-11-20\n---\nx\n")
    write("empty.txt", "")
    # silently ignored: hidden, editor backups and locks, other extensions
    for name in (".hidden.md", "good.md~", ".good.md.swp", "x.swp", ".#good.md", "#good.md#",
                 "notes.rst", "image.png", "README", "x.md.tmp"):  # fmt: skip
        write(name, "---\ntitle: [broken\n")
    write(".git/config.md", "---\ntitle: [broken\n")
    scan = scan_of(content)
    assert sorted(a.source for a in scan.articles) == [
        "bom-crlf.md",
        "good.md",
        "portal.txt",
        "sub/dir/deep.md",
    ]
    found = problems(scan)
    assert sorted(found) == [
        "bad-date.md",
        "broken-yaml.md",
        "empty.md",
        "empty.txt",
        "latin1.md",
        "latin1b.md",
        "no-date.md",
        "no-front.md",
        "no-title.md",
    ]
    assert "UTF-8" in found["latin1b.md"]
    assert "0xe9" in found["latin1b.md"]
    assert "UTF-8" in found["latin1.md"]
    assert "title" in found["no-title.md"]
    assert "date" in found["no-date.md"]
    assert "date" in found["bad-date.md"]
    assert "YAML" in found["broken-yaml.md"]
    assert "empty" in found["empty.md"]
    assert "front matter" in found["no-front.md"]
    for problem in scan.problems:
        assert str(problem).startswith(problem.path + ": ")
    bom = next(a for a in scan.articles if a.source == "bom-crlf.md")
    assert bom.title == "BOM CRLF"
    assert bom.id == "bom-crlf"
    assert "\r" not in bom.content_html


def test_articles_are_newest_first_with_a_stable_tie_break(write: Write, content: Path) -> None:
    write("b.md", article("B", "2026-11-20"))
    write("a.md", article("A", "2026-11-20"))
    write("c.md", article("C", "2026-11-22T01:00:00+00:00"))
    write("d.md", article("D", "22/11/2026 07:59"))  # 00:59 UTC, earlier than C
    assert [a.title for a in scan_of(content).articles] == ["C", "D", "B", "A"]


def test_duplicate_id_first_sorted_path_wins_and_the_other_is_named(
    write: Write, content: Path
) -> None:
    write("a.txt", "Thông báo\nThứ hai 23/11/2026\nBản văn bản\nThân.\n")
    write("a.md", article("Bản markdown"))
    write("x/one.md", article("Một", extra="id: chung\n"))
    write("w/two.md", article("Hai", extra="id: chung\n"))
    for _ in range(3):
        scan = scan_of(content)
        titles = {a.id: a.title for a in scan.articles}
        assert titles == {"a": "Bản markdown", "chung": "Hai"}
        found = problems(scan)
        assert sorted(found) == ["a.txt", "x/one.md"]
        assert "a.md" in found["a.txt"]
        assert "'a'" in found["a.txt"]
        assert "w/two.md" in found["x/one.md"]


def test_duplicate_slug_is_reported(write: Write, content: Path) -> None:
    write("2025/thong-bao.md", article("Cũ"))
    write("2026/thong-bao.md", article("Mới"))
    write("khac.md", article("Khác", extra="slug: Thông báo\n"))
    scan = scan_of(content)
    assert [a.source for a in scan.articles] == ["2025/thong-bao.md"]
    found = problems(scan)
    assert sorted(found) == ["2026/thong-bao.md", "khac.md"]
    assert "slug 'thong-bao'" in found["khac.md"]
    assert "2025/thong-bao.md" in found["2026/thong-bao.md"]


def test_symlinks(tmp_path: Path, write: Write, content: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text(article("Bí mật"), encoding="utf-8")
    write("real/inside.md", article("Bên trong"))
    (content / "escape.md").symlink_to(outside / "secret.md")
    (content / "escape-dir").symlink_to(outside, target_is_directory=True)
    (content / "dangling.md").symlink_to(tmp_path / "nowhere.md")
    (content / "alias.md").symlink_to(content / "real" / "inside.md")
    (content / "linked").symlink_to(content / "real", target_is_directory=True)
    (content / "real" / "loop").symlink_to(content, target_is_directory=True)
    scan = scan_of(content)
    found = problems(scan)
    assert "escape.md" in found
    assert "outside" in found["escape.md"]
    assert "escape-dir" in found
    assert "dangling.md" in found
    titles = [a.title for a in scan.articles]
    assert "Bí mật" not in titles
    assert "Bên trong" in titles
    assert "alias.md" in {a.source for a in scan.articles}  # a symlink inside is followed
    for problem in scan.problems:
        assert "secret" not in problem.path


def test_drafts_and_future_articles_are_scanned_but_not_published(
    write: Write, content: Path
) -> None:
    write("draft.md", article("Nháp", extra="draft: true\n"))
    write("future.md", article("Sắp tới", "2026-11-27T10:01:00+07:00"))
    write("now.md", article("Đúng giờ", "2026-11-27T10:00:00+07:00"))
    scan = scan_of(content)
    assert {a.title for a in scan.articles} == {"Nháp", "Sắp tới", "Đúng giờ"}
    assert [a.title for a in scan.published(NOW)] == ["Đúng giờ"]


def test_unchanged_rescan_parses_nothing(
    write: Write, content: Path, parse_calls: list[str]
) -> None:
    for i in range(20):
        write(f"2026/{i:02d}.md", article(f"Bài {i}"))
    write("bad.md", "---\ntitle: [x\n")
    write("p.txt", "Tin\nThứ hai 23/11/2026\nT\nB.\n")
    source = Source(content, ZONE)
    first = source.scan()
    assert len(parse_calls) == 22
    assert len(first.changed) == 22
    parse_calls.clear()
    for path in content.rglob("*.*"):
        path.chmod(0)  # as root this does not stop reads; the call count is the proof
    again = source.scan()
    assert parse_calls == []
    assert again.changed == ()
    assert again.articles == first.articles
    assert all(a is b for a, b in zip(again.articles, first.articles, strict=True))
    assert [str(p) for p in again.problems] == [str(p) for p in first.problems]


def test_changed_file_reparses_just_that_file(
    write: Write, content: Path, parse_calls: list[str]
) -> None:
    for i in range(5):
        write(f"{i}.md", article(f"Bài {i}"))
    source = Source(content, ZONE)
    before = {a.source: a for a in source.scan().articles}
    parse_calls.clear()
    path = write("3.md", article("Bài ba, sửa lại"))
    os.utime(path, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    scan = source.scan()
    assert parse_calls == ["3.md"]
    assert scan.changed == ("3.md",)
    after = {a.source: a for a in scan.articles}
    assert after["3.md"].title == "Bài ba, sửa lại"
    assert after["3.md"].id == before["3.md"].id
    assert after["0.md"] is before["0.md"]


def test_same_size_same_mtime_rewrite_is_still_seen_via_inode(
    write: Write, content: Path, parse_calls: list[str]
) -> None:
    path = write("a.md", article("AAAA"))
    stat = path.stat()
    source = Source(content, ZONE)
    source.scan()
    parse_calls.clear()
    replacement = content / "a.md.new"
    replacement.write_text(article("BBBB"), encoding="utf-8")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)  # what editors and rsync do: a new inode
    scan = source.scan()
    assert parse_calls == ["a.md"]
    assert [a.title for a in scan.articles] == ["BBBB"]


def test_removed_and_added_files(write: Write, content: Path, parse_calls: list[str]) -> None:
    write("a.md", article("A"))
    write("b.md", article("B"))
    write("bad.md", "")
    source = Source(content, ZONE)
    source.scan()
    parse_calls.clear()
    (content / "b.md").unlink()
    (content / "bad.md").unlink()
    write("c.md", article("C"))
    scan = source.scan()
    assert parse_calls == ["c.md"]
    assert scan.changed == ("b.md", "bad.md", "c.md")
    assert sorted(a.title for a in scan.articles) == ["A", "C"]
    assert scan.problems == ()


def test_fixing_a_bad_file_publishes_it(write: Write, content: Path) -> None:
    write("a.md", "---\ntitle: A\n---\n")
    source = Source(content, ZONE)
    assert problems(source.scan()) == {"a.md": problems(source.scan())["a.md"]}
    path = write("a.md", article("A"))
    os.utime(path, ns=(1_800_000_000_000_000_000, 1_800_000_000_000_000_000))
    scan = source.scan()
    assert scan.problems == ()
    assert [a.title for a in scan.articles] == ["A"]


def test_duplicate_loser_wins_once_the_winner_is_removed(write: Write, content: Path) -> None:
    write("a.md", article("MD"))
    write("a.txt", "Tin\nThứ hai 23/11/2026\nTXT\nThân.\n")
    source = Source(content, ZONE)
    assert [a.title for a in source.scan().articles] == ["MD"]
    (content / "a.md").unlink()
    scan = source.scan()
    assert [a.title for a in scan.articles] == ["TXT"]
    assert scan.problems == ()


def test_missing_source_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        scan_of(tmp_path / "khong-co")
    message = str(caught.value)
    assert "khong-co" in message
    assert "source directory" in message
    assert "\n" not in message


def test_source_directory_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "content").write_text("x")
    with pytest.raises(ConfigError, match="source directory"):
        scan_of(tmp_path / "content")


def test_source_directory_removed_between_scans_is_a_config_error(
    write: Write, content: Path
) -> None:
    write("a.md", article("A"))
    source = Source(content, ZONE)
    source.scan()
    for path in sorted(content.rglob("*"), reverse=True):
        path.unlink()
    content.rmdir()
    with pytest.raises(ConfigError):
        source.scan()


def test_unreadable_source_directory_is_a_config_error(
    content: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir
    root = os.path.realpath(content)

    def refusing(path: Any) -> Any:
        # the tests run as root, where chmod 000 does not stop reads: refuse like the kernel
        if os.fspath(path) == root:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(sources.os, "scandir", refusing)
    with pytest.raises(ConfigError) as caught:
        scan_of(content)
    assert "Permission denied" in str(caught.value)
    assert str(content) in str(caught.value)


def test_two_links_to_one_directory_give_the_same_ids_every_time(
    write: Write, content: Path
) -> None:
    write("real/x.md", article("X"))
    for name in ("zz", "aa", "mm"):
        (content / name).symlink_to(content / "real", target_is_directory=True)
    scan = scan_of(content)
    assert [a.source for a in scan.articles] == ["aa/x.md"]
    assert sorted(problems(scan)) == ["real/x.md"]


def test_huge_file_is_reported_not_read_whole(write: Write, content: Path) -> None:
    path = write("huge.md", article("Lớn"))
    with path.open("ab") as file:
        file.truncate(sources.MAX_FILE_BYTES + 10)  # sparse: cheap to make
    write("ok.md", article("Nhỏ"))
    scan = scan_of(content)
    assert [a.title for a in scan.articles] == ["Nhỏ"]
    assert "larger than" in problems(scan)["huge.md"]


def test_edits_patch_the_scan_exactly_as_a_fresh_scan_would(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Edits that keep id and slug take the patching path; the result must equal a full one."""
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    content = project / "content"
    for i in range(30):
        (content / f"bai-{i}.md").write_text(
            f"---\ntitle: Bài {i}\ndate: 2026-11-{i % 28 + 1:02d}\n---\nThân {i}.\n",
            encoding="utf-8",
        )
    (content / "bai-0-copy.md").write_text(
        "---\ntitle: Trùng\nid: bai-0\ndate: 2026-11-02\n---\n", encoding="utf-8"
    )
    source = Source(content, zone)
    source.scan()
    full_resolves: list[Source] = []
    resolve = Source._resolve

    def counting(self: Source, *args: Any) -> Any:
        full_resolves.append(self)
        return resolve(self, *args)

    monkeypatch.setattr(Source, "_resolve", counting)
    now = datetime(2026, 11, 30, tzinfo=ZoneInfo("UTC"))
    source.scan().recent_by_category(now, 5)  # made before the edits: patched along with them
    edits = [
        (3, "2026-10-01", "cũ hơn", "Tin tức"),
        (17, "2026-12-01", "mới hơn", "Tin tức"),
        (5, "2026-11-05", "như cũ", "Thông báo"),
        (8, "2026-11-09", "chuyển mục", "Lịch tiếp công dân"),
        (9, "2026-11-09", "cùng ngày", "Lịch tiếp công dân"),
    ]
    for i, date, word, section in edits:
        (content / f"bai-{i}.md").write_text(
            f"---\ntitle: Bài {i} {word}\ndate: {date}\ncategory: {section}\n---\nSửa {i}.\n",
            encoding="utf-8",
        )
        os.utime(content / f"bai-{i}.md", ns=(time.time_ns(), time.time_ns() + i))
        patched = source.scan()
        full = Source(content, zone).scan()
        assert patched.articles == full.articles
        assert [str(p) for p in patched.problems] == [str(p) for p in full.problems]
        assert patched.changed == (f"bai-{i}.md",)
        assert patched.recent_by_category(now, 5) == full.recent_by_category(now, 5)
    assert source not in full_resolves  # every edit was patched in
    assert patched.published(now) == [a for a in full.articles if a.is_published(now)]


def test_next_due_is_the_earliest_scheduled_article(project: Path) -> None:
    content = project / "content"
    for name, date, draft in [
        ("cu", "2026-11-01", "false"),
        ("sap-toi", "2026-12-05 08:00", "false"),
        ("xa-hon", "2027-01-01", "false"),
        ("nhap", "2026-12-01", "true"),
    ]:
        (content / f"{name}.md").write_text(
            f"---\ntitle: {name}\ndate: {date}\ndraft: {draft}\n---\n", encoding="utf-8"
        )
    scan = Source(content, ZoneInfo("Asia/Ho_Chi_Minh")).scan()
    now = datetime(2026, 11, 27, tzinfo=UTC)
    assert scan.next_due(now) == datetime(2026, 12, 5, 8, tzinfo=ZoneInfo("Asia/Ho_Chi_Minh"))
    assert scan.next_due(datetime(2027, 2, 1, tzinfo=UTC)) is None
    assert [a.id for a in scan.published(now)] == ["cu"]


# -- file system oddities: each is one skipped, named file; nothing blocks or crashes --------


def test_pipes_sockets_and_bad_names_are_each_one_named_problem(
    content: Path, write: Write
) -> None:
    import socket

    write("tot.md", article("Tốt"))
    os.mkfifo(content / "ong.md")  # a reader would wait for a writer forever
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(content / "o-cam.md"))
    raw = os.fsencode(content)
    with open(os.path.join(raw, b"bad\xffname.md"), "wb") as file:
        file.write(article("Tên hỏng").encode())
    os.mkdir(os.path.join(raw, b"thu-muc-\xfe"))
    with open(os.path.join(raw, b"thu-muc-\xfe", b"con.md"), "wb") as file:
        file.write(article("Con").encode())
    (content / "\x1b[31mdo\nhai dong.md").write_text("---\ntitle: [hỏng\n---\n", encoding="utf-8")
    try:
        scan = scan_of(content)
    finally:
        listener.close()
    assert [a.title for a in scan.articles] == ["Tốt"]
    found = problems(scan)
    assert "regular file" in found["ong.md"] and "regular file" in found["o-cam.md"]
    messages = sorted(str(p) for p in scan.problems)
    assert any(m.startswith("bad\\xffname.md: the file name is not valid UTF-8") for m in messages)
    assert any(m.startswith("thu-muc-\\xfe/: the file name is not valid UTF-8") for m in messages)
    escaped = next(m for m in messages if "hai dong" in m)
    assert escaped.startswith("\\x1b[31mdo\\nhai dong.md: front matter is not valid YAML")
    assert all("\x1b" not in m and "\n" not in m and m.isprintable() for m in messages)


def test_a_file_swapped_for_a_pipe_after_the_walk_is_not_waited_on(content: Path) -> None:
    os.mkfifo(content / "doi.md")
    result = sources.parse_file(content, "doi.md", ZONE)
    assert isinstance(result, ArticleError) and "regular file" in result.reason
    gone = sources.parse_file(content, "khong-con.md", ZONE)
    assert isinstance(gone, ArticleError) and "vanished" in gone.reason


def test_build_names_a_bad_file_name_and_goes_on(project: Path, write: Write) -> None:
    import subprocess
    import sys

    write("tot.md", article("Tốt"))
    with open(os.path.join(os.fsencode(project / "content"), b"x\xff.md"), "wb") as file:
        file.write(article("X").encode())
    os.mkfifo(project / "content" / "ong.md")
    result = subprocess.run(
        [sys.executable, "-m", "service", "build"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")},
    )
    assert result.returncode == 0, result.stderr
    assert "1 articles published, 2 skipped" in result.stdout
    assert "content/x\\xff.md: the file name is not valid UTF-8" in result.stderr
    assert "Traceback" not in result.stderr
