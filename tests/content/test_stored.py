"""The scan index's articles (content/stored.py): a restart decodes no body until something
reads it, and a StoredArticle is an Article to everything that uses one."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

from test_scan_sequences import ZONE

from service.content import stored
from service.content.source import Source
from service.model import Article

BODY = "---\ntitle: Lịch tiếp công dân {n}\ndate: 2024-05-0{n}\ncategory: Thông báo\n---\n"
TEXT = "Chủ tịch UBND tỉnh **tiếp công dân** định kỳ tại trụ sở {n}.\n"


def tree(root: Path, count: int = 4) -> None:
    for n in range(1, count + 1):
        path = root / f"2024/tin-{n}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(BODY.format(n=n) + TEXT.format(n=n), encoding="utf-8")


def restarted(tmp_path: Path) -> tuple[tuple[Article, ...], tuple[Article, ...]]:
    """The articles of a scan after a restart, and of a fresh scan without an index."""
    root, saved = tmp_path / "content", tmp_path / "scan.index"
    tree(root)
    Source(root, ZONE, index=saved).scan()
    warm = Source(root, ZONE, index=saved)
    articles = warm.scan().articles
    assert warm.parsed == 0
    return articles, Source(root, ZONE).scan().articles


def read(article: Article) -> bool:
    """Whether the body of a stored article has been decoded."""
    try:
        stored._BODY_SLOT.__get__(article, Article)
    except AttributeError:
        return False
    return True


def test_a_restart_decodes_no_body_until_one_is_read(tmp_path: Path) -> None:
    warm, fresh = restarted(tmp_path)
    assert all(isinstance(a, stored.StoredArticle) for a in warm)
    assert not any(read(a) for a in warm)
    first = warm[0]
    assert first.title == fresh[0].title and first.date == fresh[0].date
    assert not read(first)  # other fields do not touch the body
    assert "<strong>tiếp công dân</strong>" in first.content_html
    assert first.content_html == fresh[0].content_html
    assert read(first) and not any(read(a) for a in warm[1:])


def test_a_stored_article_is_the_article_it_stands_for(tmp_path: Path) -> None:
    warm, fresh = restarted(tmp_path)
    for stored_one, plain in zip(warm, fresh, strict=True):
        assert stored_one == plain and plain == stored_one
        assert stored_one != dataclasses.replace(plain, title="khác")
        assert hash(stored_one) == hash(plain)
        assert repr(stored_one) == repr(plain)
    other = warm[0]
    assert other != fresh[1] and other != "not an article"
    # sent to a worker process, copied: a plain Article with its body
    for twin in (pickle.loads(pickle.dumps(other)), copy.copy(other), copy.deepcopy(other)):
        assert type(twin) is Article and twin == fresh[0]
    moved = dataclasses.replace(other, id="2024/moved")
    assert moved.id == "2024/moved" and moved.content_html == fresh[0].content_html
    assert moved == dataclasses.replace(fresh[0], id="2024/moved")


def test_an_index_saved_from_stored_articles_keeps_every_body(tmp_path: Path) -> None:
    """A running service saves its index again after an edit: the bodies it never read go back
    as they came, the ones it read as they are."""
    warm, fresh = restarted(tmp_path)
    assert warm[1].content_html  # one read, the others not
    again = tmp_path / "again.index"
    files = {a.source: ((0, 0, 0), a) for a in warm}
    stored.save(again, "key", files)
    loaded = stored.load(again, "key")
    assert loaded is not None
    assert {p: a for p, (_, a) in loaded.items()} == {a.source: a for a in fresh}
    assert stored.load(again, "another key") is None


def test_a_body_span_outside_the_bodies_refuses_the_index(tmp_path: Path) -> None:
    """A checksum-valid file whose spans do not fit its bodies (a writer's bug, or another
    format under the same key) is not used: a cold scan, never a body cut short."""
    warm, _ = restarted(tmp_path)
    saved = tmp_path / "odd.index"
    stored.save(saved, "key", {a.source: ((0, 0, 0), a) for a in warm})
    data = stored.index.read(saved)
    assert data is not None
    (length,) = stored._LENGTH.unpack_from(data)
    cut = data[: stored._LENGTH.size + length] + data[stored._LENGTH.size + length :][:-10]
    stored.index.write(saved, cut)
    assert stored.load(saved, "key") is None
