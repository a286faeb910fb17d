"""VERP return paths: tokens read back to their delivery, forgeries read as nothing, and the
headers a digest carries when ``mail.bounce_address`` is set, down to a real SMTP session."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smtpserver import running_server

from service.content.slug import category
from service.errors import ConfigError
from service.mail import verp
from service.mail.compose import Composer
from service.mail.mime import read_dkim_key
from service.mail.tokens import make_token as unsubscribe_token
from service.mail.transport import SmtpTransport
from service.model import Article, Subscriber
from service.settings import Settings, load_settings

KEY = b"server key for the VERP tests..."
BOUNCES = "bounces@tinh.example.gov.vn"
NOW = datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
HOA = Subscriber("Hoa.Nguyen@example.org", "Nguyễn Thị Hoa")


@pytest.mark.parametrize("delivery_id", [0, 1, 255, 256, 70_000, 2**32, 2**64 - 1])
def test_a_token_reads_back_to_its_delivery_and_address(delivery_id: int) -> None:
    token = verp.make_token(KEY, delivery_id, "Hoa.Nguyen@example.org")
    assert token == token.lower() and len(token) <= verp.MAX_TOKEN
    read = verp.read_token(KEY, token)
    assert read is not None
    assert read.delivery_id == delivery_id and read.purpose == "bounce"
    assert read.names("hoa.nguyen@example.org") and read.names("HOA.NGUYEN@EXAMPLE.ORG")
    assert not read.names("lan@example.org")
    # some mail systems upper- or lower-case local parts on the way back
    assert verp.read_token(KEY, token.upper()) == read


def test_the_longest_return_path_fits_in_a_local_part() -> None:
    longest = "b" * 21 + "@tinh.example.gov.vn"
    for address in (
        verp.return_path(longest, KEY, 2**64 - 1, "a" * 64 + "@example.org"),
        verp.unsubscribe_mailto(longest, KEY, 2**64 - 1, "x@example.org")
        .removeprefix("mailto:")
        .split("?")[0],
    ):
        local = address.rsplit("@", 1)[0]
        assert len(local.encode()) <= 64, address
    typical = verp.return_path(BOUNCES, KEY, 123_456, "hoa@example.org")
    assert len(typical.split("@")[0]) == len("bounces+") + 28  # a 3-byte id: 17 bytes


def test_forged_altered_and_foreign_tokens_read_as_nothing() -> None:
    token = verp.make_token(KEY, 42, "hoa@example.org")
    assert verp.read_token(b"another key.....................", token) is None
    assert verp.read_token(b"", token) is None
    for i in range(len(token)):
        flipped = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1 :]
        assert verp.read_token(KEY, flipped) is None, i
    assert verp.read_token(KEY, token[:-1]) is None
    assert verp.read_token(KEY, token + "a") is None
    # a bounce token is no unsubscribe token, and the reverse
    assert verp.read_token(KEY, token, "unsubscribe") is None
    unsub = verp.make_token(KEY, 42, "hoa@example.org", "unsubscribe")
    assert verp.read_token(KEY, unsub) is None
    assert verp.read_token(KEY, unsub, "unsubscribe") is not None
    # an unsigned token of the right shape, and an unsubscribe-link token
    unsigned = base64.b32encode(b"\x2a" + b"\x00" * 14).decode().lower().rstrip("=")
    assert verp.read_token(KEY, unsigned) is None
    assert verp.read_token(KEY, unsubscribe_token(KEY, "hoa@example.org")) is None


def test_only_the_shortest_spelling_of_an_id_is_ours() -> None:
    # signed with the key, but with a leading zero byte: not a token make_token writes
    body = b"\x00\x2a" + verp._tag(KEY, "hoa@example.org")
    padded = verp._encode(body + verp._mac(KEY, "bounce", body))
    assert verp.read_token(KEY, padded) is None


@given(st.text(max_size=80))
def test_garbage_never_reads_as_a_token(text: str) -> None:
    assert verp.read_token(KEY, text) is None
    assert verp.read_address(BOUNCES, KEY, text) is None


def test_addresses_are_read_as_mail_systems_write_them_back() -> None:
    address = verp.return_path(BOUNCES, KEY, 7, "hoa@example.org")
    local, domain = address.split("@")
    for written in (
        address,
        f"<{address}>",
        f" {local.upper()}@{domain.upper()} ",
        f"{local}@{domain}.",
    ):
        read = verp.read_address(BOUNCES, KEY, written)
        assert read is not None and read.delivery_id == 7, written
    for other in (
        address.replace("@tinh.", "@other."),
        address.replace("bounces+", "bantin+"),
        BOUNCES,
        "bounces+@tinh.example.gov.vn",
        "Hoa <hoa@example.org>",
    ):
        assert verp.read_address(BOUNCES, KEY, other) is None, other
    mailto = verp.unsubscribe_mailto(BOUNCES, KEY, 7, "hoa@example.org")
    assert mailto.startswith("mailto:bounces+unsub-") and mailto.endswith("?subject=unsubscribe")
    unsub = verp.read_address(BOUNCES, KEY, mailto.removeprefix("mailto:").split("?")[0])
    assert unsub is not None and unsub.purpose == "unsubscribe" and unsub.delivery_id == 7
    found = verp.find(BOUNCES, KEY, ["postmaster@example.org", f"<{address}>"])
    assert found is not None and found.delivery_id == 7


def configure(project: Path, extra: str = "") -> Settings:
    config = project / "config" / "bantin.toml"
    config.write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        f'[mail]\nfrom = "Văn phòng UBND tỉnh <bantin@tinh.example.gov.vn>"\n{extra}',
        encoding="utf-8",
    )
    return load_settings(config)


ARTICLES = [
    Article(
        id="lich-tiep",
        slug="lich-tiep",
        title="Lịch tiếp công dân tháng 12",
        date=NOW - timedelta(days=1),
        category=category("Lịch tiếp công dân"),
        summary="Lịch tiếp công dân.",
        content_html="<p>x</p>",
        source="lich-tiep.md",
    )
]


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_with_a_bounce_address_the_digest_carries_the_headers_big_senders_expect(
    project: Path,
) -> None:
    composer = Composer(configure(project, f'bounce_address = "{BOUNCES}"\n'), KEY)
    data = composer.compose(HOA, ARTICLES, "weekly", "<m@tinh.example.gov.vn>", NOW, 99)
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    message = parse(data)
    assert message["Feedback-ID"] == "digest:weekly:tinh.example.gov.vn"
    assert message["Precedence"] == "bulk"
    https, mailto = (u.strip().strip("<>") for u in str(message["List-Unsubscribe"]).split(","))
    assert https.startswith("https://tinh.example.gov.vn/unsubscribe/")
    assert mailto.startswith("mailto:bounces+unsub-") and mailto.endswith("?subject=unsubscribe")
    read = verp.read_address(BOUNCES, KEY, mailto.removeprefix("mailto:").split("?")[0])
    assert read is not None and read.delivery_id == 99 and read.names(HOA.email)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    sender = composer.envelope_sender(99, HOA.email)
    read = verp.read_address(BOUNCES, KEY, sender)
    assert read is not None and read.delivery_id == 99 and read.purpose == "bounce"
    # without a delivery (a preview): the From address, and only the HTTPS link
    assert composer.envelope_sender(None, HOA.email) == "bantin@tinh.example.gov.vn"
    preview = parse(composer.compose(HOA, ARTICLES, "weekly", "<m@tinh.example.gov.vn>", NOW))
    assert "mailto:" not in str(preview["List-Unsubscribe"])


def test_without_a_bounce_address_nothing_changes_but_precedence(project: Path) -> None:
    composer = Composer(configure(project), KEY)
    message = parse(composer.compose(HOA, ARTICLES, "daily", "<m@x>", NOW, 99))
    assert message["Feedback-ID"] is None
    assert "mailto:" not in str(message["List-Unsubscribe"])
    assert composer.envelope_sender(99, HOA.email) == "bantin@tinh.example.gov.vn"


def test_the_feedback_id_is_signed_with_dkim(project: Path) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = project / "dkim.pem"
    pem.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings = configure(
        project,
        f'bounce_address = "{BOUNCES}"\ndkim_domain = "tinh.example.gov.vn"\n'
        f'dkim_selector = "bantin"\ndkim_key_file = "{pem}"\n',
    )
    mail = settings.mail
    key = read_dkim_key(mail.dkim_domain, mail.dkim_selector, mail.dkim_key_file)
    data = Composer(settings, KEY, key).compose(HOA, ARTICLES, "daily", "<m@x>", NOW, 5)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record

    assert dkim.verify(data, dnsfunc=dns)
    forged = data.replace(b"Feedback-ID: digest:daily:", b"Feedback-ID: digest:weekly:")
    assert forged != data and not dkim.verify(forged, dnsfunc=dns)


def test_the_envelope_sender_reaches_a_real_smtp_server(project: Path) -> None:
    composer = Composer(configure(project, f'bounce_address = "{BOUNCES}"\n'), KEY)
    data = composer.compose(HOA, ARTICLES, "daily", "<m@tinh.example.gov.vn>", NOW, 31337)
    with running_server() as server:
        smtp = composer.settings.smtp.model_copy(update={"port": server.port, "security": "none"})
        transport = SmtpTransport(smtp)

        async def send() -> None:
            try:
                sender = composer.envelope_sender(31337, HOA.email)
                assert (await transport.send(sender, HOA.email, data)).ok
            finally:
                await transport.close()

        asyncio.run(send())
        [received] = server.received
    read = verp.read_address(BOUNCES, KEY, received.sender)
    assert read is not None and read.delivery_id == 31337 and read.names(HOA.email)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ('"Bounces <bounces@x.vn>"', "not a plain email address"),
        ('"bounces+x@x.vn"', "must not contain '\\+'"),
        ('"b' + "x" * 21 + '@x.vn"', "at most 21 leave room"),
        ('"bản@x.vn"', "not a plain email address"),
    ],
)
def test_a_bounce_address_that_cannot_carry_a_token_is_refused(
    project: Path, value: str, error: str
) -> None:
    with pytest.raises(ConfigError, match=rf"bantin.toml:6: mail.bounce_address: .*{error}"):
        configure(project, f"bounce_address = {value}\n")
