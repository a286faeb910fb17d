"""Sequences of edits through the incremental scanner publish exactly what a fresh scan does
(a fresh scan given what the ledger knows, as a restarted service is).

Single-step tests missed that an idle rescan after a change lost the scan's draft count, so the
next change published drafts. Here Hypothesis drives random sequences of adds, edits, draft
toggles, deletions, moves, duplicate ids and slugs, future dates coming due and idle rescans
through one long-lived Source, and after every step compares it with a Source that has never
seen the tree before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.content.scan import Scan
from service.content.source import Source

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
START = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
NAMES = ["a.md", "b.md", "sub/c.md", "sub/deep/d.md", "e.txt"]
CATEGORIES = ["Tin tức", "Thông báo", "Lịch tiếp công dân"]


def _markdown(title: str, date: datetime, draft: bool, category: str, ident: str | None) -> str:
    lines = ["---", f"title: {title}", f"date: {date.isoformat()}", f"category: {category}"]
    if draft:
        lines.append("draft: true")
    if ident:
        lines.append(f"id: {ident}")
    return "\n".join([*lines, "---", f"Nội dung của {title}.", ""])


def _portal(title: str, date: datetime, category: str) -> str:
    local = date.astimezone(ZONE)
    return f"{category}\nThứ hai {local:%d/%m/%Y %H:%M}\n{title}\nĐoạn văn.\nNguyễn Văn A\n"


article_op = st.fixed_dictionaries(
    {
        "op": st.just("write"),
        "name": st.sampled_from(NAMES),
        "title": st.sampled_from(["Tin một", "Tin hai", "Thông báo ba", "Lịch tiếp"]),
        # hours from the moment of the step: negative = published, positive = scheduled
        "hours": st.integers(-72, 6),
        "draft": st.booleans(),
        "category": st.sampled_from(CATEGORIES),
        # a shared explicit id makes duplicates: the first path in sort order wins
        "ident": st.sampled_from([None, None, "trung-id"]),
    }
)
broken_op = st.fixed_dictionaries({"op": st.just("break"), "name": st.sampled_from(NAMES)})
delete_op = st.fixed_dictionaries({"op": st.just("delete"), "name": st.sampled_from(NAMES)})
move_op = st.fixed_dictionaries(
    {"op": st.just("move"), "name": st.sampled_from(NAMES), "to": st.sampled_from(NAMES)}
)
idle_op = st.fixed_dictionaries({"op": st.just("idle")})
clock_op = st.fixed_dictionaries({"op": st.just("clock"), "hours": st.integers(1, 8)})
steps = st.lists(
    st.one_of(article_op, broken_op, delete_op, move_op, idle_op, idle_op, clock_op),
    min_size=1,
    max_size=25,
)


class Tree:
    """A real directory whose every write gets a new mtime, as edits on disk do."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tick = 1_700_000_000_000_000_000

    def _stamp(self, path: Path) -> None:
        self.tick += 1_000_000_000
        os.utime(path, ns=(self.tick, self.tick))

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        self._stamp(path)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def move(self, name: str, to: str) -> None:
        source, target = self.root / name, self.root / to
        if name == to or not source.exists():
            return
        if name.rsplit(".", 1)[1] != to.rsplit(".", 1)[1]:
            return  # a Markdown file renamed .txt is an edit, covered by write
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def published_view(scan: Scan, now: datetime) -> dict[str, object]:
    """Everything a build or a digest reads from a scan, as plain values."""
    return {
        "published": [(a.id, a.title, a.date, a.category.slug) for a in scan.published(now)],
        "by_category": [
            (category.slug, [a.id for a in items])
            for category, items in scan.recent_by_category(now, 50)
        ],
        "next_due": scan.next_due(now),
        "articles": [(a.id, a.draft) for a in scan.articles],
        "problems": sorted((p.path, p.reason) for p in scan.problems),
    }


def apply(tree: Tree, step: dict[str, object], now: datetime) -> datetime:
    op = step["op"]
    if op == "write":
        name = str(step["name"])
        date = now + timedelta(hours=int(step["hours"]))  # type: ignore[call-overload]
        if name.endswith(".txt"):
            text = _portal(str(step["title"]), date, str(step["category"]))
        else:
            ident = step["ident"]
            text = _markdown(
                str(step["title"]),
                date,
                bool(step["draft"]),
                str(step["category"]),
                None if ident is None else str(ident),
            )
        tree.write(name, text)
    elif op == "break":
        tree.write(str(step["name"]), "---\ntitle: [hỏng\n---\n")
    elif op == "delete":
        tree.delete(str(step["name"]))
    elif op == "move":
        tree.move(str(step["name"]), str(step["to"]))
    elif op == "clock":
        now += timedelta(hours=int(step["hours"]))  # type: ignore[call-overload]
    return now


@settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
def test_every_sequence_publishes_what_a_fresh_scan_publishes(
    steps: list[dict[str, object]],
) -> None:
    root = Path(tempfile.mkdtemp(prefix="bantin-seq-"))
    try:
        tree = Tree(root)
        now = START
        source = Source(root, ZONE)
        # what the ledger knows of files seen so far (fingerprint -> id), as a restarted
        # service hands it to its first scan: moved files keep their identity in both
        known = {a.fingerprint: a.id for a in source.scan().articles}
        for number, step in enumerate(steps, start=1):
            now = apply(tree, step, now)
            incremental = source.scan()
            known.update((a.fingerprint, a.id) for a in incremental.articles)
            fresh = Source(root, ZONE, known).scan()
            assert published_view(incremental, now) == published_view(fresh, now), (
                f"after step {number} of {steps[:number]}"
            )
    finally:
        shutil.rmtree(root)


def test_a_draft_stays_unpublished_after_an_idle_rescan_and_a_later_edit(tmp_path: Path) -> None:
    """The sequence `bantin run` went through with the sample content."""
    tree = Tree(tmp_path)
    tree.write(
        "ban-nhap.md", _markdown("Bản nháp", START - timedelta(days=1), True, "Tin tức", None)
    )
    tree.write("tin.md", _markdown("Tin", START - timedelta(days=2), False, "Tin tức", None))
    source = Source(tmp_path, ZONE)
    assert [a.title for a in source.scan().published(START)] == ["Tin"]
    assert [a.title for a in source.scan().published(START)] == ["Tin"]  # idle
    tree.write("tin.md", _markdown("Tin (sửa)", START - timedelta(days=2), False, "Tin tức", None))
    assert [a.title for a in source.scan().published(START)] == ["Tin (sửa)"]
    assert [a.title for a in source.scan().published(START)] == ["Tin (sửa)"]  # idle again
