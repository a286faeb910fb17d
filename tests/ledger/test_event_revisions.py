"""The ledger remembers which revision of an article's events each address was sent, so a moved
session is news to those who got the old time, and to nobody else; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.ledger import State
from service.ledger.deliveries import Claim, Delivery
from service.model import Subscriber

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
ARTICLE = "2026/12/lich-tiep"


def seeded(state: State, *emails: str) -> None:
    state.subscribers.sync([Subscriber(e) for e in emails], T0)
    state.articles.record([(ARTICLE, "fp", f"{ARTICLE}.md"), ("other", "fp2", "o.md")], T0)


def send(state: State, email: str, revision: str, previous: str | None = None) -> list[Delivery]:
    made = state.deliveries.claim(
        [
            Claim(
                Subscriber(email),
                "daily",
                (ARTICLE,),
                {ARTICLE: revision},
                {ARTICLE: previous} if previous else {},
            )
        ],
        [email],
        2,
        lambda e, ids: f"<{e}.{revision}@test>",
        T0,
    )
    return made


def sent(state: State, deliveries: list[Delivery]) -> None:
    state.deliveries.mark_sent_many([(d.id, d.email, False) for d in deliveries], T0)


def test_a_new_revision_is_owed_to_those_who_were_sent_another(state: State) -> None:
    seeded(state, "hoa@example.org", "lan@example.org", "nam@example.org")
    sent(state, send(state, "hoa@example.org", "rev-a"))
    sent(state, send(state, "lan@example.org", "rev-a"))
    emails = ["hoa@example.org", "lan@example.org", "nam@example.org"]
    assert state.deliveries.updates(emails, {ARTICLE: "rev-a"}) == {}
    owed = state.deliveries.updates(emails, {ARTICLE: "rev-b"})
    assert owed == {"hoa@example.org": {ARTICLE: "rev-a"}, "lan@example.org": {ARTICLE: "rev-a"}}

    [update] = send(state, "hoa@example.org", "rev-b", previous="rev-a")
    assert (update.revisions, update.previous) == ({ARTICLE: "rev-b"}, {ARTICLE: "rev-a"})
    assert [d.previous for d in state.deliveries.pending()] == [{ARTICLE: "rev-a"}]
    assert send(state, "hoa@example.org", "rev-b", previous="rev-a") == []  # never twice
    # hoa's update waits to be sent: nothing more is owed to hoa meanwhile
    assert state.deliveries.updates(emails, {ARTICLE: "rev-b"}) == {
        "lan@example.org": {ARTICLE: "rev-a"}
    }
    sent(state, [update])
    assert state.deliveries.updates(["hoa@example.org"], {ARTICLE: "rev-b"}) == {}
    # moved again: the revision hoa got last is the one replaced
    assert state.deliveries.updates(["hoa@example.org"], {ARTICLE: "rev-c"}) == {
        "hoa@example.org": {ARTICLE: "rev-b"}
    }


def test_nothing_is_owed_for_what_was_never_received(state: State) -> None:
    seeded(state, "hoa@example.org", "lan@example.org")
    failed = send(state, "hoa@example.org", "rev-a")
    state.deliveries.mark_failed(failed[0].id, "hoa@example.org", 550, "5.1.1 no such user", T0)
    cancelled = send(state, "lan@example.org", "rev-a")
    state.deliveries.cancel(cancelled[0].id, "unsubscribed", T0)
    emails = ["hoa@example.org", "lan@example.org"]
    assert state.deliveries.updates(emails, {ARTICLE: "rev-b"}) == {}


def test_an_article_without_events_is_never_sent_twice(state: State) -> None:
    seeded(state, "hoa@example.org")
    claim = Claim(Subscriber("hoa@example.org"), "daily", ("other",))
    mid = lambda e, ids: f"<{e}@test>"  # noqa: E731
    assert len(state.deliveries.claim([claim], [], 2, mid, T0)) == 1
    assert state.deliveries.claim([claim], [], 2, mid, T0) == []
    assert state.deliveries.updates(["hoa@example.org"], {"other": ""}) == {}


def test_restamp_records_the_revision_a_waiting_message_goes_out_with(state: State) -> None:
    seeded(state, "hoa@example.org")
    [waiting] = send(state, "hoa@example.org", "rev-a")
    assert state.deliveries.restamp(waiting.id, ARTICLE, "rev-b")
    [again] = state.deliveries.pending()
    assert again.revisions == {ARTICLE: "rev-b"}
    sent(state, [again])
    assert state.deliveries.updates(["hoa@example.org"], {ARTICLE: "rev-b"}) == {}
    [later] = send(state, "hoa@example.org", "rev-c", previous="rev-b")
    assert not state.deliveries.restamp(later.id, ARTICLE, "rev-b")  # hoa has rev-b already
    assert state.deliveries.pending()[0].revisions == {ARTICLE: "rev-c"}


def test_event_history_keeps_each_revision_once_in_the_order_seen(state: State) -> None:
    state.articles.record_events([(ARTICLE, "rev-a", '[{"uid": "1"}]')], T0)
    state.articles.record_events(
        [(ARTICLE, "rev-a", '[{"uid": "changed?"}]'), (ARTICLE, "rev-b", '[{"uid": "2"}]')],
        T0 + timedelta(hours=1),
    )
    state.articles.record_events([("elsewhere", "rev-a", "[]")], T0)
    assert state.articles.event_history(ARTICLE) == [
        ("rev-a", '[{"uid": "1"}]'),
        ("rev-b", '[{"uid": "2"}]'),
    ]
    assert state.articles.event_history("missing") == []
