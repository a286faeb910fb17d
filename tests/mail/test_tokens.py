"""Signed link tokens: every address round-trips; every altered or foreign token is refused, and
each purpose (unsubscribe, preferences, confirm) opens only its own page."""

from __future__ import annotations

import string
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.mail.tokens import (
    MAC_BYTES,
    PREFERENCES,
    confirm_token,
    issued_at,
    make_token,
    preferences_url,
    read_confirm_token,
    read_token,
    unsubscribe_url,
)

KEY = b"k" * 32
ALPHABET = string.ascii_letters + string.digits + "-_"
EMAILS = ["a@b.vn", "Chi.Nguyen@Example.gov.vn", "nguyễn.văn.a@ubnd.vn", "x+tag@d.co"]
addresses = st.one_of(st.emails(), st.text(min_size=1, max_size=80))


@given(addresses)
def test_any_address_round_trips_lower_cased(email: str) -> None:
    token = make_token(KEY, email)
    assert set(token) <= set(ALPHABET)  # URL-safe, no padding
    assert read_token(KEY, token) == email.lower()


def test_case_does_not_matter() -> None:
    assert make_token(KEY, "Chi@Example.VN") == make_token(KEY, "chi@example.vn")


@pytest.mark.parametrize("email", EMAILS)
def test_every_single_character_change_is_refused(email: str) -> None:
    token = make_token(KEY, email)
    for position, original in enumerate(token):
        for replacement in ALPHABET:
            if replacement != original:
                altered = token[:position] + replacement + token[position + 1 :]
                assert read_token(KEY, altered) is None, (position, replacement)


@given(addresses, st.data())
def test_random_single_character_change_is_refused(email: str, data: st.DataObject) -> None:
    token = make_token(KEY, email)
    position = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != token[position]))
    assert read_token(KEY, token[:position] + replacement + token[position + 1 :]) is None


@pytest.mark.parametrize("email", EMAILS)
def test_truncated_extended_and_padded_tokens_are_refused(email: str) -> None:
    token = make_token(KEY, email)
    for cut in range(len(token)):
        assert read_token(KEY, token[:cut]) is None
    for extra in ("A", "=", "==", ".", "%3D", " ", "\n"):
        assert read_token(KEY, token + extra) is None
    assert read_token(KEY, token[1:]) is None


def test_the_mac_is_at_least_128_bits() -> None:
    assert MAC_BYTES >= 16
    # 16 bytes of MAC + 1 byte of address encode to 23 characters.
    assert len(make_token(KEY, "a")) == 23


def test_another_key_or_an_empty_key_is_refused() -> None:
    token = make_token(KEY, "a@b.vn")
    assert read_token(b"other key of 32 bytes...........", token) is None
    assert read_token(b"", token) is None
    with pytest.raises(ValueError, match="secret_key"):
        make_token(b"", "a@b.vn")


@given(st.text(max_size=300))
def test_garbage_reads_as_none_and_never_raises(garbage: str) -> None:
    assert read_token(KEY, garbage) is None


def test_unsubscribe_url() -> None:
    url = unsubscribe_url("https://tinh.example.gov.vn", KEY, "A@b.vn")
    assert url == "https://tinh.example.gov.vn/unsubscribe/" + make_token(KEY, "a@b.vn")
    assert unsubscribe_url("https://tinh.example.gov.vn/", KEY, "a@b.vn") == url
    assert read_token(KEY, url.rsplit("/", 1)[1]) == "a@b.vn"


def test_each_purpose_opens_only_its_own_door() -> None:
    moment = datetime(2026, 12, 2, 1, 40, 7, 900_000, tzinfo=UTC)
    unsubscribe = make_token(KEY, "Lan@Example.org")
    preferences = make_token(KEY, "Lan@Example.org", PREFERENCES)
    confirm = confirm_token(KEY, "Lan@Example.org", moment)
    assert len({unsubscribe, preferences, confirm}) == 3
    assert read_token(KEY, preferences, PREFERENCES) == "lan@example.org"
    assert read_token(KEY, unsubscribe, PREFERENCES) is None  # an unsubscribe link opens nothing
    assert read_token(KEY, preferences) is None  # a preferences link unsubscribes nobody
    assert read_confirm_token(KEY, preferences) is None
    assert read_token(KEY, confirm) is None
    found = read_confirm_token(KEY, confirm)
    assert found is not None
    assert found[0] == "lan@example.org"
    assert issued_at(found[1]) == moment.replace(microsecond=0)  # names its request's second
    assert read_confirm_token(b"q" * 32, confirm) is None
    assert preferences_url("https://x.vn/", KEY, "a@b.vn").startswith("https://x.vn/preferences/")
