"""Who gets what: the articles that are news to a subscriber (one rule for every caller).

News is decided by sequence, never by dates: an article is news to a subscriber when the ledger
first saw it published after the subscriber's cursor. Digest runs, dry runs, previews and the
service all ask here.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from service.ledger import State
from service.ledger.subscribers import SubscriberState
from service.model import Article, Subscriber

__all__ = ["Fresh", "News", "as_if_recorded", "fresh_since", "news_for", "select"]

Fresh = list[tuple[int, Article]]  # (sequence, article), oldest first


def select(
    cursor: int, fresh: Sequence[tuple[int, Article]], subscriber: Subscriber
) -> list[Article]:
    """The articles of ``fresh`` (by seq) that are news to ``subscriber``, newest first."""
    start = bisect.bisect_right(fresh, cursor, key=lambda pair: pair[0])
    chosen = [article for _, article in fresh[start:] if subscriber.wants(article)]
    chosen.sort(key=lambda a: (a.date, a.id), reverse=True)
    return chosen


def fresh_since(state: State, cursor: int, by_id: Mapping[str, Article]) -> Fresh:
    """The published articles the ledger recorded after ``cursor``, oldest first."""
    return [(seq, by_id[i]) for seq, i in state.articles.after(cursor) if i in by_id]


def as_if_recorded(state: State, published: Sequence[Article], top: int) -> tuple[Fresh, int]:
    """For runs that record nothing (dry runs, previews): the articles not yet in the ledger,
    numbered after ``top`` as a real run would number them now, and the sequence an unseen
    subscriber would then start at (a real run records articles before it reads subscribers).
    """
    seen = state.articles.seen(a.id for a in published)
    unseen = [a for a in published if a.id not in seen]
    return [(top + n, a) for n, a in enumerate(unseen, start=1)], top + len(unseen)


@dataclass(frozen=True, slots=True)
class News:
    """What a subscriber would get now, without recording anything."""

    status: SubscriberState
    articles: list[Article]


def news_for(
    state: State, subscriber: Subscriber, published: Sequence[Article], now: datetime
) -> News:
    """What ``subscriber`` would be sent if their digest ran now; records nothing."""
    by_id = {a.id: a for a in published}
    unrecorded, start = as_if_recorded(state, published, state.articles.last_seq())
    status = state.subscribers.sync([subscriber], now, record=False, start=start)[subscriber.key]
    fresh = fresh_since(state, status.cursor, by_id) + unrecorded
    return News(status, select(status.cursor, fresh, subscriber))
