"""Who gets what, and the message they get: selection, rendering, MIME bytes.

Selection is pure: a subscriber's cursor (the newest article that is no longer news to them)
and the articles first seen after it. Rendering uses the operators' templates in
templates/email/ (sandboxed, HTML autoescaped, CSS inlined without remote fetches). The MIME
bytes are built here directly rather than with ``email.message``: the stdlib folds long UTF-8
subjects wrongly (cpython issue 92081) and encodes long List-Unsubscribe URLs, and it costs
~2.7 ms a message.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parseaddr
from typing import Any

import css_inline

from service.errors import ConfigError, TemplateError
from service.model import Article, Frequency, Subscriber
from service.settings import Settings
from service.templates import Templates
from service.tokens import unsubscribe_url

EMAIL_TEMPLATES = ["email/subject.txt.j2", "email/digest.txt.j2", "email/digest.html.j2"]
FREQUENCY_LABELS = {"immediate": "ngay khi có tin", "daily": "hằng ngày", "weekly": "hằng tuần"}
_WORD_BYTES = 39  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 52 base64 chars + "?=" = 64
_SPECIALS = set('()<>[]:;@\\,."')
_SENDER = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_LINE_MAX = 900  # bytes of a header value on one line; RFC 5322 allows 998 with the name


def select(
    cursor: int, fresh: Sequence[tuple[int, Article]], subscriber: Subscriber
) -> list[Article]:
    """The articles of ``fresh`` (by seq) that are news to ``subscriber``, newest first."""
    start = bisect.bisect_right(fresh, cursor, key=lambda pair: pair[0])
    chosen = [article for _, article in fresh[start:] if subscriber.wants(article)]
    chosen.sort(key=lambda a: (a.date, a.id), reverse=True)
    return chosen


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


def _check_header(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} must not contain a line break: {value!r}")
    return value


def _printable(text: str) -> bool:
    return text.isascii() and all(32 <= ord(c) < 127 for c in text)


def encode_words(text: str) -> str:
    """A header value for ``text``: plain ASCII folded at spaces, else RFC 2047 encoded words.

    Lines are folded with CRLF SP so that no line comes near the 998-byte limit; unfolding
    gives ``text`` back exactly, spaces included (the stdlib drops the space between encoded
    words in long subjects, cpython issue 92081).
    """
    if _printable(text) and "=?" not in text and not text[:1].isspace():
        folded = _fold(text)
        if folded is not None:
            return folded
    words = []
    chunk = bytearray()
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk)
            chunk = bytearray()
        chunk += encoded
    if chunk:
        words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(bytes(w)).decode()}?=" for w in words)


def _fold(text: str, width: int = 76) -> str | None:
    """``text`` folded before spaces into lines of about ``width``; None if a word is too long."""
    words = text.split(" ")
    lines: list[str] = []
    line = words[0]
    for word in words[1:]:
        # never leave a line of only spaces: RFC 5322 forbids it, and readers strip it
        if len(line) + 1 + len(word) > width and line.strip() and word:
            lines.append(line)
            line = " " + word
        else:
            line += " " + word
    lines.append(line)
    if any(len(line) > _LINE_MAX for line in lines):
        return None
    return "\r\n".join(lines)


def format_address(name: str | None, address: str) -> str:
    """``Name <address>``: the name quoted or encoded as needed; line breaks refused."""
    _check_header("address", address)
    if not name:
        return address
    _check_header("name", name)
    if _printable(name) and "=?" not in name and len(name) <= _LINE_MAX:
        if any(c in _SPECIALS for c in name):
            quoted = name.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{quoted}" <{address}>'
        return f"{name} <{address}>"
    return f"{encode_words(name)} <{address}>"


def _body(data: str) -> bytes:
    # MIME text is canonical with CRLF line breaks, inside the base64 too (RFC 2046 4.1.1)
    canonical = data.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    encoded = base64.b64encode(canonical.encode("utf-8"))
    # 76-character lines (RFC 2045); slicing once beats encodebytes' per-line encoding
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


class Composer:
    """Renders digests with the email templates and builds their bytes; one per configuration."""

    def __init__(self, settings: Settings, secret_key: bytes) -> None:
        self.settings = settings
        self.site = settings.site
        self.secret_key = secret_key
        self.templates = Templates(
            settings.site.templates_dir, zone=settings.site.zone, language=settings.site.language
        )
        self.sender_name, self.sender = parseaddr(settings.mail.from_)
        # ASCII only (SMTP without SMTPUTF8 cannot carry more); unlike a subscriber's address
        # the domain may be a single label, as an office mail host often is (bantin@localhost)
        if not _SENDER.fullmatch(self.sender):
            raise ConfigError(
                "[mail] from",
                f"{settings.mail.from_!r} has no email address; "
                "write it like 'Tên <ten@example.org>'",
            )
        self.domain = self.sender.rsplit("@", 1)[1]
        # a phrase like a display name: a title such as "Tỉnh <A>, B" must not move the id
        self.list_id = format_address(self.site.title, f"bantin.{self.domain}")
        self.inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False)
        self.dkim: tuple[bytes, bytes, bytes] | None = None
        mail = settings.mail
        if mail.dkim_key_file and mail.dkim_selector and mail.dkim_domain:
            try:
                key = mail.dkim_key_file.read_bytes()
            except OSError as exc:
                raise ConfigError(
                    mail.dkim_key_file, f"DKIM key cannot be read: {exc.strerror}"
                ) from None
            self.dkim = (mail.dkim_selector.encode(), mail.dkim_domain.encode(), key)

    def check(self) -> list[TemplateError]:
        return self.templates.check(EMAIL_TEMPLATES)

    def context(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        now: datetime,
    ) -> dict[str, Any]:
        base = self.site.base_url
        return {
            "site": self.site,
            "base_url": base,
            "subscriber": subscriber,
            "articles": articles,
            "count": len(articles),
            "frequency": frequency,
            "frequency_label": FREQUENCY_LABELS[frequency],
            "categories": sorted({a.category.name for a in articles}),
            "unsubscribe_url": unsubscribe_url(base, self.secret_key, subscriber.key),
            "feeds": {
                "rss": f"{base}/rss.xml",
                "atom": f"{base}/atom.xml",
                "json": f"{base}/feed.json",
            },
            "now": now,
        }

    def render(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        now: datetime,
    ) -> Rendered:
        context = self.context(subscriber, articles, frequency, now)
        subject = " ".join(self.templates.render("email/subject.txt.j2", **context).split())
        if not subject:
            raise TemplateError("email/subject.txt.j2", "rendered an empty subject")
        text = self.templates.render("email/digest.txt.j2", **context)
        html = self.inliner.inline(self.templates.render("email/digest.html.j2", **context))
        return Rendered(subject, text, html)

    def compose(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        message_id: str,
        now: datetime,
    ) -> bytes:
        """The whole message, CRLF line endings, ready for SMTP DATA (and signed if configured)."""
        rendered = self.render(subscriber, articles, frequency, now)
        return self.message_bytes(subscriber, rendered, message_id, now)

    def message_bytes(
        self, subscriber: Subscriber, rendered: Rendered, message_id: str, now: datetime
    ) -> bytes:
        url = unsubscribe_url(self.site.base_url, self.secret_key, subscriber.key)
        boundary = "=_bantin_" + hashlib.sha1(message_id.encode()).hexdigest()[:24]
        headers = [
            ("From", format_address(self.sender_name, self.sender)),
            ("To", format_address(subscriber.name, subscriber.email)),
            ("Subject", encode_words(_check_header("Subject", rendered.subject))),
            ("Date", format_datetime(now)),
            ("Message-ID", _check_header("Message-ID", message_id)),
            ("List-Id", self.list_id),
            ("List-Unsubscribe", f"<{_check_header('List-Unsubscribe', url)}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Auto-Submitted", "auto-generated"),
            ("MIME-Version", "1.0"),
            ("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        ]
        head = "".join(f"{name}: {value}\r\n" for name, value in headers).encode("ascii")
        part = "Content-Type: text/{}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        message = b"".join(
            [
                head,
                b"\r\n",
                f"--{boundary}\r\n".encode(),
                part.format("plain").encode(),
                _body(rendered.text),
                f"--{boundary}\r\n".encode(),
                part.format("html").encode(),
                _body(rendered.html),
                f"--{boundary}--\r\n".encode(),
            ]
        )
        if self.dkim is not None:
            import dkim

            selector, domain, key = self.dkim
            signature = dkim.sign(
                message,
                selector,
                domain,
                key,
                include_headers=[
                    b"from",
                    b"to",
                    b"subject",
                    b"date",
                    b"message-id",
                    b"list-unsubscribe",
                    b"list-unsubscribe-post",
                ],
            )
            message = signature + message
        return message
