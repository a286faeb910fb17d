"""What a subscriber reads: the greeting, the subject of a one-article alert, the feeds the
footer offers, the time of an appointment. Messages are parsed back as a mail client would."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from smtpserver import Server, running_server
from test_compose import ARTICLES, KEY, NOW, configure, parse, parts

from service.mail.compose import Composer
from service.mail.mime import message_id
from service.mail.transport import SmtpTransport
from service.model import Article, Frequency, Subscriber

NAMELESS = Subscriber("phongtiepdan@example.org", None, "immediate", None)


@pytest.fixture
def server() -> Iterator[Server]:
    with running_server() as running:
        yield running


def read(
    composer: Composer, subscriber: Subscriber, articles: list[Article], frequency: Frequency
) -> tuple[EmailMessage, str, str]:
    mid = message_id(subscriber.key, [a.id for a in articles], composer.domain)
    message = parse(composer.compose(subscriber, articles, frequency, mid, NOW))
    return (message, *parts(message))


def test_without_a_name_the_greeting_reads_as_a_letter(project: Path) -> None:
    composer = Composer(configure(project), KEY)
    _, text, html = read(composer, NAMELESS, ARTICLES, "daily")
    assert "Kính gửi quý độc giả," in text and "Kính gửi quý độc giả," in html
    assert "Kính gửi phongtiepdan@example.org" not in text + html


def test_a_one_article_digest_is_titled_by_its_article_over_smtp(
    project: Path, server: Server
) -> None:
    settings = configure(project)
    composer = Composer(settings, KEY)
    alert = ARTICLES[0]
    mid = message_id(NAMELESS.key, [alert.id], composer.domain)
    data = composer.compose(NAMELESS, [alert], "immediate", mid, NOW)
    smtp = settings.smtp.model_copy(update={"port": server.port, "security": "none"})
    transport = SmtpTransport(smtp)

    async def send() -> None:
        try:
            assert (await transport.send(composer.sender, NAMELESS.email, data)).ok
        finally:
            await transport.close()

    asyncio.run(send())
    [received] = server.received
    assert str(received.message["Subject"]) == f"{alert.title} – Cổng thông tin tỉnh"
    two = read(composer, NAMELESS, ARTICLES, "immediate")[0]
    assert str(two["Subject"]) == "Cổng thông tin tỉnh: 2 tin mới"


def test_a_one_category_subscriber_is_offered_that_category_s_feeds(project: Path) -> None:
    composer = Composer(configure(project), KEY)
    chosen = Subscriber("hoa@example.org", "Hoa", "daily", frozenset({"lich-tiep-cong-dan"}))
    _, text, html = read(composer, chosen, ARTICLES[:1], "daily")
    own = "https://tinh.example.gov.vn/categories/lich-tiep-cong-dan/rss.xml"
    assert own in text and own in html
    assert "Lịch tiếp công dân" in html.split("Theo dõi chuyên mục", 1)[1]
    assert "https://tinh.example.gov.vn/rss.xml" not in text + html
    everyone = read(composer, NAMELESS, ARTICLES, "daily")[1]
    assert "https://tinh.example.gov.vn/rss.xml" in everyone and "/categories/" not in everyone


def test_the_time_of_an_appointment_is_shown_and_a_bare_date_has_none(project: Path) -> None:
    composer = Composer(configure(project), KEY)
    at_eight = replace(ARTICLES[0], date=datetime(2026, 11, 25, 1, 0, tzinfo=UTC))  # 08:00 +7
    midnight = replace(ARTICLES[1], date=datetime(2026, 11, 24, 17, 0, tzinfo=UTC))  # 00:00 +7
    _, text, html = read(composer, NAMELESS, [at_eight, midnight], "daily")
    assert "Lịch tiếp công dân · 25/11/2026, 08:00\n" in text
    assert "Thông báo · 25/11/2026\n" in text  # a date alone, not "00:00"
    assert "25/11/2026, 08:00" in html and "00:00" not in html


def test_the_office_can_send_full_text_with_images_sized_for_phones(project: Path) -> None:
    body = (
        "<p>Lịch tiếp <strong>định kỳ</strong>:</p>"
        "<table><thead><tr><th>Giờ</th><th>Nơi</th></tr></thead>"
        "<tbody><tr><td>07h30</td><td>Trụ sở</td></tr></tbody></table>"
        '<p><img src="https://tinh.example.gov.vn/anh.jpg" alt="Trụ sở tiếp dân" width="1600"></p>'
    )
    full = replace(ARTICLES[0], content_html=body)
    summary_only = read(Composer(configure(project), KEY), NAMELESS, [full], "daily")
    assert "07h30" not in summary_only[1] + summary_only[2]
    composer = Composer(configure(project, extra='content = "full"\n'), KEY)
    _, text, html = read(composer, NAMELESS, [full], "daily")
    assert "<strong>định kỳ</strong>" in html and "<td" in html
    image = re.search(r"<img [^>]*>", html)
    assert image is not None and "max-width: 100%" in image.group(0)
    assert "height: auto" in image.group(0)
    assert "   Giờ | Nơi\n" in text and "   07h30 | Trụ sở\n" in text
    assert "   [Trụ sở tiếp dân]" in text
    assert full.summary not in text  # the text itself, not its summary
