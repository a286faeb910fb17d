"""The mails of the subscription form: the confirmation link, or "you are subscribed already".

Rendered from templates/email/signup*.j2 like digests (sandboxed, CSS inlined), signed with DKIM
when digests are; not list mail, so no List-Unsubscribe and no Precedence: bulk.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Literal

from service.errors import TemplateError
from service.mail.compose import Composer
from service.mail.mime import Envelope, build_message, format_address
from service.model import Subscriber

__all__ = ["SIGNUP_TEMPLATES", "Notice", "Notices"]

SIGNUP_TEMPLATES = [
    "email/signup_subject.txt.j2",
    "email/signup.txt.j2",
    "email/signup.html.j2",
]

Notice = Literal["confirm", "subscribed"]


class Notices:
    """Builds the sign-up mails with a configuration's composer (its templates, sender, DKIM)."""

    def __init__(self, composer: Composer) -> None:
        self.composer = composer

    def build(
        self,
        kind: Notice,
        to: Subscriber,
        now: datetime,
        *,
        confirm_url: str = "",
        hours: int = 0,
        preferences_url: str = "",
    ) -> bytes:
        """The whole message of ``kind`` for ``to``; TemplateError if a template fails."""
        c = self.composer
        context = {
            "kind": kind,
            "site": c.site,
            "base_url": c.site.base_url,
            "email": to.email,
            "person": to.name,
            "confirm_url": confirm_url,
            "hours": hours,
            "preferences_url": preferences_url,
            "now": now,
        }
        subject = " ".join(c.templates.render(SIGNUP_TEMPLATES[0], **context).split())
        if not subject:
            raise TemplateError(SIGNUP_TEMPLATES[0], "rendered an empty subject")
        text = c.templates.render(SIGNUP_TEMPLATES[1], **context)
        html = c.inliner.inline(c.templates.render(SIGNUP_TEMPLATES[2], **context))
        envelope = Envelope(
            sender=format_address(c.sender_name, c.sender),
            to=format_address(to.name, to.email),
            subject=subject,
            date=now,
            message_id=f"<signup.{secrets.token_hex(16)}@{c.domain}>",
            list_id=c.list_id,
            unsubscribe_url=None,
        )
        return build_message(envelope, text, html, c.dkim)

    @property
    def sender(self) -> str:
        """The envelope sender: the From address (a bounce names no delivery of ours)."""
        return self.composer.envelope_sender(None, "")
