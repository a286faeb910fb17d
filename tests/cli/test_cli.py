"""The real `bantin` command in a subprocess: summaries, exit codes, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import feedparser

Write = Callable[[str, str], Path]
GOOD = "---\ntitle: {t}\ndate: 2020-01-0{d}\n---\nNội dung.\n"


def bantin(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=project,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def traps(write: Write) -> None:
    # `bantin check` also validates the subscribers file (another feature's): give it one
    write("../config/subscribers.toml", "")
    write("a.md", GOOD.format(t="Một", d=1))
    write("b.md", GOOD.format(t="Hai", d=2))
    write("sub/no-title.md", "---\ndate: 2020-01-03\n---\nx\n")
    write("broken.md", "---\ntitle: [x\n---\n")
    write("empty.txt", "")
    write("notes.rst", "ignored")
    write("a.md~", "ignored backup")


def test_build_succeeds_with_bad_articles(project: Path, write: Write) -> None:
    traps(write)
    done = bantin(project, "build")
    assert done.returncode == 0, done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("bantin build:")]
    assert len(summary) == 1
    assert "2 articles published" in summary[0]
    assert "3 skipped" in summary[0]
    for name in ("sub/no-title.md", "broken.md", "empty.txt"):
        assert name in done.stderr
    assert "notes.rst" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    feed = feedparser.parse((project / "public/rss.xml").read_bytes())
    assert feed.bozo == 0
    assert [e.title for e in feed.entries] == ["Hai", "Một"]
    again = bantin(project, "build")
    assert "0 files written" in again.stdout


def test_check_reports_every_problem_and_exits_1(project: Path, write: Write) -> None:
    traps(write)
    done = bantin(project, "check")
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if line.startswith("content/")]
    assert len(lines) == 3, done.stdout
    assert any("no-title.md" in line and "title" in line for line in lines)
    assert any("broken.md" in line and "YAML" in line for line in lines)
    assert any("empty.txt" in line and "empty" in line for line in lines)
    problems = [line for line in done.stdout.splitlines() if not line.startswith("warning:")]
    assert f"{len(problems)} problems" in done.stderr
    assert "Traceback" not in done.stderr


def test_check_passes_on_a_clean_project(project: Path, write: Write) -> None:
    write("a.md", GOOD.format(t="Một", d=1))
    write("../config/subscribers.toml", "")
    done = bantin(project, "check")  # the default sender, bantin@localhost, is usable
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fine" in done.stdout


def test_check_reports_a_broken_template(project: Path, write: Write) -> None:
    write("a.md", GOOD.format(t="Một", d=1))
    (project / "templates" / "index.html.j2").write_text("{% for %}", encoding="utf-8")
    done = bantin(project, "check")
    assert done.returncode == 1
    assert "index.html.j2" in done.stdout


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_config_is_one_line(project: Path) -> None:
    one_line_error(
        bantin(project, "--config", "khong-co.toml", "build"), "khong-co.toml", "not found"
    )


def test_unknown_key_is_one_line(project: Path) -> None:
    config = project / "config" / "bantin.toml"
    config.write_text(config.read_text(encoding="utf-8") + "tittle = 'x'\n", encoding="utf-8")
    one_line_error(bantin(project, "check"), "bantin.toml:5", "site.tittle")


def test_bad_base_url_is_one_line(project: Path) -> None:
    (project / "config" / "bantin.toml").write_text(
        '[site]\ntitle = "x"\nbase_url = "tinh.example.gov.vn"\n', encoding="utf-8"
    )
    one_line_error(bantin(project, "build"), "bantin.toml:3", "base_url")


def test_missing_source_dir_is_one_line(project: Path) -> None:
    (project / "content").rmdir()
    one_line_error(bantin(project, "build"), "content", "source directory")


def test_config_from_env_and_secret_not_printed(project: Path) -> None:
    other = project / "khac.toml"
    other.write_text('[site]\ntitle = "x"\nbase_url = "https://x.vn"\n[smtp]\nport = 0\n')
    done = bantin(
        project, "build", env={"BANTIN_CONFIG": str(other), "BANTIN_SMTP__PASSWORD": "bí-mật-99"}
    )
    one_line_error(done, "khac.toml", "smtp.port")
    assert "bí-mật-99" not in done.stderr + done.stdout


def test_verbose_shows_the_traceback(project: Path) -> None:
    done = bantin(project, "-v", "--config", "khong-co.toml", "build")
    assert done.returncode != 0
    assert "Traceback" in done.stderr


def test_unwritable_output_is_one_line(project: Path, write: Write) -> None:
    write("a.md", GOOD.format(t="Một", d=1))
    (project / "public").write_text("not a directory")
    one_line_error(bantin(project, "build"), "public", "output_dir")


def test_check_renders_each_page_and_build_skips_the_one_that_cannot_be(
    project: Path, write: Write
) -> None:
    write("../config/subscribers.toml", "")
    write("a.md", GOOD.format(t="Một", d=1))
    row = "|" + "|".join("ô" for _ in range(40)) + "|\n"
    table = "|" + "|".join(f"c{i}" for i in range(40)) + "|\n|" + "---|" * 40 + "\n"
    write("bang.md", GOOD.format(t="Bảng", d=2) + table + row * 15_000)
    checked = bantin(project, "check")
    assert checked.returncode == 1
    assert "content/bang.md: its page cannot be rendered" in checked.stdout
    built = bantin(project, "build")
    assert built.returncode == 0, built.stderr
    assert "1 articles published, 1 skipped" in built.stdout
    assert "skipped content/bang.md: its page cannot be rendered" in built.stderr
    titles = [
        e.title for e in feedparser.parse((project / "public" / "rss.xml").read_bytes()).entries
    ]
    assert titles == ["Một"]


def test_check_names_the_schedule_row_that_cannot_be_read(project: Path, write: Write) -> None:
    write("../config/subscribers.toml", "")
    write(
        "lich.md",
        "---\ntitle: Lịch tiếp công dân\ndate: 2020-01-01\n---\n"
        "| Thời gian | Địa điểm |\n|---|---|\n| 07h30, thứ Ba 15/12/2026 | Trụ sở |\n"
        "| 14h00 ngày 17/12 | Trụ sở |\n",
    )
    done = bantin(project, "check")
    assert done.returncode == 1
    [line] = [line for line in done.stdout.splitlines() if line.startswith("content/")]
    assert line.startswith("content/lich.md: schedule table row 2 (14h00 ngày 17/12 | Trụ sở)")
    assert "no event is published" in line
    built = bantin(project, "build")  # the article itself is published all the same
    assert built.returncode == 0 and "1 articles published" in built.stdout
