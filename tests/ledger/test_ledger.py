"""Each noun of the ledger on its own, against a real SQLite file under tmp_path.

Every test reopens the database where it matters: what the ledger promises is what is
committed, not what one State object remembers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from service.errors import StateError
from service.ledger import State
from service.ledger.deliveries import SUSPEND_AFTER, Claim, Delivery
from service.ledger.lock import FileLock, held, runner_lock
from service.model import Frequency, Subscriber

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'bantin.db'}"


@pytest.fixture
def state(url: str) -> Iterator[State]:
    opened = State(url)
    yield opened
    opened.close()


def reopen(url: str) -> State:
    return State(url)


def sub(email: str, frequency: Frequency = "daily") -> Subscriber:
    return Subscriber(email, frequency=frequency)


def mid(email: str, ids: Sequence[str]) -> str:
    return f"<{'+'.join(ids)}.{email}@test>"


# --- articles -------------------------------------------------------------------------------


def test_articles_get_sequence_numbers_in_the_order_first_seen(state: State, url: str) -> None:
    assert state.articles.last_seq() == 0
    assert state.articles.record(["b", "a"], T0) == 2
    assert state.articles.record(iter(["a", "c", "b"]), T0 + timedelta(hours=1)) == 1
    assert state.articles.after(0) == [(1, "b"), (2, "a"), (3, "c")]
    assert state.articles.after(2) == [(3, "c")]
    assert state.articles.after(3) == []
    assert state.articles.last_seq() == 3
    other = reopen(url)
    try:  # idempotent across processes too: the ids are read from the database
        assert other.articles.record(["a", "b", "c"], T0) == 0
        assert other.articles.record(["d"], T0) == 1
        assert other.articles.after(2) == [(3, "c"), (4, "d")]
    finally:
        other.close()


def test_seen_answers_for_many_ids_at_once(state: State) -> None:
    ids = [f"2026/bai-{n:04d}" for n in range(1200)]
    state.articles.record(ids[::2], T0)
    asked = [*ids, "khong-co"]
    assert state.articles.seen(asked) == set(ids[::2])
    assert state.articles.seen([]) == set()


# --- subscribers ----------------------------------------------------------------------------


def test_an_unseen_subscriber_starts_at_the_newest_article(state: State, url: str) -> None:
    state.articles.record(["a", "b", "c"], T0)
    found = state.subscribers.sync([sub("Hoa@Example.org"), sub("lan@example.org")], T0)
    assert set(found) == {"hoa@example.org", "lan@example.org"}
    hoa = found["hoa@example.org"]
    assert (hoa.cursor, hoa.unsubscribed, hoa.suspended, hoa.failures) == (3, False, False, 0)
    assert hoa.active
    state.articles.record(["d"], T0)
    # seen before: the cursor stays where it was
    assert state.subscribers.sync([sub("HOA@example.org")], T0)["hoa@example.org"].cursor == 3
    other = reopen(url)
    try:
        assert other.subscribers.min_cursor() == 3
    finally:
        other.close()


def test_start_overrides_the_newest_article_for_unseen_subscribers_only(state: State) -> None:
    state.articles.record(["a", "b", "c"], T0)
    state.subscribers.sync([sub("old@example.org")], T0)
    found = state.subscribers.sync([sub("old@example.org"), sub("new@example.org")], T0, start=1)
    assert found["old@example.org"].cursor == 3
    assert found["new@example.org"].cursor == 1


def test_sync_without_record_writes_nothing(state: State, url: str) -> None:
    state.articles.record(["a", "b"], T0)
    state.subscribers.sync([sub("hoa@example.org")], T0)
    found = state.subscribers.sync(
        [sub("hoa@example.org", "weekly"), sub("lan@example.org")], T0, record=False, start=5
    )
    assert found["lan@example.org"].cursor == 5  # reported as it would start
    assert found["hoa@example.org"].cursor == 2
    other = reopen(url)
    try:
        assert other.subscribers.min_cursor("weekly") is None  # the frequency did not change
        assert other.subscribers.min_cursor("daily") == 2
        state.articles.record(["c"], T0)
        # lan was never written: a real sync now starts them at the newest article
        real = other.subscribers.sync([sub("lan@example.org")], T0)
        assert real["lan@example.org"].cursor == 3
    finally:
        other.close()


def test_a_changed_frequency_is_recorded(state: State) -> None:
    state.articles.record(["a"], T0)
    state.subscribers.sync([sub("hoa@example.org", "daily")], T0)
    assert state.subscribers.min_cursor("daily") == 1
    state.subscribers.sync([sub("hoa@example.org", "weekly")], T0)
    assert state.subscribers.min_cursor("daily") is None
    assert state.subscribers.min_cursor("weekly") == 1


def test_unsubscribe_is_recorded_once_and_outlives_the_file(state: State, url: str) -> None:
    state.articles.record(["a"], T0)
    state.subscribers.sync([sub("hoa@example.org")], T0)
    assert state.subscribers.unsubscribe("HOA@example.org", T0 + timedelta(hours=1))
    assert not state.subscribers.unsubscribe("hoa@example.org", T0 + timedelta(hours=2))
    # an address the ledger never saw (a link from an old state) is recorded too
    assert state.subscribers.unsubscribe("Stranger@Example.org", T0)
    other = reopen(url)
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
    state.articles.record(["a"], T0)
    state.subscribers.sync([sub("early@example.org")], T0)
    state.articles.record(["b", "c"], T0)
    state.subscribers.sync([sub("late@example.org", "weekly")], T0)
    assert state.subscribers.min_cursor() == 1
    assert state.subscribers.min_cursor("weekly") == 3
    assert state.subscribers.min_cursor("immediate") is None
    state.subscribers.unsubscribe("early@example.org", T0)
    assert state.subscribers.min_cursor() == 3


# --- deliveries -----------------------------------------------------------------------------


def seeded(state: State, *emails: str, articles: tuple[str, ...] = ("a", "b", "c")) -> None:
    """Subscribers seen at cursor 0, then the articles: everything is news to them."""
    state.subscribers.sync([sub(e) for e in emails], T0)
    state.articles.record(articles, T0)


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
    other = reopen(url)
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
    other = reopen(url)
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
    other = reopen(url)
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


# --- runs and keys --------------------------------------------------------------------------


def test_runs_keep_the_last_run_of_each_kind(state: State, url: str) -> None:
    state.runs.record("scan", T0, T0 + timedelta(seconds=1), True, "3 articles")
    state.runs.record("digest:daily", T0, T0 + timedelta(seconds=9), False, "stopped early")
    state.runs.record("scan", T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), True, "4")
    other = reopen(url)
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


# --- the runner lock ------------------------------------------------------------------------

HOLDER = """\
import sys
from service.ledger import State
from service.ledger.lock import runner_lock
lock = runner_lock(State(sys.argv[1]))
lock.acquire(sys.argv[2])
print("held", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def holder(url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the runner lock of ``url`` until told to release it."""
    state = State(url)  # create the database before the other process opens it
    state.close()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url, "digest --frequency weekly"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "held\n"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "released\n"


def test_a_second_runner_is_refused_naming_the_holder(
    state: State, holder: subprocess.Popen[str]
) -> None:
    lock = runner_lock(state)
    assert isinstance(lock, FileLock)
    assert lock.path == Path(state.describe() + ".lock")
    with pytest.raises(StateError) as refused:
        lock.acquire("run")
    message = str(refused.value)
    assert f"pid {holder.pid} " in message
    assert "`bantin digest --frequency weekly`" in message
    assert str(lock.path) in message and state.describe() in message
    release(holder)
    assert lock.path.read_text() == ""  # released: the file names nobody
    with held(lock, "run"):
        assert lock.path.read_text().startswith(f"pid {os.getpid()} (`bantin run`")


def test_a_killed_holder_leaves_the_lock_free(state: State, holder: subprocess.Popen[str]) -> None:
    holder.kill()
    holder.wait(timeout=10)
    lock = runner_lock(state)
    lock.acquire("run")
    lock.release()
    lock.release()  # twice is harmless


def test_held_releases_when_the_block_raises(state: State) -> None:
    lock = runner_lock(state)
    with pytest.raises(RuntimeError), held(lock, "digest"):
        raise RuntimeError("the run failed")
    other = runner_lock(state)
    other.acquire("run")  # free again
    other.release()
