"""The outcome of a scan: the resolved articles, and what is published at a given moment (pure).

``Source`` (source.py) walks the directory and makes Scans; everything downstream (builds,
digests, previews) asks a Scan what is published *now*. That question has one answer, made
here from the Scan's own articles.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from service.errors import ArticleError
from service.model import Article, Category

__all__ = ["Scan", "Section"]

Section = tuple[Category, list[Article]]


def _newest_first(article: Article) -> float:
    return -article.date.timestamp()


@dataclass(frozen=True)
class Scan:
    """The outcome of one scan: every valid article (drafts and future ones too), newest first.

    What is published is decided here and only here, from ``articles`` itself: ``live`` (the
    articles that are not drafts) is derived when the Scan is made, never carried over from
    another one. Builds and digests ask for what is published *now* on every run: those
    answers are binary searches over the date order, not loops over 100,000 articles.
    """

    articles: tuple[Article, ...]
    problems: tuple[ArticleError, ...]
    changed: tuple[str, ...]  # source paths added, modified or removed since the last scan
    # category slug -> (category, its non-draft articles, newest first); made on first use
    _sections: dict[str, Section] = field(default_factory=dict, compare=False, repr=False)
    live: tuple[Article, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "live", tuple(a for a in self.articles if not a.draft))

    def published(self, now: datetime) -> list[Article]:
        """Articles that are not drafts and whose date has come, newest first."""
        start = bisect.bisect_left(self.live, -now.timestamp(), key=_newest_first)
        return list(self.live[start:])

    def next_due(self, now: datetime) -> datetime | None:
        """When the next future-dated (scheduled) article comes due, if there is one."""
        start = bisect.bisect_left(self.live, -now.timestamp(), key=_newest_first)
        return self.live[start - 1].date if start else None

    def sections(self) -> dict[str, Section]:
        """Each category's non-draft articles (future-dated ones too), newest first, by category
        slug; made on first use and kept."""
        if not self._sections:
            for article in self.live:
                slug = article.category.slug
                if slug not in self._sections:
                    self._sections[slug] = (article.category, [])
                self._sections[slug][1].append(article)
        return self._sections

    def patched(self, edits: list[tuple[Article, Article]], changed: tuple[str, ...]) -> Scan:
        """This scan with each (old, new) edit applied: edits that keep id, slug and draft.

        Those leave the duplicate rules' outcome as it was, so the resolved set is patched
        instead of recomputed (an edit in a tree of 100,000 articles).
        """
        articles = list(self.articles)
        sections = dict(self._sections)  # patched alongside, when it was made
        for old, new in edits:
            _swap(articles, old, new)
            if sections and not new.draft:
                category, items = sections[old.category.slug]
                items = [a for a in items if a is not old]
                if items:
                    sections[old.category.slug] = (category, items)
                else:
                    del sections[old.category.slug]
                category, items = sections.get(new.category.slug, (new.category, []))
                items = list(items)
                _swap(items, None, new)
                sections[new.category.slug] = (category, items)
        return Scan(tuple(articles), self.problems, changed, sections)

    def recent_by_category(
        self, now: datetime, limit: int, skip: Callable[[Article], bool] | None = None
    ) -> list[tuple[Category, list[Article]]]:
        """Each category's newest ``limit`` published articles (but those ``skip`` names),
        categories by name."""
        found = []
        for category, items in self.sections().values():
            start = bisect.bisect_left(items, -now.timestamp(), key=_newest_first)
            if skip is None:
                chosen = items[start : start + limit]
            else:
                chosen = list(itertools.islice((a for a in items[start:] if not skip(a)), limit))
            if chosen:
                found.append((category, chosen))
        found.sort(key=lambda pair: pair[0].name)
        return found


def _swap(articles: list[Article], old: Article | None, new: Article) -> None:
    """Remove ``old`` (if given) and insert ``new`` where the newest-first order puts it."""
    if old is not None:
        start = bisect.bisect_left(articles, _newest_first(old), key=_newest_first)
        del articles[next(i for i in range(start, len(articles)) if articles[i] is old)]
    key = _newest_first(new)
    start = bisect.bisect_left(articles, key, key=_newest_first)
    end = bisect.bisect_right(articles, key, key=_newest_first)
    # among equal dates the order is by id, descending
    at = next((i for i in range(start, end) if articles[i].id < new.id), end)
    articles.insert(at, new)
