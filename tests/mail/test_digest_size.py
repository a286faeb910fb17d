"""Digests that Gmail never clips: ``mail.max_items`` in full, the rest as links and a count,
and the HTML part under 100 KB with its unsubscribe link, whatever the number of articles.

Everything goes through the real Composer and the repository's templates; the parts are read
back by the stdlib's parser as a mail client would.
"""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

from service.content.slug import category
from service.mail.compose import HTML_BUDGET, MORE_LINKS, Composer
from service.model import Article, Subscriber
from service.settings import Settings, load_settings

KEY = b"unsubscribe key for digest tests"
NOW = datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
HOA = Subscriber("hoa.nguyen@example.org", "Nguyễn Thị Hoa")
SECTIONS = ["Thông báo", "Lịch tiếp công dân", "Tin tức", "Văn bản chỉ đạo điều hành"]


def articles(count: int, summary_words: int = 40) -> list[Article]:
    """Newest first, with titles and summaries as long as the portal's usually are."""
    summary = " ".join(["Ủy ban nhân dân tỉnh thông báo lịch tiếp công dân định kỳ"] * 8)
    return [
        Article(
            id=f"tin-{n:05d}",
            slug=f"tin-{n:05d}",
            title=f"Thông báo số {n} về việc tổ chức tiếp công dân định kỳ tháng 12 năm 2026 "
            "của Chủ tịch Ủy ban nhân dân tỉnh",
            date=NOW - timedelta(minutes=n),
            category=category(SECTIONS[n % len(SECTIONS)]),
            summary=" ".join(summary.split()[:summary_words]) + f" (tin {n}).",
            content_html="<p>x</p>",
            source=f"tin-{n:05d}.md",
        )
        for n in range(count)
    ]


def configure(project: Path, extra: str = "") -> Settings:
    config = project / "config" / "bantin.toml"
    config.write_text(
        '[site]\ntitle = "Cổng thông tin điện tử tỉnh Lai Châu"\n'
        'base_url = "https://laichau.example.gov.vn"\n'
        f'[mail]\nfrom = "Văn phòng UBND tỉnh <bantin@laichau.example.gov.vn>"\n{extra}',
        encoding="utf-8",
    )
    return load_settings(config)


def parts(data: bytes) -> tuple[str, str]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def unsubscribe(composer: Composer) -> str:
    return composer.context(HOA, [], "daily", NOW)["unsubscribe_url"]


def test_a_2000_article_digest_stays_under_100_kb_with_its_unsubscribe_link(
    project: Path,
) -> None:
    composer = Composer(configure(project), KEY)
    many = articles(2000)
    data = composer.compose(HOA, many, "daily", "<m@laichau.example.gov.vn>", NOW)
    text, html = parts(data)
    size = len(html.encode("utf-8"))
    assert size < 100_000, size
    link = unsubscribe(composer)
    assert f'href="{link}"' in html and link in text
    # the first 20 in full: title and summary
    for article in many[:20]:
        assert f">{article.title}</a>" in html and article.summary in html
        assert article.title in text and article.summary in text
    assert many[20].summary not in html and many[20].summary not in text
    # the next ones as title links, then the count of the rest, in both parts
    for article in many[20 : 20 + MORE_LINKS]:
        assert f'href="{article.link(composer.site.base_url)}"' in html
        assert article.link(composer.site.base_url) in text
    unlisted = many[20 + MORE_LINKS]
    assert unlisted.title not in html and unlisted.title not in text
    assert "Và 1980 tin khác" in html and "Và 1980 tin khác" in text
    rest = 2000 - 20 - MORE_LINKS
    assert f"và {rest} tin nữa" in html and f"và {rest} tin nữa" in text
    assert 'href="https://laichau.example.gov.vn/"' in html
    assert len(text.encode("utf-8")) < 100_000


def test_max_items_sets_how_many_are_shown_in_full(project: Path) -> None:
    composer = Composer(configure(project, "max_items = 3\n"), KEY)
    few = articles(5)
    text, html = parts(composer.compose(HOA, few, "daily", "<m@x>", NOW))
    assert [a.summary in html for a in few] == [True, True, True, False, False]
    assert [a.summary in text for a in few] == [True, True, True, False, False]
    assert "Và 2 tin khác" in html and "Và 2 tin khác" in text
    assert "tin nữa" not in html and "tin nữa" not in text  # all the rest are listed
    assert "5 tin mới" in html  # the count is of the whole digest


def test_a_digest_within_max_items_has_no_list_of_others(project: Path) -> None:
    composer = Composer(configure(project), KEY)
    text, html = parts(composer.compose(HOA, articles(20), "daily", "<m@x>", NOW))
    assert "tin khác" not in html and "tin khác" not in text


def test_long_articles_in_full_are_cut_until_the_html_fits(project: Path) -> None:
    # the operator asked for 1000 in full, with summaries of 600 characters: too much for Gmail
    composer = Composer(configure(project, "max_items = 1000\n"), KEY)
    many = articles(1500, summary_words=120)
    text, html = parts(composer.compose(HOA, many, "weekly", "<m@x>", NOW))
    size = len(html.encode("utf-8"))
    assert size <= HTML_BUDGET, size
    assert f'href="{unsubscribe(composer)}"' in html
    assert many[0].summary in html  # the newest are shown in full first
    shown = sum(a.summary in html for a in many)
    assert 1 <= shown < 1000
    assert f"Và {1500 - shown} tin khác" in html and f"Và {1500 - shown} tin khác" in text
    # the text part follows the same rule: the same articles in full
    assert sum(a.summary in text for a in many) == shown
