"""Header values: whatever text goes in comes back out of a real parser, and nothing injects.

Each value is put in a header of a whole message, parsed by the stdlib with
``policy.default`` (what mail clients do), and compared with the original text.
"""

from __future__ import annotations

import base64
import email
import email.policy
from email.header import decode_header, make_header
from email.message import EmailMessage

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from service.mail.mime import body_part, encode_words, format_address, message_id

# any text a title, a name or a site title could hold, except line breaks
header_text = st.text(
    st.characters(codec="utf-8", blacklist_characters="\r\n"), min_size=1, max_size=300
)


def parse(headers: str) -> EmailMessage:
    raw = (headers + "\r\n\r\nbody\r\n").encode("ascii")
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@given(header_text)
@example("Lịch tiếp công dân định kỳ của Chủ tịch Ủy ban nhân dân tỉnh tháng 12 năm 2026 " * 3)
@example("=?utf-8?b?QQ==?=")
@example("a " * 600)
@example("x" * 2000)
@example("   leading and trailing   ")
def test_encoded_words_decode_to_the_original_text(text: str) -> None:
    value = encode_words(text)
    assert "\n" not in value.replace("\r\n ", "").replace("\r\n", "")
    message = parse(f"Subject: {value}\r\nX-After: still here")
    assert len(message.keys()) == 2
    assert message["X-After"] == "still here"
    decoded = str(message["Subject"])
    if value.startswith("=?"):
        assert decoded == text
    else:  # plain ASCII: a parser drops the space after the colon and around the folds only
        assert decoded == text.strip() or decoded == text


# names as the subscribers file and [mail] from allow them: no control characters
names = st.text(
    st.characters(codec="utf-8", blacklist_categories=("Cc", "Cs")), min_size=1, max_size=200
).filter(lambda t: t.strip() == t and "  " not in t)


@given(names)
@example("Nguyễn Thị Hoa")
@example('Trần "Ba" (phòng 2), <tp>')
@example("=?utf-8?b?QQ==?= <evil@example.org>")
@example("Dr. Back\\slash")
def test_display_names_come_back_whole_and_the_address_stays_put(name: str) -> None:
    value = format_address(name, "hoa.nguyen@example.org")
    message = parse(f"To: {value}")
    [address] = message["To"].addresses
    assert address.addr_spec == "hoa.nguyen@example.org"
    if value.count("=?utf-8?") > 1:
        # policy.default keeps the fold between two encoded words of a phrase as a space,
        # against RFC 2047 6.2 (mail clients drop it); the RFC decoder is the judge here
        phrase = value.rsplit(" <", 1)[0].replace("\r\n", "")
        assert str(make_header(decode_header(phrase))) == name
    else:
        assert address.display_name == name


def test_a_vietnamese_name_of_usual_length_is_one_encoded_word() -> None:
    name = "Nguyễn Thị Minh Khai"
    value = format_address(name, "khai@example.org")
    assert value.count("=?utf-8?") == 1
    assert parse(f"To: {value}")["To"].addresses[0].display_name == name


@pytest.mark.parametrize(
    "value",
    [
        "Tiêu đề\r\nBcc: victim@example.org",
        "Tiêu đề\nBcc: victim@example.org",
        "title\rBcc: x@example.org",
        "plain\r\n\r\nbody injected",
    ],
)
def test_line_breaks_never_reach_a_header(value: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        format_address(value, "a@example.org")
    with pytest.raises(ValueError, match="line break"):
        format_address("Hoa", f"a@example.org{value}")
    # encode_words itself turns them into encoded words: no new header either way
    message = parse(f"Subject: {encode_words(value)}")
    assert message["Bcc"] is None
    assert str(message["Subject"]) == value


def test_message_ids_are_derived_from_the_subscriber_and_the_articles() -> None:
    one = message_id("Hoa@Example.org", ["b", "a"], "tinh.example.gov.vn")
    assert one == message_id("hoa@example.org", ["a", "b"], "tinh.example.gov.vn")
    assert one != message_id("hoa@example.org", ["a", "c"], "tinh.example.gov.vn")
    assert one != message_id("lan@example.org", ["a", "b"], "tinh.example.gov.vn")
    assert one.startswith("<digest.") and one.endswith("@tinh.example.gov.vn>")
    assert parse(f"Message-ID: {one}")["Message-ID"] == one


# --- the fast paths give the bytes the straightforward code gave ---------------------------


def _words_before(text: str) -> str:
    """encode_words' encoded branch as it was written first: one character at a time."""
    words = []
    chunk = bytearray()
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > 39:
            words.append(chunk)
            chunk = bytearray()
        chunk += encoded
    if chunk:
        words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(bytes(w)).decode()}?=" for w in words)


def _body_before(data: str) -> bytes:
    canonical = data.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    encoded = base64.b64encode(canonical.encode("utf-8"))
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


@given(st.text(st.characters(codec="utf-8"), max_size=400))
@example("Lịch tiếp công dân " * 20)
@example("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 " * 30)
def test_encoded_words_are_the_bytes_they_were(text: str) -> None:
    value = encode_words(text)
    if value.startswith("=?") or not text:
        assert value == _words_before(text)


@given(st.text(st.characters(codec="utf-8"), max_size=2000))
@example("line\r\nline\rline\nline")
@example("")
def test_body_parts_are_the_bytes_they_were(text: str) -> None:
    assert body_part(text) == _body_before(text)
