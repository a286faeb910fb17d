"""Who an SMTP failure concerns: the recipient, this one message, or the whole mail server.

Pure: a stage of the SMTP session, the reply code and text in, a ``Verdict`` out. Only a reply
that is about one recipient may count against that subscriber (and, repeated, suspend them).
A wrong password, a relay that will not relay for us, a refused sender, TLS that cannot be
set up, a server that cannot be reached, or content the server refuses concerns every message
of the run: the run must stop, leave the mail pending, and tell the operator what to fix.

The enhanced status code (RFC 3463, ``5.1.1``) says what a reply is about: subject 1 is the
address, 2 the mailbox; 3 is the mail system, 4 routing, 5 the protocol, 6 content and 7
security or policy. Replies without one (old servers) are judged by the basic code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["Scope", "Stage", "Verdict", "classify", "enhanced_code", "shape"]

Stage = Literal["connect", "tls", "helo", "auth", "mail", "rcpt", "data", "network"]
# recipient: about this address; message: this attempt only (retry it, blame no one);
# server: the mail server or our configuration, for every message: stop the run
Scope = Literal["recipient", "message", "server"]

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"<[^>]*>|[^\s<>@]+@[^\s<>@]+")
_RELAY = re.compile(r"relay|authenticat|not permitted to send|sender.*(?:denied|rejected)", re.I)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one failed attempt means."""

    scope: Scope
    permanent: bool  # for the recipient scope: a refusal that retrying will not change
    # a refusal that a misconfigured server gives to everyone alike: repeated identically to
    # several recipients in a row, it is the server's (see DigestRun's circuit breaker)
    suspect: bool = False
    advice: str = ""  # for the server scope: what the operator should check


def enhanced_code(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 code at the start of a reply text (``5.1.1 no such user``), if any."""
    match = _ENHANCED.match(text)
    if not match:
        return None
    return int(match[1]), int(match[2]), int(match[3])


def shape(code: int | None, text: str) -> str:
    """A reply with the addresses taken out: equal for "the same refusal" to two recipients."""
    return f"{code} {_ADDRESS.sub('<>', text).strip().lower()}"


def _about_the_address(enhanced: tuple[int, int, int] | None) -> bool:
    """X.1.x is the address (but 5.1.7 and 5.1.8, the sender's: handled before), X.2.x the
    mailbox."""
    return enhanced is not None and enhanced[1] in (1, 2)


def classify(stage: Stage, code: int | None, text: str) -> Verdict:
    """The verdict on a failure at ``stage`` with reply ``code`` (None: no reply) and ``text``."""
    if stage == "network":
        # the connection broke mid-transaction: this message is in doubt, retry it
        return Verdict("message", False)
    if stage == "connect":
        return Verdict(
            "server",
            False,
            advice="check smtp.host and smtp.port, and that the mail server is running and "
            "accepts connections from this host",
        )
    if stage == "tls":
        return Verdict(
            "server",
            True,
            advice="check smtp.security: 'starttls' needs a server that offers STARTTLS with a "
            "valid certificate (usually port 587), 'tls' one that speaks TLS at once (port 465)",
        )
    if stage == "auth" or code in (530, 534, 535, 538):
        return Verdict(
            "server",
            True,
            advice="check smtp.username and the password (BANTIN_SMTP__PASSWORD); "
            "set both if the server requires a login",
        )
    enhanced = enhanced_code(text)
    sender = enhanced is not None and enhanced[1] == 1 and enhanced[2] in (7, 8)
    if stage in ("helo", "mail") or sender:
        return Verdict(
            "server",
            code is not None and code >= 500,
            advice="the server refuses our sender: check mail.from (the relay must accept "
            "that address and domain) and that this host may send through the relay",
        )
    if code == 421:
        # "closing the channel": the server's state, not the recipient's; retry the message
        return Verdict("message", False)
    permanent = code is not None and code >= 500
    if _about_the_address(enhanced):
        return Verdict("recipient", permanent)
    if stage == "rcpt":
        if _RELAY.search(text) and (enhanced is None or enhanced[1] == 7):
            return Verdict(
                "server",
                permanent,
                advice="the server will not relay our mail: set smtp.username and the "
                "password, or allow this host on the relay",
            )
        # a policy or system refusal at RCPT may be about this recipient (a blocked domain)
        # or about us: the circuit breaker tells them apart by repetition
        return Verdict("recipient", permanent, suspect=True)
    # after DATA: the server judged the message itself
    if permanent:
        return Verdict(
            "server",
            True,
            advice="the server refused the message content: read its reply, check the "
            "email templates and DKIM settings, or ask the relay's administrator",
        )
    return Verdict("recipient", False, suspect=True)
