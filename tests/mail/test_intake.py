"""The bounce policy against a real ledger: the samples of bounces/, re-signed for deliveries
this test made, through mail.intake; forged tokens and unknown messages change nothing.

The three ways in (stdin, a maildir, an IMAP folder) are in test_bounce_ways.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from bouncekit import POLICY, SAMPLES, T0, Ledger, resigned

from service.model import Subscriber


@pytest.fixture
def ledger(project: Path) -> Iterator[Ledger]:
    made = Ledger(project)
    yield made
    made.state.close()


@pytest.mark.parametrize("name", sorted(POLICY))
def test_each_sample_is_acted_on_as_the_policy_says(ledger: Ledger, name: str) -> None:
    email, action, reason, unsubscribed = POLICY[name]
    bystander = ledger.deliver("bystander@example.org")
    delivery = ledger.deliver(email)
    waiting = ledger.deliver(email)  # a later digest, not sent yet
    [handled] = ledger.intake().take(resigned(name, delivery, email), "pipe")
    assert (handled.action, handled.address) == (action, None if action == "ignored" else email)
    assert ledger.suppressed() == ({email: reason} if reason else {})
    assert ledger.unsubscribed() == ({email} if unsubscribed else set())
    stops = bool(reason) or unsubscribed
    pending = {d.id for d in ledger.state.deliveries.pending()}
    assert (waiting in pending) is not stops  # what waits for a stopped address is cancelled
    assert bystander in pending
    assert ledger.state.subscribers.sync([Subscriber(email)], ledger.now)[email].active is not stops


def test_a_token_signed_with_another_key_is_logged_as_forged_and_changes_nothing(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    email = "tran.thi.lan@mail.example.vn"
    delivery = ledger.deliver(email)
    forged = resigned("postfix-user-unknown.eml", delivery, email, key=b"someone else's key")
    with caplog.at_level(logging.WARNING, "service.mail.intake"):
        [handled] = ledger.intake().take(forged, "pipe")
    assert handled.action == "forged" and handled.address is None
    assert "did not sign" in caplog.text
    assert ledger.suppressed() == {} and ledger.unsubscribed() == set()
    assert [d.id for d in ledger.state.deliveries.pending()] == [delivery]


def test_a_token_for_another_address_or_an_unknown_delivery_is_not_acted_on(
    ledger: Ledger,
) -> None:
    victim = ledger.deliver("victim@example.org")
    # signed by us, but for another address than the delivery's: nothing is done
    [handled] = ledger.intake().take(
        resigned("postfix-user-unknown.eml", victim, "someone@example.org"), "pipe"
    )
    assert handled.action == "unmatched"
    [handled] = ledger.intake().take(
        resigned("postfix-user-unknown.eml", victim + 1000, "victim@example.org"), "pipe"
    )
    assert handled.action == "unmatched"
    assert ledger.suppressed() == {}


def test_soft_bounces_suppress_at_the_limit_within_the_days_each_message_once(
    ledger: Ledger,
) -> None:
    email = "le.van.minh@example.com"
    intake = ledger.intake()

    def soft(delivery: int) -> str:
        [handled] = intake.take(resigned("postfix-delayed.eml", delivery, email), "maildir")
        return handled.action

    old = ledger.deliver(email)
    assert soft(old) == "counted"
    ledger.now = T0 + timedelta(days=15)  # the first is now older than soft_bounce_days
    first, second, third = (ledger.deliver(email) for _ in range(3))
    assert soft(first) == "counted"
    assert soft(first) == "counted"  # the same message again (a retry, a second notice)
    assert soft(second) == "counted"
    assert ledger.suppressed() == {}
    assert ledger.state.suppressions.soft_bounces(email, 14, ledger.now) == 2
    assert soft(third) == "suppressed"
    assert ledger.suppressed() == {email: "soft_bounces"}
    [entry] = ledger.state.suppressions.all()
    assert entry.evidence["soft_bounces"] == 3 and entry.evidence["status"] == "4.4.1"


def test_without_a_bounce_address_the_quoted_message_id_names_the_delivery(
    project: Path,
) -> None:
    ledger = Ledger(project, bounce_address=None)
    email = "tran.thi.lan@mail.example.vn"
    ledger.deliver(email)
    [delivery] = ledger.state.deliveries.pending()
    sample = (SAMPLES / "postfix-user-unknown.eml").read_bytes()
    ours = sample.replace(
        b"<digest.00000000000000000000000000000065@laichau.example.gov.vn>",
        delivery.message_id.encode(),
    )
    [other] = ledger.intake().take(sample, "pipe")  # quotes a Message-ID we never sent
    assert other.action == "unmatched"
    assert ledger.suppressed() == {}
    [handled] = ledger.intake().take(ours, "pipe")
    assert (handled.action, handled.address) == ("suppressed", email)
    assert ledger.suppressed() == {email: "hard_bounce"}
    ledger.state.close()


def test_resume_lifts_a_suppression_and_the_address_is_mailed_again(ledger: Ledger) -> None:
    email = "gmail.user@example.org"
    delivery = ledger.deliver(email)
    ledger.intake().take(resigned("gmail-dsn.eml", delivery, email), "imap")
    assert not ledger.state.subscribers.sync([Subscriber(email)], ledger.now)[email].active
    assert ledger.state.subscribers.min_cursor() is None  # nobody active holds the cursor
    assert ledger.state.suppressions.lift(email.upper())
    assert ledger.state.subscribers.sync([Subscriber(email)], ledger.now)[email].active
    assert not ledger.state.suppressions.lift(email)


def test_human_mail_and_autoreplies_without_a_token_change_nothing(ledger: Ledger) -> None:
    ledger.deliver("tran.van.duc@contoso.example")
    for name, kind in (("human.eml", "unknown"), ("outlook-automatic-reply.eml", "autoreply")):
        [handled] = ledger.intake().take((SAMPLES / name).read_bytes(), "pipe")
        assert (handled.kind, handled.action) == (kind, "ignored")
    assert ledger.suppressed() == {} and ledger.unsubscribed() == set()
    assert len(ledger.state.deliveries.pending()) == 1
