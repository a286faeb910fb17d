"""Bounces, complaints and auto-replies read by one parser, from the samples in bounces/.

The samples are written after the public formats of Postfix, Exim, qmail, Gmail (Google
Workspace relay), Office 365, Microsoft JMRP, Yahoo, and Amazon SES, each returning a digest
sent with a VERP envelope sender signed by KEY for delivery id N. The expected findings are
checked in below; each token must read back, with the real verp module, to its delivery.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.mail import verp
from service.mail.bounces import Finding, parse

SAMPLES = Path(__file__).resolve().parent / "bounces"
KEY = b"server key for the bounce tests."
BOUNCES = "bounces@laichau.example.gov.vn"
DOMAIN = "laichau.example.gov.vn"

# file: (kind, address, status, delivery id of the token, how it was read)
EXPECTED: dict[str, tuple[str, str | None, str | None, int | None, str]] = {
    "postfix-user-unknown.eml": ("hard", "tran.thi.lan@mail.example.vn", "5.1.1", 101, "dsn"),
    "postfix-delayed.eml": ("soft", "le.van.minh@example.com", "4.4.1", 102, "dsn"),
    "exim-text.eml": ("hard", "pham.quoc.bao@example.net", "5.1.1", 103, "text"),
    "gmail-dsn.eml": ("hard", "hoang.thu@example.org", "5.1.1", 104, "dsn"),
    "outlook-ndr.eml": ("hard", "vo.thi.mai@contoso.example", "5.1.10", 105, "dsn"),
    "outlook-jmrp-complaint.eml": ("complaint", "dang.van.hung@hotmail.example", None, 106, "arf"),
    "yahoo-text.eml": ("hard", "ngo.thi.hanh@yahoo.example", "5.0.0", 107, "text"),
    "yahoo-arf-redacted.eml": ("complaint", None, None, 108, "arf"),
    "ses-bounce.eml": ("hard", "dinh.cong.son@example.org", "5.1.1", 109, "dsn"),
    "ses-complaint.eml": ("complaint", "ly.thanh.tam@example.com", None, 110, "arf"),
    "vacation-rfc3834.eml": ("autoreply", "nam.nguyen@example.gov.vn", None, 111, "headers"),
    "outlook-automatic-reply.eml":
        ("autoreply", "tran.van.duc@contoso.example", None, None, "headers"),
    "unsubscribe-mailto.eml": ("unsubscribe", "hoa.nguyen@example.org", None, 113, "headers"),
    "qmail-text.eml": ("hard", "do.thi.ngoc@example.vn", "5.2.1", 114, "text"),
    "postfix-mailbox-full.eml": ("soft", "mai.anh@example.org", "5.2.2", 115, "dsn"),
    "human.eml": ("unknown", None, None, None, "headers"),
}  # fmt: skip


def read(name: str) -> list[Finding]:
    return parse((SAMPLES / name).read_bytes(), BOUNCES)


def test_every_sample_has_its_expected_result() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_reads_as_expected(name: str) -> None:
    kind, address, status, delivery, source = EXPECTED[name]
    [finding] = read(name)
    assert (finding.kind, finding.address, finding.status, finding.source) == (
        kind,
        address,
        status,
        source,
    )
    if delivery is None:
        assert finding.token is None
        return
    assert finding.token is not None
    purpose = "unsubscribe" if kind == "unsubscribe" else "bounce"
    token = finding.token.removeprefix(verp.UNSUBSCRIBE_PREFIX)
    read_back = verp.read_token(KEY, token, purpose)
    assert read_back is not None and read_back.delivery_id == delivery
    if address is not None:
        assert read_back.names(address)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("postfix-user-unknown.eml", "User unknown in virtual mailbox table"),
        ("gmail-dsn.eml", "550 5.1.1 The email account that you tried to reach does not exist"),
        ("outlook-ndr.eml", "RESOLVER.ADR.RecipientNotFound"),
        ("exim-text.eml", "550 5.1.1 <pham.quoc.bao@example.net>: Recipient address rejected"),
        ("qmail-text.eml", "Mailbox disabled for this recipient"),
        ("yahoo-text.eml", "This user doesn't have a yahoo.example account"),
        ("postfix-delayed.eml", "Connection timed out"),
    ],
)
def test_the_diagnostic_is_the_remote_servers_words_on_one_line(name: str, words: str) -> None:
    [finding] = read(name)
    assert words in finding.diagnostic
    assert "\n" not in finding.diagnostic and len(finding.diagnostic) <= 500


@pytest.mark.parametrize(
    "name",
    [n for n, e in EXPECTED.items() if e[3] is not None and e[0] in ("hard", "soft", "complaint")],
)
def test_reports_that_quote_our_message_give_its_message_id(name: str) -> None:
    [finding] = read(name)
    delivery = EXPECTED[name][3]
    assert delivery is not None
    assert finding.message_id == f"<digest.{delivery:032x}@{DOMAIN}>"


def test_a_forged_token_is_found_but_never_reads_as_ours() -> None:
    data = (SAMPLES / "postfix-user-unknown.eml").read_bytes()
    [finding] = parse(data, BOUNCES)
    assert finding.token is not None
    forged_token = ("a" if finding.token[0] != "a" else "b") + finding.token[1:]
    [forged] = parse(data.replace(finding.token.encode(), forged_token.encode()), BOUNCES)
    assert forged.token == forged_token and forged.kind == "hard"
    assert verp.read_token(KEY, forged_token) is None
    # and another installation's token reads as nothing with our key
    assert verp.read_token(b"another installation's key......", finding.token) is None


def test_without_a_bounce_address_no_token_is_guessed() -> None:
    [finding] = parse((SAMPLES / "postfix-user-unknown.eml").read_bytes())
    assert finding.kind == "hard" and finding.token is None


def test_an_auto_reply_is_never_a_bounce_even_from_a_mail_system_header() -> None:
    # Postfix and Exim mark their bounces Auto-Submitted: auto-replied too: the report decides
    [bounce] = read("postfix-user-unknown.eml")
    assert bounce.kind == "hard"
    for name in ("vacation-rfc3834.eml", "outlook-automatic-reply.eml"):
        assert [f.kind for f in read(name)] == ["autoreply"]


def dsn(*recipients: tuple[str, str, str]) -> bytes:
    blocks = "".join(
        f"Final-Recipient: rfc822; {address}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 5.1.1 unknown\r\n\r\n"
        for address, action, status in recipients
    )
    return (
        "From: MAILER-DAEMON@relay.example\r\nTo: bounces@laichau.example.gov.vn\r\n"
        "Subject: DSN\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nreport\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; relay.example\r\n\r\n{blocks}"
        "--b--\r\n"
    ).encode()


def test_a_dsn_reports_each_recipient_and_skips_successes() -> None:
    found = parse(
        dsn(
            ("A@Example.org", "failed", "5.0.0"),
            ("b@example.org", "delivered", "2.0.0"),
            ("c@example.org", "failed", "4.4.7"),
            ("d@example.org", "relayed", "2.0.0"),
        )
    )
    assert [(f.kind, f.address, f.status) for f in found] == [
        ("hard", "a@example.org", "5.1.1"),  # X.0.0 gives way to the diagnostic's 5.1.1
        ("soft", "c@example.org", "4.4.7"),
    ]
    assert parse(dsn(("b@example.org", "delivered", "2.0.0")))[0].kind == "unknown"


@given(st.binary(max_size=3000))
def test_any_bytes_give_findings_and_never_raise(data: bytes) -> None:
    found = parse(data, BOUNCES)
    assert found and all(
        f.kind in ("hard", "soft", "complaint", "autoreply", "unsubscribe", "unknown")
        for f in found
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_damaged_samples_never_raise(name: str) -> None:
    data = (SAMPLES / name).read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 40):
        assert parse(data[:cut], BOUNCES)
    assert parse(data.replace(b"\n", b"\r\n"), BOUNCES)[0].kind == EXPECTED[name][0]
