"""Batches of a run's deliveries taken by the hosts that send it, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from test_deliveries import T0, claim, seeded, sub

from service.ledger import State

EMAILS = [f"nguoi{n}@example.org" for n in range(7)]
LEASE = T0 + timedelta(minutes=5)


def planned(state: State) -> list[int]:
    """Seven deliveries planned into run "r", by id."""
    seeded(state, *EMAILS)
    ids = [claim(state, e, "a")[0].id for e in EMAILS]
    state.claims.verify([sub(e) for e in EMAILS], "r", T0)
    return ids


def test_batches_go_forward_from_where_the_last_ended_and_skip_live_claims(state: State) -> None:
    ids = planned(state)
    first = state.claims.take("r", "h1", 3, LEASE, T0)
    assert [d.id for d in first] == ids[:3]
    # another host looking from the start skips what h1 holds
    assert [d.id for d in state.claims.take("r", "h2", 2, LEASE, T0)] == ids[3:5]
    after = state.claims.take("r", "h1", 3, LEASE, T0, after=first[-1].id)
    assert [d.id for d in after] == ids[5:]
    assert state.claims.take("r", "h1", 3, LEASE, T0, after=ids[-1]) == []


def test_what_was_given_back_below_the_last_batch_is_found_from_the_start(state: State) -> None:
    ids = planned(state)
    taken = state.claims.take("r", "h1", 7, LEASE, T0)
    state.claims.release([ids[1]])
    state.deliveries.mark_sent_many([(d.id, d.email, False) for d in taken[2:]], T0)
    assert state.claims.take("r", "h1", 7, LEASE, T0, after=taken[-1].id) == []
    assert [d.id for d in state.claims.take("r", "h2", 7, LEASE, T0)] == [ids[1]]
    # and a claim that lapsed is free again to anyone looking from the start
    later = LEASE + timedelta(seconds=1)
    assert [d.id for d in state.claims.take("r", "h2", 7, later, LEASE)] == [ids[0], ids[1]]
