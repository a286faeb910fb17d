"""Recording 250s (Outcomes.ack) on both backends: a sender goes on only once its message is
committed; on PostgreSQL the commit is waited for off the loop, and the 250s that arrive
meanwhile share the next commit; a failed commit fails only its own senders, and one the
server cuts off is worth waiting for."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from pgkit import PostgresServer
from sqlalchemy import event

from service.errors import StateError
from service.ledger import State
from service.ledger.deliveries import Claim, Delivery
from service.mail.outcomes import Outcomes, RunReport
from service.model import Subscriber

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)


def pending_messages(state: State, count: int) -> list[Delivery]:
    """``count`` claimed deliveries of one article, one subscriber each."""
    emails = [f"dan{i}@example.org" for i in range(count)]
    state.subscribers.sync([Subscriber(e) for e in emails], T0)
    state.articles.record([("a", "fp-a", "a.md")], T0)
    return state.deliveries.claim(
        [Claim(Subscriber(e), "daily", ("a",)) for e in emails],
        emails,
        1,
        lambda email, ids: f"<{'+'.join(ids)}.{email}@test>",
        T0,
    )


def outcomes_of(state: State) -> Outcomes:
    return Outcomes(state, RunReport("daily"), where="test", clock=lambda: T0)


def test_a_sender_goes_on_only_once_its_message_is_recorded(state: State, url: str) -> None:
    asyncio.run(_senders_go_on_once_recorded(state, url))


async def _senders_go_on_once_recorded(state: State, url: str) -> None:
    messages = pending_messages(state, 12)
    outcomes = outcomes_of(state)
    other = State(url)  # what another process (or the next run) reads

    async def send(delivery: Delivery, after: float) -> bool:
        await asyncio.sleep(after)
        await outcomes.ack(delivery)
        return delivery.id not in {d.id for d in other.deliveries.pending()}

    try:
        recorded = await asyncio.gather(*(send(d, i * 0.002) for i, d in enumerate(messages)))
        assert recorded == [True] * len(messages)
        assert other.deliveries.counts()["sent"] == len(messages)
    finally:
        other.close()


def test_a_failed_commit_fails_its_senders_and_the_next_commit_works(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = pending_messages(state, 2)
    real = state.deliveries.mark_sent_many
    calls: list[int] = []

    def failing_once(sent: Any, now: datetime) -> None:
        calls.append(len(sent))
        if len(calls) == 1:
            raise StateError("state database test: the server went away")
        real(sent, now)

    monkeypatch.setattr(state.deliveries, "mark_sent_many", failing_once)
    outcomes = outcomes_of(state)
    with pytest.raises(StateError, match="went away"):
        asyncio.run(outcomes.ack(first))
    asyncio.run(outcomes.ack(second))
    assert [d.id for d in state.deliveries.pending()] == [first.id]
    assert outcomes.failing == set()


@pytest.fixture
def pg_state(postgres: PostgresServer) -> Iterator[State]:
    opened = State(postgres.new_database())
    yield opened
    opened.close()


def test_on_postgresql_the_loop_runs_on_while_a_commit_is_on_its_way(
    pg_state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first commit waits for an event that only the loop sets: were it run on the loop's
    thread, it would wait in vain. The 250s that arrive meanwhile share one commit after it."""
    asyncio.run(_loop_runs_on(pg_state, monkeypatch))


async def _loop_runs_on(pg_state: State, monkeypatch: pytest.MonkeyPatch) -> None:
    messages = pending_messages(pg_state, 6)
    real = pg_state.deliveries.mark_sent_many
    commits: list[int] = []
    loop_ran = threading.Event()

    def slow_first(sent: Any, now: datetime) -> None:
        commits.append(len(sent))
        if len(commits) == 1 and not loop_ran.wait(10):
            raise AssertionError("the loop stood still while the commit was on its way")
        real(sent, now)

    monkeypatch.setattr(pg_state.deliveries, "mark_sent_many", slow_first)
    outcomes = outcomes_of(pg_state)
    first = asyncio.ensure_future(outcomes.ack(messages[0]))
    for _ in range(1000):
        if commits:
            break
        await asyncio.sleep(0.001)
    assert commits == [1]
    rest = [asyncio.ensure_future(outcomes.ack(d)) for d in messages[1:]]
    await asyncio.sleep(0.01)
    assert not first.done() and not any(f.done() for f in rest)
    loop_ran.set()
    await asyncio.gather(first, *rest)
    assert commits == [1, len(messages) - 1]
    assert pg_state.deliveries.pending() == []


def test_a_commit_cut_off_by_the_server_is_transient_and_the_next_one_works(
    pg_state: State, postgres: PostgresServer
) -> None:
    """The server drops the connection after the pool's ping and before the commit (a
    restart at that moment): the commit fails, transient and naming the database (the sender
    waits and tries again, Senders._ledger, rather than ending the run), and the next one
    gets a live connection."""
    first, second = pending_messages(pg_state, 2)

    def cut_off(dbapi_connection: Any, *_: Any) -> None:
        with psycopg.connect(postgres.admin_uri, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (dbapi_connection.info.backend_pid,))

    event.listen(pg_state.db.engine, "checkout", cut_off, once=True)
    with pytest.raises(StateError) as failed:
        pg_state.deliveries.mark_sent_many([(first.id, first.email, False)], T0)
    assert failed.value.transient
    assert pg_state.db.describe() in str(failed.value)
    pg_state.deliveries.mark_sent_many([(first.id, first.email, False)], T0)
    pg_state.deliveries.mark_sent_many([(second.id, second.email, False)], T0)
    assert pg_state.deliveries.pending() == []
