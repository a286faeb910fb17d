"""The digest a subscriber gets: the operators' email templates rendered, then made bytes.

Rendering uses templates/email/ (sandboxed, HTML autoescaped, CSS inlined without remote
fetches); mime.py turns the result into the message. One Composer per configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import css_inline

from service.errors import TemplateError
from service.mail.mime import (
    DkimKey,
    Envelope,
    build_message,
    format_address,
)
from service.mail.tokens import unsubscribe_url
from service.model import Article, Frequency, Subscriber
from service.settings import Settings
from service.templating import Templates

__all__ = ["EMAIL_TEMPLATES", "FREQUENCY_LABELS", "Composer", "Rendered"]

EMAIL_TEMPLATES = ["email/subject.txt.j2", "email/digest.txt.j2", "email/digest.html.j2"]
FREQUENCY_LABELS = {"immediate": "ngay khi có tin", "daily": "hằng ngày", "weekly": "hằng tuần"}


@dataclass(frozen=True, slots=True)
class Rendered:
    """One digest rendered by the email templates: subject, plain text, HTML with CSS inlined."""

    subject: str
    text: str
    html: str


class Composer:
    """Renders digests with the email templates and builds their bytes; one per configuration."""

    def __init__(self, settings: Settings, secret_key: bytes, dkim: DkimKey | None = None) -> None:
        self.settings = settings
        self.site = settings.site
        self.secret_key = secret_key
        self.templates = Templates(
            settings.site.templates_dir, zone=settings.site.zone, language=settings.site.language
        )
        self.sender_name, self.sender = settings.mail.sender  # checked by the settings
        self.domain = self.sender.rsplit("@", 1)[1]
        # a phrase like a display name: a title such as "Tỉnh <A>, B" must not move the id
        self.list_id = format_address(self.site.title, f"bantin.{self.domain}")
        self.inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False)
        self.dkim = dkim

    def check(self) -> list[TemplateError]:
        """The email templates' problems (syntax errors, missing files), found without rendering."""
        return self.templates.check(EMAIL_TEMPLATES)

    def context(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        now: datetime,
    ) -> dict[str, Any]:
        """The variables the email templates see for one subscriber's digest."""
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
        """``subscriber``'s digest of ``articles``, rendered; TemplateError if a template fails or
        the subject comes out empty."""
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
        """The whole message of a rendered digest, ready for SMTP DATA, DKIM-signed if set up."""
        envelope = Envelope(
            sender=format_address(self.sender_name, self.sender),
            to=format_address(subscriber.name, subscriber.email),
            subject=rendered.subject,
            date=now,
            message_id=message_id,
            list_id=self.list_id,
            unsubscribe_url=unsubscribe_url(self.site.base_url, self.secret_key, subscriber.key),
        )
        return build_message(envelope, rendered.text, rendered.html, self.dkim)
