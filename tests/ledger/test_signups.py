"""Sign-ups, the form's rate counts and forgotten addresses in the ledger, on SQLite and on a real
PostgreSQL server: what `bantin status` counts, what housekeeping erases and when, what a new
consent lifts, and counts that two hosts share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.ledger import State
from service.ledger.signups import KEEP_AFTER
from service.model import Subscriber

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
CONSENT = "Tôi đồng ý nhận bản tin."
HOURS = 48


def request(state: State, email: str, at: datetime) -> int:
    standing, since = state.signups.request(Subscriber(email), "203.0.113.5", CONSENT, at)
    assert standing == "pending"
    return int(since.timestamp())


def test_status_counts_pending_confirmed_and_expired(state: State) -> None:
    request(state, "cu@example.org", T0 - timedelta(hours=HOURS + 1))
    request(state, "moi@example.org", T0 - timedelta(hours=1))
    issued = request(state, "lan@example.org", T0 - timedelta(hours=2))
    assert state.signups.confirm("lan@example.org", issued, "198.51.100.9", T0) == "confirmed"
    assert state.signups.counts(T0, HOURS) == {"pending": 1, "confirmed": 1, "expired": 1}
    # a link of the request before the last one confirms nothing
    old = request(state, "moi@example.org", T0 - timedelta(hours=1, seconds=-5))
    assert state.signups.confirm("moi@example.org", old - 5, None, T0) == "stale"
    assert state.signups.confirm("lan@example.org", issued, None, T0) == "already"


def test_housekeeping_erases_expired_sign_ups_and_those_of_the_unsubscribed(state: State) -> None:
    request(state, "cu@example.org", T0 - timedelta(hours=HOURS) - KEEP_AFTER)
    request(state, "gan@example.org", T0 - timedelta(hours=HOURS + 1))  # expired, kept a while
    issued = request(state, "lan@example.org", T0 - KEEP_AFTER - timedelta(days=2))
    state.signups.confirm("lan@example.org", issued, None, T0 - KEEP_AFTER - timedelta(days=1))
    assert state.subscribers.unsubscribe("lan@example.org", T0 - KEEP_AFTER)
    assert state.signups.purge(T0, HOURS) == 2
    assert state.signups.get("cu@example.org") is None
    assert state.signups.get("lan@example.org") is None
    assert state.signups.get("gan@example.org") is not None
    unsubscribed = [email for email, _ in state.subscribers.addresses("unsubscribed")]
    assert unsubscribed == ["lan@example.org"]  # still honoured


def test_a_new_confirmation_alone_lifts_a_suppression(state: State) -> None:
    key = "hoa@example.org"
    state.suppressions.suppress(key, "hard_bounce", {"code": "550"}, T0)
    assert state.signups.add(Subscriber(key), "phiếu giấy năm 2025", T0) == "barred"
    issued = request(state, key, T0)  # suppressed: pending, not "subscribed already"
    assert state.subscribers.sync([Subscriber(key)], T0)[key].suppressed
    assert state.signups.confirm(key, issued, None, T0 + timedelta(minutes=5)) == "confirmed"
    assert not state.subscribers.sync([Subscriber(key)], T0)[key].suppressed


def test_rate_counts_are_shared_and_their_window_restarts(url: str) -> None:
    one, two = State(url), State(url)  # two hosts on one state
    try:
        window = timedelta(hours=1)
        counts = [s.throttles.hit("client:203.0.113.9", window, T0) for s in (one, two) * 3]
        assert counts == [1, 2, 3, 4, 5, 6]
        assert one.throttles.hit("client:203.0.113.9", window, T0 + window) == 1
        assert two.throttles.hit("client:198.51.100.1", window, T0) == 1
        assert one.throttles.purge(T0 + timedelta(days=2)) == 2
    finally:
        one.close()
        two.close()


def test_forgetting_keeps_only_the_hash_until_a_new_consent(state: State) -> None:
    key = "lan@example.org"
    issued = request(state, key, T0)
    state.signups.confirm(key, issued, None, T0)
    state.throttles.hit(f"address:{key}", timedelta(days=1), T0)
    erased = state.erasure.forget(key, T0 + timedelta(days=1))
    assert set(erased.removed) >= {"sign-up with its consent record", "subscriber record"}
    assert state.erasure.is_forgotten(key)
    assert state.subscribers.sync([Subscriber(key)], T0)[key].suppressed  # never mailed
    assert not state.subscribers.unsubscribe(key, T0)  # and never written back
    assert state.erasure.forget(key, T0).already
    issued = request(state, key, T0 + timedelta(days=2))
    state.signups.confirm(key, issued, None, T0 + timedelta(days=2))
    assert not state.erasure.is_forgotten(key)
