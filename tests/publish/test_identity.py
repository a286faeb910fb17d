"""The office's identity (logo, colour, contact, footer) on its pages and in its digest, set in
the config alone: real files, a real build, messages parsed back as a mail client would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.content.source import Source
from service.errors import ConfigError
from service.mail.compose import Composer
from service.mail.mime import message_id
from service.model import Subscriber
from service.publish.build import Builder
from service.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
LOGO = (REPO / "config" / "logo.png").read_bytes()
IDENTITY = (
    'logo = "config/logo.png"\naccent_color = "#B3261E"\n'
    'contact_address = "Số 1 đường Trần Hưng Đạo"\ncontact_phone = "0213 3876 543"\n'
    'contact_email = "vanphong@example.gov.vn"\n'
    'footer = "Bản tin của Văn phòng.\\nMọi ý kiến xin gửi về địa chỉ trên."\n'
)


def configure(project: Path, identity: str = IDENTITY) -> Settings:
    (project / "config" / "logo.png").write_bytes(LOGO)
    path = project / "config" / "bantin.toml"
    path.write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        f'author = "Văn phòng UBND tỉnh"\n{identity}'
        '[mail]\nfrom = "Văn phòng <bantin@tinh.example.gov.vn>"\n',
        encoding="utf-8",
    )
    return load_settings(path)


def test_pages_carry_the_logo_colour_contact_and_footer(
    project: Path, write: Callable[[str, str], Path]
) -> None:
    settings = configure(project)
    write("a.md", "---\ntitle: Tin\ndate: 2026-11-20\n---\nNội dung.\n")
    Builder(settings, settings.site.templates_dir).build(
        Source(settings.source.dir, settings.site.zone).scan(), NOW
    )
    public = project / "public"
    assert (public / "logo.png").read_bytes() == LOGO
    for page in ("index.html", "articles/a/index.html", "categories/index.html", "404.html"):
        text = (public / page).read_text(encoding="utf-8")
        assert '<img src="https://tinh.example.gov.vn/logo.png"' in text, page
        # the colour comes before the shared stylesheet, whose dark-mode --accent must win
        colour = text.index(":root{--accent:#b3261e;--brand:#b3261e}")
        assert colour < text.index('href="https://tinh.example.gov.vn/assets/style.css"'), page
        assert "Số 1 đường Trần Hưng Đạo" in text and 'href="tel:02133876543"' in text
        assert "Bản tin của Văn phòng.<br>Mọi ý kiến" in text
    css = (public / "assets/style.css").read_text(encoding="utf-8")
    light, dark = (
        css.index(":root{--text:"),
        css.index("(prefers-color-scheme:dark){:root{--accent:"),
    )
    assert light < dark and "--accent:" not in css[:dark] and "var(--brand)" in css
    plain = configure(project, "")
    Builder(plain, plain.site.templates_dir).build(
        Source(plain.source.dir, plain.site.zone).scan(), NOW
    )
    assert not (public / "logo.png").exists()  # an old logo is not left behind
    assert "<img" not in (public / "index.html").read_text(encoding="utf-8")


def test_the_digest_carries_the_logo_inside_the_message(project: Path) -> None:
    import email
    import email.policy

    from service.content.slug import category
    from service.model import Article

    articles = [
        Article("a", "a", "Lịch tiếp", NOW, category("Thông báo"), "Tóm tắt.", "<p>x</p>", "a.md")
    ]
    settings = configure(project)
    composer = Composer(settings, b"k" * 32)
    reader = Subscriber("doc.gia@example.org")
    data = composer.compose(reader, articles, "daily", message_id(reader.key, ["x"], "x.vn"), NOW)
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    related = message.get_payload()[1]
    assert related.get_content_type() == "multipart/related"
    html_part, image = related.get_payload()
    html = html_part.get_content()
    assert image.get_content_type() == "image/png" and image.get_content() == LOGO
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html
    assert "color: #b3261e" in html  # the accent, inlined
    text = message.get_body(("plain",)).get_content()
    assert "Điện thoại: 0213 3876 543" in text and "Mọi ý kiến xin gửi" in text
    assert "data:image/png;base64," in composer.viewable(html)  # what preview writes


@pytest.mark.parametrize(
    ("identity", "needle"),
    [
        ('accent_color = "red"\n', "site.accent_color"),
        ('logo = "config/logo.svg"\n', "site.logo"),
    ],
)
def test_a_bad_colour_or_logo_kind_is_refused_with_its_key(
    project: Path, identity: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        configure(project, identity)
    assert needle in str(caught.value) and caught.value.line == 5


def test_check_names_a_logo_that_is_missing_not_an_image_or_too_big(project: Path) -> None:
    configure(project)
    (project / "config" / "subscribers.toml").write_text("", encoding="utf-8")
    logo = project / "config" / "logo.png"

    def check() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "service", "check"],
            cwd=project, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1 and "Traceback" not in done.stderr
        return done.stdout

    logo.write_bytes(b"<svg/>")
    assert f"{logo}: site.logo is not a valid image/png file" in check()
    logo.write_bytes(LOGO[:8] + b"\0" * 70_000)
    assert "site.logo is 68 KB" in check()
    logo.unlink()
    assert f"{logo}: site.logo cannot be read" in check()


def test_the_logo_and_a_calendar_travel_together(project: Path) -> None:
    import email
    import email.policy

    from service.content.slug import category
    from service.model import Article, Event

    settings = configure(project)
    composer = Composer(settings, b"k" * 32)
    session = Event("1", "Tiếp công dân", datetime(2026, 12, 15, 0, 30, tzinfo=UTC))
    lich = Article(
        "lich", "lich", "Lịch tiếp", NOW, category("Lịch"), "Tóm tắt.", "<p>x</p>", "lich.md",
        events=(session,),
    )  # fmt: skip
    reader = Subscriber("doc.gia@example.org")
    data = composer.compose(reader, [lich], "daily", message_id(reader.key, ["l"], "x.vn"), NOW)
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert message.get_content_type() == "multipart/mixed"
    types = [part.get_content_type() for part in message.walk()]
    assert types == [
        "multipart/mixed", "multipart/alternative", "text/plain", "multipart/related",
        "text/html", "image/png", "text/calendar",
    ]  # fmt: skip
    html = message.get_body(("html",)).get_content()
    [image] = [p for p in message.walk() if p.get_content_type() == "image/png"]
    assert f'src="cid:{image["Content-ID"].strip("<>")}"' in html
