"""Reading the subscription form (pure): what a submission asks for, what is wrong in it, which
categories are offered, who counts as one client, and which requests come from the site."""

from __future__ import annotations

from starlette.requests import Request

from service.content.slug import category, offered
from service.mail.signup_form import MAX_NAME, client_group, mask, read_form
from service.model import consent_version
from service.serve.signup import client_ip, same_site

CONSENT = "Tôi đồng ý nhận bản tin."
KNOWN = (category("Thông báo"), category("Lịch tiếp công dân"), category("Tuyển dụng"))


def form(**fields: str | list[str]) -> dict[str, list[str]]:
    base: dict[str, list[str]] = {
        "email": ["Lan@Example.org"],
        "frequency": ["weekly"],
        "v": [consent_version(CONSENT)],
    }
    base.update({k: v if isinstance(v, list) else [v] for k, v in fields.items()})
    return base


def test_a_good_submission_is_the_subscriber_it_asks_for() -> None:
    subscriber, shown = read_form(
        form(name="  Nguyễn Thị Lan ", categories=["thong-bao", "tuyen-dung"]), KNOWN, CONSENT, None
    )
    assert shown.errors == {}
    assert subscriber is not None
    assert (subscriber.email, subscriber.key) == ("Lan@Example.org", "lan@example.org")
    assert subscriber.name == "Nguyễn Thị Lan"
    assert subscriber.frequency == "weekly"
    assert subscriber.categories == frozenset({"thong-bao", "tuyen-dung"})
    # none ticked: every category, now and to come; with an allowlist, every one it offers
    everything, _ = read_form(form(), KNOWN, CONSENT, None)
    assert everything is not None and everything.categories is None
    listed, _ = read_form(form(), KNOWN[:2], CONSENT, ["Thông báo", "lich-tiep-cong-dan"])
    assert listed is not None
    assert listed.categories == frozenset({"thong-bao", "lich-tiep-cong-dan"})


def test_every_field_is_bounded_and_every_fault_named_on_its_field() -> None:
    cases = {
        "email": form(email="khong-phai-dia-chi"),
        "name": form(name="x" * (MAX_NAME + 1)),
        "categories": form(categories="the-thao"),  # not offered
        "frequency": form(frequency="hourly"),
        "consent": form(v="0123456789abcdef"),  # a page older than the consent text
        "form": form(email=["a@example.org", "b@example.org"]),
    }
    for field, fields in cases.items():
        subscriber, shown = read_form(fields, KNOWN, CONSENT, None)
        assert subscriber is None, field
        assert field in shown.errors, (field, shown.errors)
    _, shown = read_form(form(name="Lan\r\nBcc: x@example.org"), KNOWN, CONSENT, None)
    assert "name" in shown.errors
    _, shown = read_form(form(email="a" * 250 + "@example.org"), KNOWN, CONSENT, None)
    assert "email" in shown.errors
    assert len(shown.email) <= 254  # what is shown again is bounded too
    _, shown = read_form(form(categories=["thong-bao"] * 300), KNOWN, CONSENT, None)
    assert "form" in shown.errors


def test_the_allowlist_decides_what_is_offered_in_its_order() -> None:
    assert [c.name for c in offered(None, KNOWN)] == [
        "Lịch tiếp công dân",
        "Thông báo",
        "Tuyển dụng",
    ]
    chosen = offered(["tuyen-dung", "Thông báo", "thong bao", "Sắp có"], KNOWN)
    assert [(c.name, c.slug) for c in chosen] == [
        ("Tuyển dụng", "tuyen-dung"),  # named as the articles name it
        ("Thông báo", "thong-bao"),  # once
        ("Sắp có", "sap-co"),  # no article yet: offered all the same
    ]


def request(peer: str, headers: dict[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/subscribe",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": (peer, 40000),
            "server": ("127.0.0.1", 8080),
            "scheme": "http",
            "query_string": b"",
        }
    )


def test_the_client_is_read_from_x_forwarded_for_only_behind_a_trusted_proxy() -> None:
    trusted = ("127.0.0.1", "10.0.0.0/8")
    # a client cannot choose its address by writing the header itself
    assert client_ip(request("203.0.113.9", {"X-Forwarded-For": "1.2.3.4"}), trusted) == (
        "203.0.113.9"
    )
    # behind the proxy: the last address it did not append itself
    spoofed = {"X-Forwarded-For": "1.2.3.4, 198.51.100.7, 10.0.0.5"}
    assert client_ip(request("127.0.0.1", spoofed), trusted) == "198.51.100.7"
    assert client_ip(request("127.0.0.1", {}), trusted) == "127.0.0.1"
    assert client_ip(request("127.0.0.1", {"X-Forwarded-For": "junk"}), trusted) == "127.0.0.1"
    # one IPv6 host has a /64 to step through: it counts as one client
    assert client_group("2001:db8:1:2:aaaa::1") == client_group("2001:db8:1:2:ffff::9")
    assert client_group("203.0.113.9") == "203.0.113.9"
    assert mask("lan@example.org") == "l***@example.org"


def test_only_the_site_itself_may_post() -> None:
    site = "https://tinh.example.gov.vn"
    allowed = [
        {"Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://tinh.example.gov.vn"},
        {"Referer": "https://tinh.example.gov.vn/categories/thong-bao/"},
        {},  # no browser: nobody's session to forge; the rate limits deal with it
    ]
    refused = [
        {"Sec-Fetch-Site": "cross-site", "Origin": site},  # the browser's word wins
        {"Sec-Fetch-Site": "same-site"},  # a sibling host is another site's page
        {"Origin": "https://tinh.example.gov.vn.evil.example"},
        {"Origin": "null"},
        {"Referer": "http://tinh.example.gov.vn/"},  # another scheme is another origin
    ]
    for headers in allowed:
        assert same_site(request("203.0.113.9", headers), site), headers
    for headers in refused:
        assert not same_site(request("203.0.113.9", headers), site), headers
