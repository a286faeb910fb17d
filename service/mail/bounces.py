"""One reader for everything that comes back: bounces, complaints, auto-replies (pure, no I/O).

``parse(data, bounce_address)`` takes one RFC 5322 message as bytes and says what it reports,
as a list of ``Finding``s, one per address it is about:

- RFC 3464 delivery status notifications (``multipart/report; report-type=delivery-status``),
  per recipient: Status 5.x.x is ``hard``, 4.x.x (or Action: delayed) ``soft``; 5.2.2, the
  mailbox full, counts as soft too (RFC 3463 calls it transient). A Status of X.0.0 takes the
  more precise code the Diagnostic-Code gives. Delivered/relayed/expanded notices are not
  failures and give nothing.
- RFC 5965 ARF feedback reports: a ``complaint``. Providers that redact the recipient
  (Yahoo) still give the VERP address as Original-Mail-From: the token names the delivery.
- The plain-text bounces big providers and old MTAs still send (Exim's X-Failed-Recipients,
  qmail, Yahoo, ...): addresses from X-Failed-Recipients and flufl.bounce's detectors, the
  SMTP reply near each address in the text.
- Auto-replies (RFC 3834 Auto-Submitted: auto-replied, vacation and out-of-office notices):
  ``autoreply``, which must never count as a bounce.
- Mail to the ``mailto:`` List-Unsubscribe fallback (bounces+unsub-<token>@): ``unsubscribe``.
- Anything else: one ``unknown`` finding (kept, never acted on).

Each finding carries the VERP token found in the envelope headers (Delivered-To, X-Original-To,
To, the report's Original-Mail-From, the returned message's Return-Path): unverified here; check
it with ``verp.read_token``. And the Message-ID of our message when the report quotes it, which
identifies the delivery too (ours are derived from the subscriber and the articles).
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Literal

from flufl.bounce import all_failures

from service.mail.verp import UNSUBSCRIBE_PREFIX, token_of

__all__ = ["Finding", "Kind", "parse"]

Kind = Literal["hard", "soft", "complaint", "autoreply", "unsubscribe", "unknown"]
Source = Literal["dsn", "arf", "text", "headers"]


@dataclass(frozen=True, slots=True)
class Finding:
    """What a returned message says about one address (see the module)."""

    kind: Kind
    address: str | None  # lower-cased; None when the report does not name it (redacted)
    status: str | None = None  # RFC 3463 enhanced code, "5.1.1"
    diagnostic: str = ""  # the remote server's words, on one line
    token: str | None = None  # the VERP token (unverified), "unsub-" kept in front
    message_id: str | None = None  # of our message, when the report quotes it
    source: Source = "headers"  # how it was read


_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_REPLY = re.compile(r"(?<![\d.])([245]\d\d)(?:[ -]+([245]\.\d{1,3}\.\d{1,3}))?(?![\d.])")
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_DAEMON = re.compile(r"^(?:mailer-?daemon|postmaster|mail-?daemon|mdaemon)@", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification|failure|failed|has failed)|returned mail|"
    r"failure notice|mail delivery failed|non-?delivery|could not be delivered|"
    r"delivery problem|thư không (?:gửi|chuyển) được",
    re.IGNORECASE,
)
_AUTOREPLY_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|antwort)|out of (?:the )?office|"
    r"vacation|away from|trả lời tự động|abwesenheit|r[ée]ponse automatique)",
    re.IGNORECASE,
)
_COMPLAINT_SUBJECT = re.compile(r"\s*complaint about message from", re.IGNORECASE)
_INLINE_ID = re.compile(r"^Message-ID:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_COMPLAINTS = {"abuse", "fraud", "virus", "other", "complaint", "opt-out", "opt-out-list"}
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_DIAGNOSTIC_MAX = 500


def parse(data: bytes, bounce_address: str | None = None) -> list[Finding]:
    """The findings of one message (never empty; ``unknown`` when nothing is recognised).

    ``bounce_address`` is ``mail.bounce_address``: tokens are looked for only in its VERP
    addresses (None: no tokens).
    """
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    token = _envelope_token(message, bounce_address)
    sender = _address(message.get("From", ""))
    if token is not None and token.startswith(UNSUBSCRIBE_PREFIX):
        return [Finding("unsubscribe", sender, token=token)]
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/feedback-report":
            return _arf(message, part, bounce_address, token)
        if kind in ("message/delivery-status", "message/global-delivery-status"):
            found = _dsn(message, part, token)
            if found:
                return found
    returned = _returned(message)
    if returned is not None and _COMPLAINT_SUBJECT.match(str(message.get("Subject", ""))):
        # Microsoft's older feedback loop: the message forwarded whole, without an ARF part
        address = _address(str(returned.get("To", "")))
        return [Finding("complaint", address, None, "complaint", token, _returned_id(message))]
    if _looks_like_bounce(message, sender):
        found = _text_bounce(message, sender, bounce_address, token)
        if found:
            return found
    if _is_autoreply(message):
        return [Finding("autoreply", sender, token=token)]
    return [Finding("unknown", None, token=token, message_id=_returned_id(message))]


# --- envelope and headers ------------------------------------------------------------------


def _address(value: str) -> str | None:
    address = parseaddr(value)[1].strip().lower()
    return address if _ADDRESS.fullmatch(address) else None


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_DIAGNOSTIC_MAX]


def _tokens(values: Iterable[str], bounce_address: str | None) -> Iterator[str]:
    if bounce_address is None:
        return
    for _, address in getaddresses([v for v in values if v]):
        token = token_of(bounce_address, address) if address else None
        if token is not None:
            yield token


def _envelope_token(message: Message, bounce_address: str | None) -> str | None:
    values = [str(v) for name in _ENVELOPE_HEADERS for v in message.get_all(name) or []]
    return next(_tokens(values, bounce_address), None)


def _returned(message: Message) -> Message | None:
    """The message a report returns (message/rfc822, or text/rfc822-headers parsed)."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global") and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message):
                return inner
        if kind in ("text/rfc822-headers", "message/global-headers"):
            text = _text_of(part)
            return email.message_from_string(text.lstrip(), policy=email.policy.compat32)
    return None


def _returned_id(message: Message) -> str | None:
    returned = _returned(message)
    value = returned.get("Message-ID") if returned is not None else None
    return " ".join(str(value).split()) or None if value else None


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _body(message: Message) -> str:
    """The human-readable text of a message: its text/plain parts, else text/html untagged;
    the returned original message is left out."""
    plain: list[str] = []
    html: list[str] = []

    def visit(part: Message) -> None:
        kind = part.get_content_type()
        if kind.startswith("message/") or kind == "text/rfc822-headers":
            return
        if part.is_multipart():
            for sub in part.get_payload():
                if isinstance(sub, Message):
                    visit(sub)
        elif kind == "text/plain":
            plain.append(_text_of(part))
        elif kind == "text/html":
            html.append(re.sub(r"<[^>]*>", " ", _text_of(part)))

    visit(message)
    return "\n".join(plain or html)


# --- RFC 3464 ------------------------------------------------------------------------------


def _fields(part: Message) -> list[Message]:
    """The blocks of a delivery-status part: per message first, then per recipient."""
    payload = part.get_payload()
    blocks = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
    if blocks and any(block.keys() for block in blocks):
        return blocks
    text = _text_of(part).replace("\r\n", "\n")
    return [
        email.message_from_string(block.strip() + "\n", policy=email.policy.compat32)
        for block in re.split(r"\n\s*\n", text)
        if block.strip()
    ]


def _typed_address(value: str | None) -> str | None:
    """``rfc822; a@b`` (or a bare address) -> a@b, lower-cased."""
    if not value:
        return None
    kind, _, address = str(value).partition(";")
    if not address:
        address = kind
    elif kind.strip().lower() not in ("rfc822", "utf-8", ""):
        return None
    return _address(address.strip())


def _status(status: str | None, diagnostic: str) -> str | None:
    """The enhanced code of a Status field; X.0.0 gives way to a precise one in the text."""
    found = _ENHANCED.search(status or "")
    precise = _ENHANCED.search(diagnostic)
    if found and found.group(2, 3) == ("0", "0") and precise and precise[1] == found[1]:
        found = precise
    if found is None:
        found = precise
    if found is None:
        reply = _REPLY.search(diagnostic)
        return f"{reply[1][0]}.0.0" if reply else None
    return found.group(0)


def _kind(status: str | None, delayed: bool = False) -> Kind | None:
    if delayed:
        return "soft"
    if status is None:
        return None
    if status.startswith("5"):
        return "soft" if status.startswith("5.2.2") else "hard"
    if status.startswith("4"):
        return "soft"
    return None  # 2.x.x: delivered


def _dsn(message: Message, part: Message, token: str | None) -> list[Finding]:
    message_id = _returned_id(message)
    findings = []
    for block in _fields(part):
        address = _typed_address(block.get("Original-Recipient")) or _typed_address(
            block.get("Final-Recipient")
        )
        if address is None:
            continue
        action = str(block.get("Action", "")).strip().lower()
        if action in ("delivered", "relayed", "expanded"):
            continue
        diagnostic = _one_line(str(block.get("Diagnostic-Code", "")).partition(";")[2])
        status = _status(block.get("Status"), diagnostic)
        kind = _kind(status, delayed=action == "delayed")
        if kind is None and action == "failed":
            kind = "hard"
        if kind is not None:
            findings.append(Finding(kind, address, status, diagnostic, token, message_id, "dsn"))
    return findings


# --- RFC 5965 ------------------------------------------------------------------------------


def _arf(
    message: Message, part: Message, bounce_address: str | None, token: str | None
) -> list[Finding]:
    fields = _fields(part)
    report = fields[0] if fields else Message()
    returned = _returned(message)
    feedback = str(report.get("Feedback-Type", "")).strip().lower()
    address = _typed_address(report.get("Original-Rcpt-To")) or _typed_address(
        report.get("Removal-Recipient")
    )
    if address is None and returned is not None:
        candidate = _address(str(returned.get("To", "")))
        if candidate and "redacted" not in candidate and "*" not in candidate:
            address = candidate
    envelope = [str(report.get("Original-Mail-From", ""))]
    if returned is not None:
        envelope += [str(v) for v in returned.get_all("Return-Path") or []]
    token = next(_tokens(envelope, bounce_address), token)
    message_id = _returned_id(message)
    if feedback not in _COMPLAINTS:
        return [Finding("unknown", address, None, f"feedback type {feedback!r}", token, message_id)]
    detail = _one_line(f"{feedback}: {report.get('User-Agent', '')}")
    return [Finding("complaint", address, None, detail, token, message_id, "arf")]


# --- the rest ------------------------------------------------------------------------------


def _looks_like_bounce(message: Message, sender: str | None) -> bool:
    if message.get("X-Failed-Recipients"):
        return True
    if sender is not None and _DAEMON.match(sender):
        return True
    return bool(_BOUNCE_SUBJECT.search(str(message.get("Subject", ""))))


def _is_autoreply(message: Message) -> bool:
    submitted = str(message.get("Auto-Submitted", "")).strip().lower()
    if submitted.startswith("auto-replied"):
        return True
    if any(message.get(h) for h in ("X-Autoreply", "X-Autorespond", "X-Autoresponse")):
        return True
    if str(message.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    subject = str(message.get("Subject", "")).strip()
    return bool(_AUTOREPLY_SUBJECT.match(subject))


def _flufl(message: Message) -> tuple[set[str], set[str]]:
    """flufl.bounce's (temporary, permanent) addresses, as lower-cased text."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # its detectors are heuristics over hostile input: a crash finds nothing
        return set(), set()

    def text(values: Iterable[bytes | str]) -> set[str]:
        decoded = (v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values)
        return {a for a in (_address(d) for d in decoded) if a}

    return text(temporary), text(permanent)


def _text_bounce(
    message: Message, sender: str | None, bounce_address: str | None, token: str | None
) -> list[Finding]:
    failed = [
        a for _, a in getaddresses(message.get_all("X-Failed-Recipients") or []) if _address(a)
    ]
    temporary, permanent = _flufl(message)
    ours = {sender, (bounce_address or "").lower()}
    addresses = list(dict.fromkeys(a.lower() for a in [*failed, *permanent, *temporary]))
    body = _body(message)
    inline = _INLINE_ID.search(body)  # a copy of the message pasted in the text (qmail, Yahoo)
    message_id = _returned_id(message) or (inline[1] if inline else None)
    findings = []
    for address in addresses:
        if address in ours or (bounce_address and token_of(bounce_address, address)):
            continue
        status, diagnostic = _near(body, address)
        kind = _kind(status)
        if kind is None:
            kind = "soft" if address in temporary and address not in permanent else "hard"
        findings.append(Finding(kind, address, status, diagnostic, token, message_id, "text"))
    return findings


def _near(body: str, address: str) -> tuple[str | None, str]:
    """The SMTP reply written after ``address`` in a bounce's text: (status, that line)."""
    at = body.lower().find(address)
    window = body[at : at + 800] if at >= 0 else body[:800]
    reply = _REPLY.search(window)
    enhanced = _ENHANCED.search(window)
    if reply is None and enhanced is None:
        return None, ""
    found = reply if reply is not None else enhanced
    assert found is not None
    start = window.rfind("\n", 0, found.start()) + 1
    end = window.find("\n\n", found.end())
    line = _one_line(window[start : end if end >= 0 else len(window)])
    if enhanced is not None and (reply is None or enhanced.start() - reply.end() < 80):
        return enhanced.group(0), line
    return (f"{reply[1][0]}.0.0" if reply else None), line
