"""The scan index (content/index.py): a restart re-parses nothing, and is never wrong.

A Source given an index loads what the last scan parsed and parses only the files whose stamp
differs. Whatever happened in between (edits, moves, deletions while stopped, a damaged,
foreign or hostile index, another bantin), its scan must equal a fresh scan's, article for
article, and Hypothesis drives random sequences of edits and restarts to look for one where
it does not.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_scan_sequences import (
    START,
    ZONE,
    Tree,
    _markdown,
    apply,
    article_op,
    broken_op,
    clock_op,
    delete_op,
    idle_op,
    move_op,
    published_view,
)

from service.content import index, stored
from service.content.scan import Scan
from service.content.source import Source


def whole(scan: Scan) -> tuple[object, ...]:
    """Every article and problem of a scan, in full."""
    return tuple(scan.articles), tuple(sorted((p.path, p.reason) for p in scan.problems))


def tree_of(root: Path, count: int) -> Tree:
    tree = Tree(root)
    for n in range(count):
        date = START - timedelta(hours=n)
        tree.write(f"nam/{n % 4}/tin-{n}.md", _markdown(f"Tin {n}", date, False, "Tin tức", None))
    tree.write("hong.md", "---\ntitle: [hỏng\n---\n")
    return tree


def test_a_restart_parses_nothing_and_scans_what_a_fresh_scan_does(tmp_path: Path) -> None:
    root, saved = tmp_path / "content", tmp_path / "var" / "scan.index"
    tree_of(root, 40)
    first = Source(root, ZONE, index=saved)
    cold = first.scan()
    assert first.parsed == 41 and saved.exists()
    warm_source = Source(root, ZONE, index=saved)
    warm = warm_source.scan()
    # the file that failed to parse is read again (a fixed permission, a finished write)
    assert warm_source.parsed == 1
    assert whole(warm) == whole(cold) == whole(Source(root, ZONE).scan())


def test_the_sample_content_with_its_sessions_restarts_warm(tmp_path: Path) -> None:
    """The index's allowlist once lacked Event: every site with a reception schedule started
    cold, always, saying so in the log."""
    root, saved = tmp_path / "content", tmp_path / "scan.index"
    shutil.copytree(Path(__file__).resolve().parents[2] / "content", root)
    cold = Source(root, ZONE, index=saved).scan()
    assert any(a.events for a in cold.articles)
    warm_source = Source(root, ZONE, index=saved)
    warm = warm_source.scan()
    assert warm_source.parsed == 0
    assert whole(warm) == whole(cold)


def test_edits_while_stopped_are_parsed_and_nothing_else(tmp_path: Path) -> None:
    root, saved = tmp_path / "content", tmp_path / "scan.index"
    tree = tree_of(root, 30)
    Source(root, ZONE, index=saved).scan()
    tree.write("nam/0/tin-0.md", _markdown("Tin 0 (sửa)", START, False, "Tin tức", None))
    tree.delete("nam/1/tin-1.md")
    tree.write("moi.md", _markdown("Tin mới", START, False, "Thông báo", None))
    source = Source(root, ZONE, index=saved)
    scan = source.scan()
    assert source.parsed == 3  # the edit, the new file, the broken one
    assert whole(scan) == whole(Source(root, ZONE).scan())
    assert "Tin 0 (sửa)" in [a.title for a in scan.articles]


def _damage(saved: Path, how: str) -> None:
    raw = saved.read_bytes()
    if how == "missing":
        saved.unlink()
    elif how == "truncated":
        saved.write_bytes(raw[: len(raw) // 2])
    elif how == "flipped":
        middle = len(raw) // 2
        saved.write_bytes(raw[:middle] + bytes([raw[middle] ^ 0x40]) + raw[middle + 1 :])
    elif how == "bodies-cut":  # the articles' bodies are the file's end (content/stored.py)
        saved.write_bytes(raw[:-7])
    elif how == "body-flipped":
        saved.write_bytes(raw[:-3] + bytes([raw[-3] ^ 0x01]) + raw[-2:])
    elif how == "garbage":
        saved.write_bytes(b"\x00" * 300)
    elif how == "empty":
        saved.write_bytes(b"")


@pytest.mark.parametrize(
    "how", ["missing", "truncated", "flipped", "bodies-cut", "body-flipped", "garbage", "empty"]
)
def test_a_damaged_index_means_a_cold_scan_never_a_wrong_one(tmp_path: Path, how: str) -> None:
    root, saved = tmp_path / "content", tmp_path / "scan.index"
    tree_of(root, 20)
    Source(root, ZONE, index=saved).scan()
    _damage(saved, how)
    source = Source(root, ZONE, index=saved)
    assert whole(source.scan()) == whole(Source(root, ZONE).scan())
    assert source.parsed == 21
    assert Source(root, ZONE, index=saved).scan() and saved.exists()  # written anew


def test_an_index_of_another_tree_zone_or_bantin_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, other, saved = tmp_path / "content", tmp_path / "other", tmp_path / "scan.index"
    tree_of(root, 10)
    shutil.copytree(root, other)
    Source(root, ZONE, index=saved).scan()
    elsewhere = Source(other, ZONE, index=saved)
    elsewhere.scan()
    assert elsewhere.parsed == 11  # another source directory
    Source(root, ZONE, index=saved).scan()  # the index is root's again
    from zoneinfo import ZoneInfo

    zoned = Source(root, ZoneInfo("Europe/Paris"), index=saved)
    assert whole(zoned.scan()) == whole(Source(root, ZoneInfo("Europe/Paris")).scan())
    assert zoned.parsed == 11  # dates without an offset read in another zone
    Source(root, ZONE, index=saved).scan()
    monkeypatch.setattr(index, "_code", "another release of bantin")
    upgraded = Source(root, ZONE, index=saved)
    upgraded.scan()
    assert upgraded.parsed == 11


def test_an_index_that_names_other_classes_is_refused_not_run(tmp_path: Path) -> None:
    """A pickle can call anything it names: the index may name only plain data classes."""
    root, saved = tmp_path / "content", tmp_path / "scan.index"
    tree_of(root, 5)
    marker = tmp_path / "ran"
    key = (index.code_version(), str(root.resolve()), str(ZONE))

    class Hostile:
        def __reduce__(self) -> tuple[object, ...]:
            return (Path.touch, (marker,))

    for payload in ({"tin.md": Hostile()}, {"tin.md": ((1, 2, 3), (Hostile(),))}):
        data = pickle.dumps((key, payload))
        data = stored._LENGTH.pack(len(data)) + data  # as the scan index lays it out
        saved.write_bytes(index._MAGIC + index._checksum(data) + data)
        source = Source(root, ZONE, index=saved)
        assert whole(source.scan()) == whole(Source(root, ZONE).scan())
        assert not marker.exists() and source.parsed == 6


restart_op = st.fixed_dictionaries({"op": st.just("restart")})
damage_op = st.fixed_dictionaries(
    {
        "op": st.just("damage"),
        "how": st.sampled_from(["truncated", "flipped", "missing", "bodies-cut", "body-flipped"]),
    }
)
steps = st.lists(
    st.one_of(
        article_op, broken_op, delete_op, move_op, idle_op, clock_op, restart_op, restart_op,
        damage_op,
    ),
    min_size=1,
    max_size=25,
)  # fmt: skip


@settings(
    max_examples=120,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps)
def test_every_sequence_of_edits_and_restarts_scans_what_a_fresh_scan_does(
    steps: list[dict[str, object]],
) -> None:
    work = Path(tempfile.mkdtemp(prefix="bantin-idx-"))
    try:
        root, saved = work / "content", work / "scan.index"
        root.mkdir()
        tree = Tree(root)
        now = START
        source = Source(root, ZONE, index=saved)
        known = {a.fingerprint: a.id for a in source.scan().articles}
        for number, step in enumerate(steps, start=1):
            if step["op"] == "restart":
                source = Source(root, ZONE, known, index=saved)
            elif step["op"] == "damage":
                if saved.exists():
                    _damage(saved, str(step["how"]))
                source = Source(root, ZONE, known, index=saved)
            else:
                now = apply(tree, step, now)
            scan = source.scan()
            known.update((a.fingerprint, a.id) for a in scan.articles)
            fresh = Source(root, ZONE, known).scan()
            where = f"after step {number} of {steps[:number]}"
            assert whole(scan) == whole(fresh), where
            assert published_view(scan, now) == published_view(fresh, now), where
    finally:
        shutil.rmtree(work)


def test_a_running_service_saves_its_index_at_most_every_few_minutes_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save writes the whole index: it must not follow every edit. An index left behind by
    the edits since its last save costs their re-parsing after a restart, never a wrong scan."""
    root, saved = tmp_path / "content", tmp_path / "scan.index"
    tree = tree_of(root, 20)
    saves: list[int] = []
    real = stored.save
    monkeypatch.setattr(stored, "save", lambda *a: (saves.append(1), real(*a)))
    running = Source(root, ZONE, index=saved)
    running.scan()
    assert len(saves) == 1  # the first scan saves at once
    tree.write("nam/0/tin-0.md", _markdown("Tin 0 (sửa)", START, False, "Tin tức", None))
    tree.write("moi.md", _markdown("Tin mới", START, False, "Thông báo", None))
    running.scan()
    assert len(saves) == 1  # not after each edit
    restarted = Source(root, ZONE, index=saved)
    assert whole(restarted.scan()) == whole(Source(root, ZONE).scan())
    assert restarted.parsed == 3  # the two edits since the save, and the broken file
    monkeypatch.setattr(index, "SAVE_EVERY", 0.0)
    tree.write("moi-2.md", _markdown("Tin mới 2", START, False, "Thông báo", None))
    running.scan()
    assert len(saves) == 3  # due again: the restarted one's first save, and this one
