"""Citizens subscribe themselves, end to end: the real `bantin run`, a real SMTP server, real
HTTP. The form on the pages, the confirmation mail, its link (a GET does nothing, the button's
POST subscribes), the digest, the preferences page it links, unsubscribing; and the abuse a
public form draws: forged sites (CSRF), forged and expired links, mail-bombing, robots.

Requests come from 127.0.0.1, a trusted proxy by default, so X-Forwarded-For stands for other
clients where a test needs several.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from servicekit import Bantin, Mailbox, smtp_server

from service.mail.tokens import confirm_url

SECRET = "khoa-ky-lien-ket-cho-thu-nghiem"
SUBSCRIBE = """
[subscribe]
enabled = true
ip_limit = 10
address_limit = 3
"""
SENT = "Hãy kiểm tra hộp thư"


def _start(project: Path, port: int, extra: str = "") -> Bantin:
    bantin = Bantin(project, port)
    bantin.write_config(bantin.config_text() + f'secret_key = "{SECRET}"\n' + SUBSCRIBE + extra)
    bantin.publish("Thông báo lịch tiếp công dân tháng 5")  # the back catalogue
    bantin.subscribe()  # the operators' list, empty
    return bantin


@pytest.fixture
def service(project: Path) -> Iterator[tuple[Bantin, Mailbox]]:
    with smtp_server() as (port, mailbox):
        bantin = _start(project, port)
        try:
            yield bantin, mailbox
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()}")  # shown when the test fails


def version(page: str) -> str:
    """The consent version the form carries (the hidden field "v")."""
    match = re.search(r'name="v" value="([0-9a-f]+)"', page)
    assert match, page
    return match.group(1)


def submit(bantin: Bantin, email: str, *, client: str = "198.51.100.7", **fields: object):
    data: dict[str, object] = {
        "email": email,
        "frequency": "immediate",
        "v": version(bantin.get("/subscribe").text),
        **fields,
    }
    return httpx.post(
        bantin.url + "/subscribe",
        data=data,
        headers={"X-Forwarded-For": client, "Origin": bantin.url},
        timeout=5,
    )


def link(mail_text: str, kind: str) -> str:
    match = re.search(rf"(http://127\.0\.0\.1:\d+/{kind}/[A-Za-z0-9_-]+)", mail_text)
    assert match, mail_text
    return match.group(1)


def signups(bantin: Bantin) -> str:
    status = bantin.cli("status")
    assert status.returncode == 0, status.stderr
    line = next(x for x in status.stdout.splitlines() if x.startswith("Sign-ups"))
    return line.split(":", 1)[1].strip()


def settle() -> None:
    """Give a mail that must not be sent the time it would have taken to arrive."""
    time.sleep(1.0)


def test_subscribe_confirm_receive_change_and_leave(service: tuple[Bantin, Mailbox]) -> None:
    bantin, mailbox = service
    bantin.subscribe("hoa@example.org")
    bantin.start()

    # The form is on the index and on a category page, that category ticked; every field
    # has a label.
    index = bantin.get("/").text
    assert 'action="' + bantin.url + '/subscribe"' in index
    for field in ("signup-email", "signup-name"):
        assert f'<label for="{field}"' in index and f'id="{field}"' in index
    assert 'value="thong-bao">' in index  # offered, not ticked
    category = bantin.get("/categories/thong-bao/").text
    assert 'value="thong-bao" checked' in category, category

    answer = submit(bantin, "Lan@Example.org", name="Nguyễn Thị Lan")
    assert answer.status_code == 200
    assert SENT in answer.text
    mail = bantin.wait(lambda: mailbox.to("Lan@Example.org"), 10, "the confirmation mail")[0]
    assert "Xác nhận" in str(mail.message["Subject"])
    assert mail.message["List-Unsubscribe"] is None  # not list mail
    confirm = link(mail.text, "subscribe/confirm")
    assert signups(bantin) == "0 confirmed, 1 pending, 0 expired"

    # A scanner's GET (twice) shows the button and changes nothing.
    for _ in range(2):
        page = httpx.get(confirm, timeout=5)
        assert page.status_code == 200
        assert "Xác nhận</button>" in page.text
        assert "lan@example.org" in page.text.lower()
    assert signups(bantin) == "0 confirmed, 1 pending, 0 expired"

    # The button pressed from another site is refused; from the page itself, it subscribes.
    forged = httpx.post(confirm, headers={"Sec-Fetch-Site": "cross-site"}, timeout=5)
    assert forged.status_code == 403
    assert signups(bantin) == "0 confirmed, 1 pending, 0 expired"
    done = httpx.post(confirm, headers={"Origin": bantin.url}, timeout=5)
    assert done.status_code == 200
    assert "Đã đăng ký" in done.text
    assert signups(bantin) == "1 confirmed, 0 pending, 0 expired"

    # The next article reaches her like a file subscriber; the back catalogue does not.
    title = bantin.publish("Lịch nghỉ Tết Nguyên đán")
    digest = bantin.wait(lambda: mailbox.to("Lan@Example.org")[1:], 10, "lan's digest")[0]
    bantin.wait(lambda: mailbox.to("hoa@example.org"), 10, "hoa's digest")
    assert title in digest.text
    assert "tháng 5" not in digest.text
    assert digest.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    preferences = link(digest.text, "preferences")

    # Her preferences: weekly now, so the next article is not mailed to her at once.
    page = httpx.get(preferences, timeout=5)
    assert page.status_code == 200
    assert 'value="immediate" checked' in page.text
    saved = httpx.post(
        preferences,
        data={"action": "save", "frequency": "weekly", "categories": "thong-bao"},
        headers={"Origin": bantin.url},
        timeout=5,
    )
    assert saved.status_code == 200, saved.text
    assert "mỗi tuần một lần" in saved.text
    assert 'value="weekly" checked' in httpx.get(preferences, timeout=5).text
    later = bantin.publish("Kết quả tuyển dụng công chức")
    bantin.wait(lambda: len(mailbox.to("hoa@example.org")) == 2, 10, "hoa's second digest")
    settle()
    assert len(mailbox.to("Lan@Example.org")) == 2
    preview = bantin.cli("preview", "lan@example.org")
    assert preview.returncode == 0, preview.stderr
    assert later in preview.stdout  # waiting for her weekly digest
    assert title not in preview.stdout

    # Unsubscribing from the same page: the page says so, and status lists her.
    gone = httpx.post(
        preferences, data={"action": "unsubscribe"}, headers={"Origin": bantin.url}, timeout=5
    )
    assert gone.status_code == 200
    assert "Đã hủy đăng ký" in gone.text
    assert "lan@example.org" in bantin.cli("status").stdout.split("Unsubscribed:", 1)[1]
    assert "Đã hủy đăng ký" in httpx.get(preferences, timeout=5).text


def test_the_answer_is_the_same_whoever_the_address_is(service: tuple[Bantin, Mailbox]) -> None:
    bantin, mailbox = service
    bantin.subscribe("hoa@example.org")
    bantin.start()

    def page(email: str) -> str:
        answer = submit(bantin, email)
        assert answer.status_code == 200
        return answer.text.replace(email, "EMAIL")

    new = page("moi@example.org")
    assert page("hoa@example.org") == new  # in the operators' file
    assert page("moi@example.org") == new  # pending already
    assert page("robot@example.org".replace("robot", "may")) == new
    honeypot = submit(bantin, "bay@example.org", website="http://spam.example")
    assert honeypot.text.replace("bay@example.org", "EMAIL") == new
    bantin.wait(lambda: len(mailbox.to("moi@example.org")) == 2, 10, "two confirmation mails")
    bantin.wait(lambda: mailbox.to("hoa@example.org"), 10, "hoa's confirmation mail")
    settle()
    assert mailbox.to("bay@example.org") == []  # the robot's address got nothing
    assert len(mailbox.to("hoa@example.org")) == 1
    assert signups(bantin) == "0 confirmed, 3 pending, 0 expired"

    # Once confirmed, a new submission for the address changes nothing and mails a link to
    # its preferences instead; the page answered is the same again.
    confirm = link(mailbox.to("moi@example.org")[-1].text, "subscribe/confirm")
    httpx.post(confirm, headers={"Origin": bantin.url}, timeout=5)
    assert page("moi@example.org") == new
    again = bantin.wait(lambda: mailbox.to("moi@example.org")[2:], 10, "the third mail")[0]
    assert "/subscribe/confirm/" not in again.text
    assert "/preferences/" in again.text
    assert signups(bantin) == "1 confirmed, 2 pending, 0 expired"


def test_limits_per_client_and_per_address_stop_mail_bombing(
    service: tuple[Bantin, Mailbox],
) -> None:
    bantin, mailbox = service
    bantin.start()

    # One client: ten forms in the hour are taken, the eleventh is refused and mails nothing.
    for n in range(10):
        assert submit(bantin, f"nguoi{n}@example.org", client="203.0.113.9").status_code == 200
    eleventh = submit(bantin, "nguoi10@example.org", client="203.0.113.9")
    assert eleventh.status_code == 429
    assert "Xin thử lại sau" in eleventh.text
    bantin.wait(lambda: mailbox.count() == 10, 10, "ten confirmation mails")
    # another client is not held up by the first one
    assert submit(bantin, "khac@example.org", client="203.0.113.10").status_code == 200
    bantin.wait(lambda: mailbox.to("khac@example.org"), 10, "the other client's mail")
    settle()
    assert mailbox.to("nguoi10@example.org") == []

    # One address from many clients: three mails a day reach it, then nothing more, though
    # the answer stays the same.
    for n in range(6):
        answer = submit(bantin, "nannhan@example.org", client=f"192.0.2.{n + 1}")
        assert answer.status_code == 200
        assert SENT in answer.text
    bantin.wait(lambda: len(mailbox.to("nannhan@example.org")) == 3, 10, "three mails")
    settle()
    assert len(mailbox.to("nannhan@example.org")) == 3


def test_forms_from_other_sites_and_oversized_fields_are_refused(
    service: tuple[Bantin, Mailbox],
) -> None:
    bantin, mailbox = service
    bantin.start()
    v = version(bantin.get("/subscribe").text)
    form = {"email": "lan@example.org", "frequency": "daily", "v": v}
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://ke-gian.example"},
        {"Origin": "null"},
        {"Referer": "https://ke-gian.example/trang.html"},
    ):
        refused = httpx.post(bantin.url + "/subscribe", data=form, headers=headers, timeout=5)
        assert refused.status_code == 403, headers
        assert "Không nhận biểu mẫu này" in refused.text

    too_long = httpx.post(
        bantin.url + "/subscribe",
        data={**form, "name": "x" * 20_000},
        headers={"Origin": bantin.url},
        timeout=5,
    )
    assert too_long.status_code == 413
    long_name = submit(bantin, "lan@example.org", name="Lan" * 40)
    assert long_name.status_code == 400
    assert 'aria-invalid="true"' in long_name.text
    bad = submit(bantin, "khong-phai-dia-chi")
    assert bad.status_code == 400
    assert "signup-email-problem" in bad.text
    twice = submit(bantin, "lan@example.org", frequency=["daily", "weekly"])
    assert twice.status_code == 400
    hourly = submit(bantin, "lan@example.org", frequency="hourly")
    assert hourly.status_code == 400
    # a screen reader hears the fault with the group it belongs to
    assert 'aria-describedby="signup-frequency-problem"' in hourly.text
    assert 'id="signup-frequency-problem"' in hourly.text
    settle()
    assert mailbox.count() == 0
    assert signups(bantin) == "0 confirmed, 0 pending, 0 expired"


def test_forged_replaced_and_expired_links_confirm_nothing(
    service: tuple[Bantin, Mailbox],
) -> None:
    bantin, mailbox = service
    bantin.start()
    submit(bantin, "lan@example.org")
    first = link(
        bantin.wait(lambda: mailbox.to("lan@example.org"), 10, "the first mail")[0].text,
        "subscribe/confirm",
    )
    time.sleep(1.1)  # a new request is a new second: its link differs
    submit(bantin, "lan@example.org", client="198.51.100.8")
    second = link(
        bantin.wait(lambda: mailbox.to("lan@example.org")[1:], 10, "the second mail")[0].text,
        "subscribe/confirm",
    )
    assert first != second
    token = second.rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    # a link signed with the key for a moment past its 48 hours
    old = confirm_url(
        bantin.url, SECRET.encode(), "lan@example.org", datetime.now(UTC) - timedelta(hours=49)
    )
    for url, status in (
        (first, 410),
        (bantin.url + "/subscribe/confirm/" + forged, 400),
        (old, 410),
    ):
        assert httpx.get(url, timeout=5).status_code == status
        refused = httpx.post(url, headers={"Origin": bantin.url}, timeout=5)
        assert refused.status_code == status, url
        assert "Xác nhận</button>" not in refused.text
    assert signups(bantin) == "0 confirmed, 1 pending, 0 expired"
    assert httpx.post(second, headers={"Origin": bantin.url}, timeout=5).status_code == 200
    assert signups(bantin) == "1 confirmed, 0 pending, 0 expired"
    # a preferences link forged, or an unsubscribe token used as one, opens nothing
    assert httpx.get(bantin.url + "/preferences/" + forged, timeout=5).status_code == 400


def test_a_suppressed_address_needs_a_new_confirmation(service: tuple[Bantin, Mailbox]) -> None:
    bantin, mailbox = service
    bantin.subscribe("hoa@example.org")
    bantin.start()
    # hoa leaves the file's list by one-click unsubscribe...
    bantin.publish("Lịch nghỉ Tết Nguyên đán")
    digest = bantin.wait(lambda: mailbox.to("hoa@example.org"), 10, "hoa's digest")[0]
    unsubscribe = re.fullmatch(r"<(.+?)>.*", str(digest.message["List-Unsubscribe"]), re.S)
    assert unsubscribe
    httpx.post(unsubscribe.group(1), data={"List-Unsubscribe": "One-Click"}, timeout=5)
    bantin.subscribe()  # ...and the operators take her off the file
    bantin.wait(
        lambda: (bantin.health() or {}).get("subscribers", {}).get("count") == 0,
        10,
        "the emptied subscribers file",
    )
    # ...then signs up on the form: only her confirmation brings her back.
    submit(bantin, "hoa@example.org")
    confirmation = bantin.wait(lambda: mailbox.to("hoa@example.org")[1:], 10, "her mail")[0]
    assert "/subscribe/confirm/" in confirmation.text
    bantin.publish("Kết quả tuyển dụng công chức")
    settle()
    settle()
    assert len(mailbox.to("hoa@example.org")) == 2  # not mailed while unconfirmed
    httpx.post(
        link(confirmation.text, "subscribe/confirm"), headers={"Origin": bantin.url}, timeout=5
    )
    title = bantin.publish("Thông báo tuyển sinh lớp 10")
    digest = bantin.wait(lambda: mailbox.to("hoa@example.org")[2:], 10, "her new digest")[0]
    assert title in digest.text
    assert "tuyển dụng" not in digest.text  # nothing from before her new consent


def test_a_file_subscriber_wins_and_her_page_says_so(service: tuple[Bantin, Mailbox]) -> None:
    bantin, mailbox = service
    bantin.start()
    submit(bantin, "hoa@example.org", frequency="weekly")
    mail = bantin.wait(lambda: mailbox.to("hoa@example.org"), 10, "the confirmation")[0]
    httpx.post(link(mail.text, "subscribe/confirm"), headers={"Origin": bantin.url}, timeout=5)
    # the operators list her too, for immediate mail: the file decides
    bantin.subscribe("hoa@example.org", frequency="immediate")
    bantin.wait(
        lambda: (bantin.health() or {}).get("subscribers", {}).get("count") == 1,
        10,
        "the subscribers file",
    )
    title = bantin.publish("Lịch nghỉ Tết Nguyên đán")
    digest = bantin.wait(lambda: mailbox.to("hoa@example.org")[1:], 10, "the immediate digest")
    assert title in digest[0].text
    settle()
    assert len(mailbox.to("hoa@example.org")) == 2  # one digest, not one per list
    page = httpx.get(link(digest[0].text, "preferences"), timeout=5)
    assert page.status_code == 200
    assert "Địa chỉ này do cơ quan quản lý" in page.text
    assert 'name="frequency"' not in page.text  # her choices are the file's
    changed = httpx.post(
        link(digest[0].text, "preferences"),
        data={"action": "save", "frequency": "daily"},
        headers={"Origin": bantin.url},
        timeout=5,
    )
    assert "Địa chỉ này do cơ quan quản lý" in changed.text
    assert 'frequency = "immediate"' in bantin.subscribers_file.read_text(encoding="utf-8")


def test_the_hourly_limit_spares_the_relay_and_the_form_can_be_switched_off_live(
    project: Path,
) -> None:
    with smtp_server() as (port, mailbox):
        bantin = _start(project, port, "hourly_limit = 3\n")
        try:
            bantin.start()
            for n in range(3):
                assert submit(bantin, f"n{n}@example.org", client=f"192.0.2.{n + 1}").is_success
            full = submit(bantin, "n3@example.org", client="192.0.2.9")
            assert full.status_code == 503
            assert "Xin thử lại sau" in full.text
            bantin.wait(lambda: mailbox.count() == 3, 10, "three confirmation mails")
            settle()
            assert mailbox.to("n3@example.org") == []

            # Off: the pages lose the form at the next build, the endpoints answer 404.
            config = bantin.config.read_text(encoding="utf-8")
            bantin.write_config(config.replace("enabled = true", "enabled = false"))
            bantin.wait(lambda: "/subscribe" not in bantin.get("/").text, 10, "the form gone")
            assert bantin.get("/subscribe").status_code == 404
            closed = submit_closed(bantin)
            assert closed.status_code == 404
            assert "Chưa mở đăng ký" in closed.text
            settle()
            assert mailbox.count() == 3
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()}")


def submit_closed(bantin: Bantin) -> httpx.Response:
    return httpx.post(
        bantin.url + "/subscribe",
        data={"email": "muon@example.org", "frequency": "daily", "v": "0"},
        headers={"Origin": bantin.url},
        timeout=5,
    )
