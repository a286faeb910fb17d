"""The ledger's nouns on their own, against a real SQLite file: articles, subscribers, runs
and keys (deliveries and the runner lock have files of their own).

Tests reopen the database where it matters: what the ledger promises is what is committed,
not what one State object remembers.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.errors import StateError
from service.ledger import State
from service.model import Frequency, Subscriber

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def entries(ids: Iterable[str]) -> list[tuple[str, str, str]]:
    """(id, fingerprint, source) as a scan gives them, for ledger calls that need articles."""
    return [(i, f"fp-{i}", f"{i}.md") for i in ids]


def sub(email: str, frequency: Frequency = "daily") -> Subscriber:
    return Subscriber(email, frequency=frequency)


# --- articles -------------------------------------------------------------------------------


def test_articles_get_sequence_numbers_in_the_order_first_seen(state: State, url: str) -> None:
    assert state.articles.last_seq() == 0
    assert state.articles.record(entries(["b", "a"]), T0) == 2
    assert state.articles.record(entries(iter(["a", "c", "b"])), T0 + timedelta(hours=1)) == 1
    assert state.articles.after(0) == [(1, "b"), (2, "a"), (3, "c")]
    assert state.articles.after(2) == [(3, "c")]
    assert state.articles.after(3) == []
    assert state.articles.last_seq() == 3
    other = State(url)
    try:  # idempotent across processes too: the ids are read from the database
        assert other.articles.record(entries(["a", "b", "c"]), T0) == 0
        assert other.articles.record(entries(["d"]), T0) == 1
        assert other.articles.after(2) == [(3, "c"), (4, "d")]
    finally:
        other.close()


def test_seen_answers_for_many_ids_at_once(state: State) -> None:
    ids = [f"2026/bai-{n:04d}" for n in range(1200)]
    state.articles.record(entries(ids[::2]), T0)
    asked = [*ids, "khong-co"]
    assert state.articles.seen(asked) == set(ids[::2])
    assert state.articles.seen([]) == set()


# --- subscribers ----------------------------------------------------------------------------


def test_an_unseen_subscriber_starts_at_the_newest_article(state: State, url: str) -> None:
    state.articles.record(entries(["a", "b", "c"]), T0)
    found = state.subscribers.sync([sub("Hoa@Example.org"), sub("lan@example.org")], T0)
    assert set(found) == {"hoa@example.org", "lan@example.org"}
    hoa = found["hoa@example.org"]
    assert (hoa.cursor, hoa.unsubscribed, hoa.suspended, hoa.failures) == (3, False, False, 0)
    assert hoa.active
    state.articles.record(entries(["d"]), T0)
    # seen before: the cursor stays where it was
    assert state.subscribers.sync([sub("HOA@example.org")], T0)["hoa@example.org"].cursor == 3
    other = State(url)
    try:
        assert other.subscribers.min_cursor() == 3
    finally:
        other.close()


def test_start_overrides_the_newest_article_for_unseen_subscribers_only(state: State) -> None:
    state.articles.record(entries(["a", "b", "c"]), T0)
    state.subscribers.sync([sub("old@example.org")], T0)
    found = state.subscribers.sync([sub("old@example.org"), sub("new@example.org")], T0, start=1)
    assert found["old@example.org"].cursor == 3
    assert found["new@example.org"].cursor == 1


def test_sync_without_record_writes_nothing(state: State, url: str) -> None:
    state.articles.record(entries(["a", "b"]), T0)
    state.subscribers.sync([sub("hoa@example.org")], T0)
    found = state.subscribers.sync(
        [sub("hoa@example.org", "weekly"), sub("lan@example.org")], T0, record=False, start=5
    )
    assert found["lan@example.org"].cursor == 5  # reported as it would start
    assert found["hoa@example.org"].cursor == 2
    other = State(url)
    try:
        assert other.subscribers.min_cursor("weekly") is None  # the frequency did not change
        assert other.subscribers.min_cursor("daily") == 2
        state.articles.record(entries(["c"]), T0)
        # lan was never written: a real sync now starts them at the newest article
        real = other.subscribers.sync([sub("lan@example.org")], T0)
        assert real["lan@example.org"].cursor == 3
    finally:
        other.close()


def test_a_changed_frequency_is_recorded(state: State) -> None:
    state.articles.record(entries(["a"]), T0)
    state.subscribers.sync([sub("hoa@example.org", "daily")], T0)
    assert state.subscribers.min_cursor("daily") == 1
    state.subscribers.sync([sub("hoa@example.org", "weekly")], T0)
    assert state.subscribers.min_cursor("daily") is None
    assert state.subscribers.min_cursor("weekly") == 1


def test_unsubscribe_is_recorded_once_and_outlives_the_file(state: State, url: str) -> None:
    state.articles.record(entries(["a"]), T0)
    state.subscribers.sync([sub("hoa@example.org")], T0)
    assert state.subscribers.unsubscribe("HOA@example.org", T0 + timedelta(hours=1))
    assert not state.subscribers.unsubscribe("hoa@example.org", T0 + timedelta(hours=2))
    # an address the ledger never saw (a link from an old state) is recorded too
    assert state.subscribers.unsubscribe("Stranger@Example.org", T0)
    other = State(url)
    try:
        assert other.subscribers.addresses("unsubscribed") == [
            ("hoa@example.org", T0 + timedelta(hours=1)),
            ("stranger@example.org", T0),
        ]
        assert other.subscribers.addresses("suspended") == []
        found = other.subscribers.sync([sub("hoa@example.org"), sub("stranger@example.org")], T0)
        assert all(s.unsubscribed and not s.active for s in found.values())
        assert other.subscribers.min_cursor() is None  # nobody active is left
        assert other.subscribers.counts() == {"suspended": 0, "unsubscribed": 2}
    finally:
        other.close()


def test_min_cursor_is_the_lowest_active_cursor(state: State) -> None:
    assert state.subscribers.min_cursor() is None
    state.articles.record(entries(["a"]), T0)
    state.subscribers.sync([sub("early@example.org")], T0)
    state.articles.record(entries(["b", "c"]), T0)
    state.subscribers.sync([sub("late@example.org", "weekly")], T0)
    assert state.subscribers.min_cursor() == 1
    assert state.subscribers.min_cursor("weekly") == 3
    assert state.subscribers.min_cursor("immediate") is None
    state.subscribers.unsubscribe("early@example.org", T0)
    assert state.subscribers.min_cursor() == 3


# --- runs and keys --------------------------------------------------------------------------


def test_runs_keep_the_last_run_of_each_kind(state: State, url: str) -> None:
    state.runs.record("scan", T0, T0 + timedelta(seconds=1), True, "3 articles")
    state.runs.record("digest:daily", T0, T0 + timedelta(seconds=9), False, "stopped early")
    state.runs.record("scan", T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), True, "4")
    other = State(url)
    try:
        runs = other.runs.all()
    finally:
        other.close()
    assert [(r.kind, r.ok, r.detail) for r in runs] == [
        ("digest:daily", False, "stopped early"),
        ("scan", True, "4"),
    ]
    assert (runs[1].started, runs[1].finished) == (
        T0 + timedelta(minutes=1),
        T0 + timedelta(minutes=2),
    )


def test_the_signing_key_is_generated_once_and_kept(url: str, tmp_path: Path) -> None:
    first = State(url)
    try:
        key = first.keys.secret_key()
        assert len(key) >= 32
        assert first.keys.secret_key() == key
        assert first.keys.secret_key(SecretStr("configured")) == b"configured"
    finally:
        first.close()
    second = State(url)
    try:
        assert second.keys.secret_key() == key  # links in sent mail stay valid after a restart
    finally:
        second.close()
    elsewhere = State(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        assert elsewhere.keys.secret_key(SecretStr("configured")) == b"configured"
        assert elsewhere.keys.secret_key() != key
    finally:
        elsewhere.close()


def test_a_bad_url_is_a_state_error_naming_it() -> None:
    with pytest.raises(StateError, match="nicht-eine-url"):
        State("nicht-eine-url")
