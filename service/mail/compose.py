"""The digest a subscriber gets: the operators' email templates rendered, then made bytes.

Rendering uses templates/email/ (sandboxed, HTML autoescaped, CSS inlined without remote
fetches); mime.py turns the result into the message. One Composer per configuration.

A digest is never clipped: Gmail hides everything after ~102 KB of HTML, the unsubscribe link
too. The templates show ``mail.max_items`` articles in full (``articles``), the next ones as
title links (``more``, at most MORE_LINKS), and count the rest; a digest whose HTML still
comes out over HTML_BUDGET is rendered again with fewer links, then fewer full articles.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import css_inline

from service.content.markup import html_to_paragraphs
from service.errors import TemplateError
from service.ical import CalendarSpec, calendar_bytes, stateless_sequence
from service.mail.events import DigestEvents, tally, update_label
from service.mail.mime import (
    DkimKey,
    Envelope,
    InlineImage,
    build_message,
    format_address,
)
from service.mail.renders import SharedRenders
from service.mail.tokens import preferences_url, unsubscribe_url
from service.mail.verp import return_path, unsubscribe_mailto
from service.model import FREQUENCIES, Article, Category, Event, Frequency, Subscriber
from service.settings import Settings, read_logo
from service.templating import Templates

__all__ = [
    "EMAIL_TEMPLATES",
    "FREQUENCY_LABELS",
    "GREETING_WITHOUT_NAME",
    "HTML_BUDGET",
    "MORE_LINKS",
    "Composer",
    "Rendered",
]

EMAIL_TEMPLATES = [
    "email/subject.txt.j2",
    "email/digest.txt.j2",
    "email/digest.html.j2",
    "email/_events.txt.j2",
    "email/_events.html.j2",
]
GREETING_WITHOUT_NAME = "quý độc giả"  # "Kính gửi quý độc giả," reads as a letter should
FREQUENCY_LABELS = {"immediate": "ngay khi có tin", "daily": "hằng ngày", "weekly": "hằng tuần"}
MORE_LINKS = 50  # articles past mail.max_items listed as title links; the rest are counted
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
HTML_BUDGET = 90_000  # bytes of HTML: under Gmail's ~102 KB clip with room for the headers
MAX_CALENDAR_EVENTS = 200  # sessions in one digest's calendar part
NO_EVENTS = DigestEvents({}, {})


@dataclass(frozen=True, slots=True)
class Rendered:
    """One digest rendered by the email templates: subject, plain text, HTML with CSS inlined."""

    subject: str
    text: str
    html: str
    frequency: Frequency | None = None  # for Feedback-ID; None leaves it out


def _feeds(prefix: str, title: str) -> dict[str, str]:
    return {
        "title": title,
        "page": prefix,
        "rss": f"{prefix}rss.xml",
        "atom": f"{prefix}atom.xml",
        "json": f"{prefix}feed.json",
    }


def _own_feeds(
    base: str, subscriber: Subscriber, articles: Sequence[Article]
) -> list[dict[str, str]]:
    """The feeds of the categories ``subscriber`` chose (none: the site's are theirs), named
    as the digest's articles name them (a category with nothing in this digest by its slug)."""
    if subscriber.categories is None:
        return []
    names = {a.category.slug: a.category.name for a in articles}
    chosen = sorted(subscriber.categories, key=lambda slug: names.get(slug, slug))
    return [
        _feeds(f"{base}/{Category(names.get(slug, slug), slug).page_path()}", names.get(slug, slug))
        for slug in chosen
    ]


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
        self.inliner = css_inline.CSSInliner(
            load_remote_stylesheets=False, keep_style_tags=False, keep_at_rules=True
        )  # at-rules kept: the dark-mode colours apply where the mail program supports them
        self.dkim = dkim
        self.bounce_address = settings.mail.bounce_address
        self.max_items = settings.mail.max_items
        self.templates.env.filters["as_text"] = html_to_paragraphs
        # The logo travels inside each message (multipart/related, cid:) rather than as a link
        # to base_url: Outlook, Thunderbird and most webmail block remote images until the
        # reader asks, and a blocked logo is a broken box at the top of the office's letter.
        # It costs its bytes in every message, hence read_logo's size limit.
        logo = read_logo(settings.site)
        media_type = settings.site.logo_type
        self.images: tuple[InlineImage, ...] = ()
        if logo is not None and media_type is not None:
            extension = media_type.rsplit("/", 1)[-1]
            self.images = (
                InlineImage(f"logo@bantin.{self.domain}", media_type, logo, f"logo.{extension}"),
            )
        # digests of the same articles rendered once, personal values put in (renders.py)
        self.shared = SharedRenders(self, EMAIL_TEMPLATES[:3], HTML_BUDGET, EMAIL_TEMPLATES[3:])

    def envelope_sender(self, delivery_id: int | None, email: str) -> str:
        """The SMTP envelope sender (MAIL FROM) of delivery ``delivery_id`` to ``email``: its
        signed VERP address when ``mail.bounce_address`` is set, else the From address."""
        if self.bounce_address is None or delivery_id is None:
            return self.sender
        return return_path(self.bounce_address, self.secret_key, delivery_id, email)

    def check(
        self, samples: Sequence[Article] = (), now: datetime | None = None
    ) -> list[TemplateError]:
        """The email templates' problems: syntax errors, missing files, variables bantin does
        not give them (in any branch, found without rendering), then what rendering a digest of
        ``samples`` for a subscriber with and one without a name raises."""
        problems = self.templates.check(EMAIL_TEMPLATES)
        if problems:
            return problems
        sample = Subscriber("check@example.org")
        known = self.context(sample, (), "daily", now or _EPOCH).keys()
        for name in EMAIL_TEMPLATES:
            if not name.rsplit("/", 1)[-1].startswith("_"):  # a partial sees its includer's
                problems += self.templates.unknown_names(name, known)
        if problems or now is None:
            return problems
        for subscriber in (sample, Subscriber("check@example.org", "Nguyễn Văn A")):
            for frequency in FREQUENCIES:
                try:
                    self.render(subscriber, samples, frequency, now)
                except TemplateError as exc:
                    return [exc]
        return []

    def context(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        now: datetime,
        shown: int | None = None,
        links: int = MORE_LINKS,
        events: DigestEvents = NO_EVENTS,
    ) -> dict[str, Any]:
        """The variables the email templates see for one subscriber's digest: ``articles`` are
        the first ``shown`` (default ``mail.max_items``) in full, ``more`` the next ``links``
        as title links, ``more_count`` all past ``articles``, ``unlisted`` those in neither;
        ``updates`` maps the id of each article sent again because its sessions changed to
        its ``label`` and ``changes`` (see mail.events)."""
        base = self.site.base_url
        shown = self.max_items if shown is None else shown
        full, rest = articles[:shown], articles[shown:]
        return {
            "site": self.site,
            "base_url": base,
            "subscriber": subscriber,
            "articles": full,
            "more": rest[:links],
            "more_count": len(rest),
            "unlisted": max(0, len(rest) - links),
            "count": len(articles),
            "tally": tally(len(articles), sum(a.id in events.updates for a in articles)),
            "frequency": frequency,
            "frequency_label": FREQUENCY_LABELS[frequency],
            "categories": sorted({a.category.name for a in articles}),
            "updates": {
                article_id: {"label": update_label(found), "changes": found}
                for article_id, found in events.updates.items()
            },
            "unsubscribe_url": unsubscribe_url(base, self.secret_key, subscriber.key),
            "preferences_url": preferences_url(base, self.secret_key, subscriber.key),
            "greeting": subscriber.name or GREETING_WITHOUT_NAME,
            "content": self.settings.mail.content,
            "logo_src": f"cid:{self.images[0].content_id}" if self.images else None,
            "feeds": _feeds(f"{base}/", self.site.title),
            "own_feeds": _own_feeds(base, subscriber, articles),
            "now": now,
        }

    def render(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        now: datetime,
        events: DigestEvents = NO_EVENTS,
    ) -> Rendered:
        """``subscriber``'s digest of ``articles``, rendered; TemplateError if a template fails or
        the subject comes out empty. HTML over HTML_BUDGET is rendered again with fewer title
        links, then fewer full articles, down to one."""
        shown, links = self.max_items, MORE_LINKS
        while True:
            context = self.context(subscriber, articles, frequency, now, shown, links, events)
            html = self.inliner.inline(self.templates.render("email/digest.html.j2", **context))
            if len(html.encode("utf-8")) <= HTML_BUDGET or (shown <= 1 and links == 0):
                break
            if links > 0:
                links //= 2
            else:
                shown = max(1, min(shown, len(articles)) // 2)
        subject = " ".join(self.templates.render("email/subject.txt.j2", **context).split())
        if not subject:
            raise TemplateError("email/subject.txt.j2", "rendered an empty subject")
        text = self.templates.render("email/digest.txt.j2", **context)
        return Rendered(subject, text, html, frequency)

    def compose(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        message_id: str,
        now: datetime,
        delivery_id: int | None = None,
        events: DigestEvents = NO_EVENTS,
    ) -> bytes:
        """The whole message, CRLF line endings, ready for SMTP DATA (and signed if configured).

        ``delivery_id`` (the ledger's) signs the ``mailto:`` unsubscribe fallback when
        ``mail.bounce_address`` is set; without it the message has only the HTTPS link. When
        its articles have events, the message carries them as a calendar (see ``calendar``)."""

        def whole() -> tuple[str, str, str]:
            rendered = self.render(subscriber, articles, frequency, now, events)
            return rendered.subject, rendered.text, rendered.html

        # an update of sessions is told to those who were sent them: such digests are not shared
        shared = None
        if not events.updates:
            shared = self.shared.render(subscriber, articles, frequency, now, whole)
        rendered = Rendered(*(shared or whole()), frequency)
        calendar = self.calendar(articles, events)
        return self.message_bytes(subscriber, rendered, message_id, now, delivery_id, calendar)

    def calendar(self, articles: Sequence[Article], events: DigestEvents) -> bytes | None:
        """The iCalendar (METHOD:PUBLISH) of the sessions of ``articles``, at their SEQUENCE,
        with each session an update dropped marked cancelled; None when they have none."""
        entries: list[tuple[Article, Event]] = []
        for article in articles:
            entries.extend((article, event) for event in article.events)
            entries.extend(
                (article, replace(change.before, status="cancelled"))
                for change in events.updates.get(article.id, ())
                if change.after is None and change.before is not None
            )
        if not entries:
            return None
        spec = CalendarSpec(
            name=f"{self.site.title}: lịch",
            url=f"{self.site.base_url}/",
            zone=self.site.zone,
            base_url=self.site.base_url,
        )

        def sequence(article: Article, event: Event) -> int:
            found = events.sequence.get((article.id, event.uid))
            return stateless_sequence(article, event) if found is None else found

        return calendar_bytes(spec, entries[:MAX_CALENDAR_EVENTS], sequence)

    def message_bytes(
        self,
        subscriber: Subscriber,
        rendered: Rendered,
        message_id: str,
        now: datetime,
        delivery_id: int | None = None,
        calendar: bytes | None = None,
    ) -> bytes:
        """The whole message of a rendered digest, ready for SMTP DATA, DKIM-signed if set up."""
        mailto = feedback = None
        if self.bounce_address is not None:
            if delivery_id is not None:
                mailto = unsubscribe_mailto(
                    self.bounce_address, self.secret_key, delivery_id, subscriber.email
                )
            if rendered.frequency is not None:
                feedback = f"digest:{rendered.frequency}:{self.domain}"
        envelope = Envelope(
            sender=format_address(self.sender_name, self.sender),
            to=format_address(subscriber.name, subscriber.email),
            subject=rendered.subject,
            date=now,
            message_id=message_id,
            list_id=self.list_id,
            unsubscribe_url=unsubscribe_url(self.site.base_url, self.secret_key, subscriber.key),
            unsubscribe_mailto=mailto,
            feedback_id=feedback,
        )
        return build_message(
            envelope, rendered.text, rendered.html, self.dkim, calendar, self.images
        )

    def viewable(self, html: str) -> str:
        """``html`` with its cid: images as data: URIs, for a browser (bantin preview)."""
        for image in self.images:
            data = base64.b64encode(image.data).decode("ascii")
            html = html.replace(f"cid:{image.content_id}", f"data:{image.media_type};base64,{data}")
        return html
