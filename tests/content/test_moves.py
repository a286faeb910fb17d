"""A file moved or renamed with its content unchanged keeps its identity: not news again, and
the same entry id in every feed, across restarts.

Finding 12: moving article files into a sub-folder re-mailed them (the id is the path).
"""

from __future__ import annotations

import os
from pathlib import Path

import feedparser
import pytest

from service import cli

ARTICLES = {
    "lich-tiep.md": "---\ntitle: Lịch tiếp công dân\ndate: 2024-05-01\n---\nNội dung một.\n",
    "thong-bao.md": "---\ntitle: Thông báo nghỉ lễ\ndate: 2024-05-02\n---\nNội dung hai.\n",
}


def digest(project: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["--config", str(project / "config" / "bantin.toml"), "digest"]) == 0
    return capsys.readouterr().out


def guids(project: Path) -> dict[str, str]:
    feed = feedparser.parse((project / "public" / "atom.xml").read_bytes())
    return {entry.title: entry.id for entry in feed.entries}


def test_reorganising_folders_mails_nothing_and_keeps_the_feed_ids(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project / "config" / "bantin.toml"
    (project / "config" / "subscribers.toml").write_text(
        '[[subscriber]]\nemail = "hoa@example.org"\n', encoding="utf-8"
    )
    content = project / "content"
    (content / "cu.md").write_text(
        "---\ntitle: Tin cũ\ndate: 2024-04-01\n---\nx\n", encoding="utf-8"
    )
    assert "0 sent" in digest(project, capsys)  # hoa is seen: no back catalogue
    for name, text in ARTICLES.items():
        (content / name).write_text(text, encoding="utf-8")
    assert "1 sent" in digest(project, capsys)
    assert cli.main(["--config", str(config), "build"]) == 0
    before = guids(project)

    # the office files its articles by year and month, and renames one
    (content / "2024" / "05").mkdir(parents=True)
    os.replace(content / "lich-tiep.md", content / "2024" / "05" / "lich-tiep-cong-dan.md")
    os.replace(content / "thong-bao.md", content / "2024" / "05" / "thong-bao.md")
    assert "0 sent" in digest(project, capsys)
    assert cli.main(["--config", str(config), "build"]) == 0
    assert guids(project) == before

    # then edits one where it now lives: still the same article, still not news
    moved = content / "2024" / "05" / "thong-bao.md"
    moved.write_text(ARTICLES["thong-bao.md"].replace("hai", "hai (sửa)"), encoding="utf-8")
    assert "0 sent" in digest(project, capsys)
    os.replace(moved, content / "2024" / "thong-bao-nghi-le.md")  # and moves it once more
    assert "0 sent" in digest(project, capsys)
    assert cli.main(["--config", str(config), "build"]) == 0
    assert guids(project) == before

    # a genuinely new article is still news
    (content / "2024" / "moi.md").write_text(
        "---\ntitle: Tin mới\ndate: 2024-05-03\n---\nx\n", encoding="utf-8"
    )
    assert "1 sent" in digest(project, capsys)
    outbox = sorted((project / "var" / "outbox").glob("*.eml"))
    assert len(outbox) == 2
