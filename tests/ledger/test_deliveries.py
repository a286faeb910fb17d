"""The ledger's deliveries, against a real SQLite file: one row per message, committed before it
is sent, an article never twice to one address, failures counted towards suspension.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from service.ledger import State
from service.ledger.deliveries import SUSPEND_AFTER, Claim, Delivery
from service.model import Subscriber

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def entries(ids: Iterable[str]) -> list[tuple[str, str, str]]:
    """(id, fingerprint, source) as a scan gives them, for ledger calls that need articles."""
    return [(i, f"fp-{i}", f"{i}.md") for i in ids]


def sub(email: str) -> Subscriber:
    return Subscriber(email)


def mid(email: str, ids: Sequence[str]) -> str:
    return f"<{'+'.join(ids)}.{email}@test>"


def seeded(state: State, *emails: str, articles: tuple[str, ...] = ("a", "b", "c")) -> None:
    """Subscribers seen at cursor 0, then the articles: everything is news to them."""
    state.subscribers.sync([sub(e) for e in emails], T0)
    state.articles.record(entries(articles), T0)


def claim(state: State, email: str, *ids: str, cursor: int = 3) -> list[Delivery]:
    return state.deliveries.claim([Claim(sub(email), "daily", ids)], [email], cursor, mid, T0)


def test_a_claim_commits_rows_and_items_and_advances_the_cursors(state: State, url: str) -> None:
    seeded(state, "hoa@example.org", "lan@example.org", "nam@example.org")
    created = state.deliveries.claim(
        [
            Claim(sub("Hoa@example.org"), "daily", ("a", "b")),
            Claim(sub("lan@example.org"), "daily", ("c",)),
        ],
        ["hoa@example.org", "lan@example.org"],
        3,
        mid,
        T0,
    )
    assert [(d.email, d.frequency, d.article_ids, d.attempts) for d in created] == [
        ("hoa@example.org", "daily", ("a", "b"), 0),
        ("lan@example.org", "daily", ("c",), 0),
    ]
    assert created[0].message_id == "<a+b.hoa@example.org@test>"
    other = State(url)
    try:
        assert other.deliveries.pending() == created
        found = other.subscribers.sync(
            [sub("hoa@example.org"), sub("lan@example.org"), sub("nam@example.org")], T0
        )
        assert {k: s.cursor for k, s in found.items()} == {
            "hoa@example.org": 3,
            "lan@example.org": 3,
            "nam@example.org": 0,  # not in advance: untouched
        }
        assert other.deliveries.counts() == {"pending": 2, "sent": 0, "failed": 0, "cancelled": 0}
    finally:
        other.close()


def test_an_article_already_delivered_is_dropped_from_a_later_claim(state: State) -> None:
    seeded(state, "hoa@example.org")
    asked: list[tuple[str, tuple[str, ...]]] = []

    def message_id(email: str, ids: Sequence[str]) -> str:
        asked.append((email, tuple(ids)))
        return mid(email, ids)

    claim(state, "hoa@example.org", "a", "b")
    again = state.deliveries.claim(
        [Claim(sub("hoa@example.org"), "weekly", ("b", "c"))], [], 3, message_id, T0
    )
    assert [(d.article_ids, d.frequency) for d in again] == [(("c",), "weekly")]
    assert asked == [("hoa@example.org", ("c",))]  # the Message-ID names what is sent
    assert claim(state, "hoa@example.org", "a", "c") == []  # nothing left: no row at all
    assert len(state.deliveries.pending()) == 2


def test_cursors_only_move_forward(state: State) -> None:
    seeded(state, "hoa@example.org")
    state.deliveries.claim([], ["hoa@example.org"], 2, mid, T0)
    state.deliveries.claim([], ["hoa@example.org"], 1, mid, T0)
    assert state.subscribers.sync([sub("hoa@example.org")], T0)["hoa@example.org"].cursor == 2


def test_sent_messages_leave_pending_and_clear_failures_only_when_asked(
    state: State, url: str
) -> None:
    seeded(state, "hoa@example.org", "lan@example.org")
    [hoa] = claim(state, "hoa@example.org", "a")
    [lan] = claim(state, "lan@example.org", "a")
    [hoa2] = claim(state, "hoa@example.org", "b")
    [lan2] = claim(state, "lan@example.org", "b")
    state.deliveries.mark_failed(hoa.id, hoa.email, 550, "5.1.1 no", T0)
    state.deliveries.mark_failed(lan.id, lan.email, 550, "5.1.1 no", T0)
    state.deliveries.mark_sent_many([(hoa2.id, hoa2.email, True), (lan2.id, lan2.email, False)], T0)
    other = State(url)
    try:
        assert other.deliveries.pending() == []
        assert other.deliveries.counts() == {"pending": 0, "sent": 2, "failed": 2, "cancelled": 0}
        found = other.subscribers.sync([sub("hoa@example.org"), sub("lan@example.org")], T0)
        assert found["hoa@example.org"].failures == 0
        assert found["lan@example.org"].failures == 1
    finally:
        other.close()


def test_a_deferred_message_stays_pending_with_its_reply(state: State) -> None:
    seeded(state, "hoa@example.org")
    [delivery] = claim(state, "hoa@example.org", "a")
    later = T0 + timedelta(minutes=5)
    state.deliveries.mark_deferred(delivery.id, 450, "4.2.1 busy " + "x" * 2000, later)
    state.deliveries.mark_deferred(delivery.id, None, "connection lost", later)
    [pending] = state.deliveries.pending()
    assert (pending.id, pending.message_id, pending.attempts) == (
        delivery.id,
        delivery.message_id,
        2,
    )
    [problem] = state.deliveries.problems()
    assert (problem.email, problem.status, problem.attempts) == ("hoa@example.org", "pending", 2)
    assert (problem.code, problem.reply, problem.when) == (None, "connection lost", later)
    state.deliveries.mark_deferred(delivery.id, 450, "4.2.1 busy " + "x" * 2000, later)
    assert len(state.deliveries.problems()[0].reply or "") == 1000


def test_permanent_failures_in_a_row_suspend_the_address(state: State, url: str) -> None:
    articles = tuple(f"a{n}" for n in range(SUSPEND_AFTER + 2))
    seeded(state, "gone@example.org", articles=articles)
    rows = [claim(state, "gone@example.org", a)[0] for a in articles]
    results = [
        state.deliveries.mark_failed(d.id, d.email, 550, "5.1.1 unknown", T0 + timedelta(days=n))
        for n, d in enumerate(rows[:SUSPEND_AFTER])
    ]
    assert results == [False] * (SUSPEND_AFTER - 1) + [True]
    when = T0 + timedelta(days=SUSPEND_AFTER - 1)
    # a further failure keeps the first suspension's moment
    assert state.deliveries.mark_failed(
        rows[-1].id, "gone@example.org", 550, "no", T0 + timedelta(days=9)
    )
    other = State(url)
    try:
        assert other.subscribers.addresses("suspended") == [("gone@example.org", when)]
        status = other.subscribers.sync([sub("gone@example.org")], T0)["gone@example.org"]
        assert status.suspended and not status.active and status.failures == SUSPEND_AFTER + 1
        assert other.subscribers.min_cursor() is None
        assert other.counts()["suspended"] == 1
        assert other.subscribers.resume("GONE@example.org")
        assert not other.subscribers.resume("gone@example.org")
        status = other.subscribers.sync([sub("gone@example.org")], T0)["gone@example.org"]
        assert status.active and status.failures == 0
    finally:
        other.close()


def test_a_success_between_failures_resets_the_count(state: State) -> None:
    articles = tuple(f"a{n}" for n in range(2 * SUSPEND_AFTER))
    seeded(state, "flaky@example.org", articles=articles)
    rows = [claim(state, "flaky@example.org", a)[0] for a in articles]
    for delivery in rows[: SUSPEND_AFTER - 1]:
        assert not state.deliveries.mark_failed(delivery.id, delivery.email, 552, "full", T0)
    ok = rows[SUSPEND_AFTER - 1]
    state.deliveries.mark_sent_many([(ok.id, ok.email, True)], T0)
    for delivery in rows[SUSPEND_AFTER : 2 * SUSPEND_AFTER - 1]:
        assert not state.deliveries.mark_failed(delivery.id, delivery.email, 552, "full", T0)
    assert state.subscribers.addresses("suspended") == []


def test_cancelled_deliveries_are_neither_pending_nor_problems(state: State) -> None:
    seeded(state, "hoa@example.org", "lan@example.org")
    [hoa] = claim(state, "hoa@example.org", "a")
    [lan] = claim(state, "lan@example.org", "a")
    state.deliveries.cancel(hoa.id, "address removed from the subscribers file", T0)
    assert [d.id for d in state.deliveries.pending()] == [lan.id]
    assert [p.email for p in state.deliveries.problems()] == ["lan@example.org"]
    assert state.deliveries.counts()["cancelled"] == 1
    # the items stay: a cancelled article is not offered to that address again
    assert claim(state, "hoa@example.org", "a", "b")[0].article_ids == ("b",)


def test_problems_are_newest_first_and_limited(state: State) -> None:
    emails = [f"p{n}@example.org" for n in range(5)]
    seeded(state, *emails)
    rows = [claim(state, e, "a")[0] for e in emails]
    state.deliveries.mark_sent_many([(rows[0].id, rows[0].email, False)], T0)
    state.deliveries.mark_failed(rows[1].id, rows[1].email, 550, "5.1.1 no", T0)
    problems = state.deliveries.problems()
    assert [p.email for p in problems] == emails[:0:-1]  # all but the sent one, newest first
    assert [p.status for p in problems] == ["pending"] * 3 + ["failed"]
    assert problems[0].when == T0  # never attempted: when it was created
    assert [p.email for p in state.deliveries.problems(limit=2)] == emails[:2:-1]


def test_statements_run_together_commit_together_or_not_at_all(state: State) -> None:
    """run_many (one round trip on PostgreSQL, its pipeline): a statement that fails after
    others have run leaves none of them committed, says which database, and the next
    commit works on the same pool."""
    from sqlalchemy import insert, select

    from service.errors import StateError
    from service.ledger.db import Prepared
    from service.ledger.schema import meta_table

    add = Prepared(state.db.engine, insert(meta_table))
    first = [{"key": "run-many-a", "value": "1"}, {"key": "run-many-b", "value": "2"}]
    clash = [{"key": "run-many-c", "value": "3"}, {"key": "run-many-a", "value": "again"}]
    for durable in (True, False):
        with pytest.raises(StateError) as refused:
            state.db.run_many([(add, first), (add, clash)], durable=durable)
        assert state.db.describe() in str(refused.value)
        with state.db.tx() as conn:
            keys = set(conn.scalars(select(meta_table.c.key)))
        assert not keys & {"run-many-a", "run-many-b", "run-many-c"}
    state.db.run_many([(add, first)], durable=False)
    with state.db.tx() as conn:
        stored = {
            key: value for key, value in conn.execute(select(meta_table.c.key, meta_table.c.value))
        }
    assert stored["run-many-a"] == "1" and stored["run-many-b"] == "2"
