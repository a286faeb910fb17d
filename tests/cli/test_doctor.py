"""`bantin doctor` against a real DNS server on 127.0.0.1, a real SMTP relay with STARTTLS, and
the real HTTP app: each misconfiguration it is given is reported with its fix.

The DNS server is dnslib's, answering only the records each test writes; the relay is aiosmtpd
with a certificate from a CA made for the test (trusted through SSL_CERT_FILE, or not).
"""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from dnsserver import running_dns, txt
from smtpserver import Recorder, free_port
from tlskit import TestCA
from webkit import Served, Site

from service import cli
from service.cli.doctor import check_digest_size, check_relay, check_unsubscribe, run_checks
from service.cli.doctor_dns import check_dmarc, check_mx, check_spf, resolver, spf
from service.settings import Settings, load_settings

DOMAIN = "tinh.example.gov.vn"
RELAY_IP = "203.0.113.5"
PASSWORD = "mat-khau-relay"


def dkim_key(directory: Path) -> tuple[Path, str]:
    """A private key file and the DKIM record of its public key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / f"dkim-{len(list(directory.glob('dkim-*.pem')))}.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return path, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


@contextmanager
def tls_relay(ca: TestCA) -> Iterator[int]:
    """aiosmtpd requiring STARTTLS and then a login as bantin/PASSWORD."""
    import ssl

    cert, key = ca.issue("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and data.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)

    port = free_port()
    controller = Controller(
        Recorder(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticator,
    )
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


@contextmanager
def served_app(tmp_path: Path) -> Iterator[str]:
    output = tmp_path / "public"
    output.mkdir()
    with Served(Site(output, None)) as served:
        yield served.url


@contextmanager
def refusing_post() -> Iterator[str]:
    """Python's own file server: it answers POST with 501, as a proxy that refuses it would."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def configure(project: Path, **values: str) -> Settings:
    mail = {"from": f"Văn phòng UBND tỉnh <bantin@{DOMAIN}>", **values.pop("mail", {})}  # type: ignore[dict-item]
    lines = [
        "[site]",
        'title = "Cổng thông tin tỉnh"',
        f'base_url = "{values["base_url"]}"',
        "[mail]",
    ]
    lines += [f'{k} = "{v}"' for k, v in mail.items()]
    lines += [
        "[smtp]",
        'host = "127.0.0.1"',
        f"port = {values['port']}",
        'security = "starttls"',
        'username = "bantin"',
        "timeout = 10",
    ]
    config = project / "config" / "bantin.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_settings(config)


def test_a_well_configured_site_passes(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca = TestCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
    monkeypatch.setenv("BANTIN_SMTP__PASSWORD", PASSWORD)
    key, record = dkim_key(tmp_path)
    records = {
        DOMAIN: [txt("v=spf1 include:_spf.relay.example.net ~all"), f"MX 10 mail.{DOMAIN}."],
        "_spf.relay.example.net": [txt("v=spf1 ip4:203.0.113.0/24 -all")],
        f"bantin._domainkey.{DOMAIN}": [txt(record)],
        "_dmarc.example.gov.vn": [txt("v=DMARC1; p=quarantine; rua=mailto:d@example.gov.vn")],
        f"mail.{DOMAIN}": ["A 203.0.113.25"],
    }
    with running_dns(records) as ns, tls_relay(ca) as port, served_app(tmp_path) as url:
        configure(
            project,
            base_url=url,
            port=str(port),
            mail={  # type: ignore[arg-type]
                "bounce_address": f"bounces@{DOMAIN}",
                "dkim_domain": DOMAIN,
                "dkim_selector": "bantin",
                "dkim_key_file": str(key),
            },
        )
        status = cli.main(["doctor", "--nameserver", ns, "--relay-ip", RELAY_IP])
    out = capsys.readouterr().out
    assert status == 0, out
    lines = out.splitlines()
    assert lines[-1] == "bantin doctor: 7 checks, 0 failed, 1 warnings"
    for expected in (
        f"ok    SPF {DOMAIN} (From): the relay 127.0.0.1 ({RELAY_IP}) may send for {DOMAIN}",
        f"ok    DKIM bantin._domainkey.{DOMAIN}: the published 2048-bit key matches",
        f"ok    DMARC {DOMAIN}: v=DMARC1; p=quarantine",
        f"ok    MX {DOMAIN}: bounces are delivered to 10 mail.{DOMAIN}.",
        f"ok    relay 127.0.0.1:{port}: starttls with a valid certificate, logged in as bantin",
        "warn  one-click unsubscribe: ",  # answers, over http on loopback
        "ok    digest size: a digest of 170 long articles: HTML ",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, out)
    assert "SPF and DKIM aligned with From" in out


def test_each_misconfiguration_is_reported_with_its_fix(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ca = TestCA(tmp_path)  # not trusted: SSL_CERT_FILE is not set
    monkeypatch.setenv("BANTIN_SMTP__PASSWORD", PASSWORD)
    key, _ = dkim_key(tmp_path)
    _, other_record = dkim_key(tmp_path)
    records = {
        DOMAIN: [txt("v=spf1 ip4:198.51.100.0/24 -all")],  # not the relay
        f"bantin._domainkey.{DOMAIN}": [txt(other_record)],  # another key
        "bounce.example.net": ["A 198.51.100.9"],  # no SPF, no MX
    }
    with running_dns(records) as ns, tls_relay(ca) as port, refusing_post() as url:
        configure(
            project,
            base_url=url,
            port=str(port),
            mail={  # type: ignore[arg-type]
                "bounce_address": "bounces@bounce.example.net",
                "dkim_domain": "other.example",
                "dkim_selector": "bantin",
                "dkim_key_file": str(key),
            },
        )
        # the DKIM domain is checked where it is configured: point it at the tested zone
        settings = load_settings(project / "config" / "bantin.toml")
        checks = run_checks(settings, nameservers=[ns], relay_ips=[RELAY_IP], timeout=5)
        status = cli.main(["doctor", "--nameserver", ns, "--relay-ip", RELAY_IP])
    out = capsys.readouterr().out
    assert status == 1
    by_name = {c.name: c for c in checks}
    spf_from = by_name[f"SPF {DOMAIN} (From)"]
    assert spf_from.level == "fail" and f"ip4:{RELAY_IP}" in spf_from.fix
    spf_bounce = by_name["SPF bounce.example.net (bounces)"]
    assert spf_bounce.level == "fail" and "has no SPF record" in spf_bounce.detail
    assert 'bounce.example.net. TXT "v=spf1 ip4:203.0.113.5 ~all"' in spf_bounce.fix
    dkim = by_name["DKIM bantin._domainkey.other.example"]
    assert dkim.level == "fail" and "no DKIM key is published" in dkim.detail
    assert dkim.fix.startswith('publish bantin._domainkey.other.example. TXT "v=DKIM1; k=rsa; p=')
    dmarc = by_name[f"DMARC {DOMAIN}"]
    assert dmarc.level == "fail" and f"_dmarc.{DOMAIN}. TXT" in dmarc.fix
    mx = by_name["MX bounce.example.net"]
    assert mx.level == "warn" and "fall back" in mx.detail
    relay = by_name[f"relay 127.0.0.1:{port}"]
    assert relay.level == "fail" and "CERTIFICATE_VERIFY_FAILED" in relay.detail
    assert "certificate valid for '127.0.0.1'" in relay.fix
    unsubscribe = by_name["one-click unsubscribe"]
    assert unsubscribe.level == "fail" and "answered 501" in unsubscribe.detail
    assert "fix: " in out and out.count("fail  ") == 6


def test_the_dkim_key_that_does_not_match_is_named(project: Path, tmp_path: Path) -> None:
    from service.cli.doctor_dns import check_dkim

    key, record = dkim_key(tmp_path)
    _, other = dkim_key(tmp_path)
    with running_dns(
        {
            f"s._domainkey.{DOMAIN}": [txt(other)],
            f"r._domainkey.{DOMAIN}": [txt("v=DKIM1; p=")],
            f"ok._domainkey.{DOMAIN}": [txt(record)],
        }
    ) as ns:
        res = resolver([ns])
        wrong = check_dkim(res, DOMAIN, "s", key.read_bytes())
        revoked = check_dkim(res, DOMAIN, "r", key.read_bytes())
        right = check_dkim(res, DOMAIN, "ok", key.read_bytes())
    assert wrong.level == "fail" and "does not match mail.dkim_key_file" in wrong.detail
    assert record.split("p=")[1] in wrong.fix  # the record to publish instead
    assert revoked.level == "fail" and "revoked" in revoked.detail
    assert right.level == "ok"


def test_spf_follows_includes_and_redirects_and_counts_lookups() -> None:
    chain = {f"l{n}.example": [txt(f"v=spf1 include:l{n + 1}.example -all")] for n in range(11)}
    chain["l11.example"] = [txt("v=spf1 ip4:203.0.113.5 -all")]
    with running_dns(
        {
            "a.example": [txt("v=spf1 redirect=b.example")],
            "b.example": [txt("v=spf1 a:mail.b.example mx -all"), "MX 10 mx.b.example."],
            "mail.b.example": ["A 198.51.100.1"],
            "mx.b.example": ["A 203.0.113.5"],
            "soft.example": [txt("v=spf1 ~all")],
            "two.example": [txt("v=spf1 -all"), txt("v=spf1 +all")],
            "v6.example": [txt("v=spf1 ip6:2001:db8::/32 -all")],
            **chain,
        }
    ) as ns:
        res = resolver([ns])
        assert spf(res, "203.0.113.5", "a.example")[0] == "pass"  # redirect, then mx
        assert spf(res, "198.51.100.1", "a.example")[0] == "pass"  # a:
        assert spf(res, "192.0.2.1", "a.example")[0] == "fail"
        assert spf(res, "203.0.113.5", "soft.example")[0] == "softfail"
        assert spf(res, "203.0.113.5", "none.example")[0] == "none"
        assert spf(res, "203.0.113.5", "two.example")[0] == "permerror"
        assert spf(res, "2001:db8::25", "v6.example")[0] == "pass"
        result, why = spf(res, "203.0.113.5", "l0.example")
        assert result == "permerror" and "10 DNS lookups" in why
        check = check_spf(res, "soft.example", [RELAY_IP], "relay", "From")
        assert check.level == "fail" and "softfail" in check.detail


def test_dmarc_is_found_at_the_parent_and_alignment_is_judged() -> None:
    with running_dns(
        {
            "_dmarc.example.gov.vn": [txt("v=DMARC1; p=reject; aspf=s")],
            "_dmarc.strict.example": [txt("v=DMARC1; p=none; adkim=s; aspf=s")],
        }
    ) as ns:
        res = resolver([ns])
        found = check_dmarc(res, DOMAIN, DOMAIN, None)
        assert found.level == "ok" and "(at example.gov.vn)" in found.detail
        # strict SPF: a bounce domain that is a subdomain no longer aligns; DKIM still may
        assert check_dmarc(res, DOMAIN, f"b.{DOMAIN}", None).level == "fail"
        assert check_dmarc(res, DOMAIN, f"b.{DOMAIN}", DOMAIN).level == "ok"
        strict = check_dmarc(res, "strict.example", "x.strict.example", "y.strict.example")
        assert strict.level == "fail" and "aligns" in strict.detail
        relaxed_none = check_dmarc(res, "strict.example", "strict.example", None)
        assert relaxed_none.level == "ok" and "p=none only monitors" in relaxed_none.detail


def test_mx_of_the_bounce_domain() -> None:
    with running_dns(
        {
            "good.example": ["MX 20 b.good.example.", "MX 10 a.good.example."],
            "null.example": ["MX 0 ."],
            "bare.example": ["A 198.51.100.2"],
        }
    ) as ns:
        res = resolver([ns])
        good = check_mx(res, "good.example")
        assert good.level == "ok" and good.detail.endswith("10 a.good.example., 20 b.good.example.")
        assert check_mx(res, "null.example").level == "fail"
        assert check_mx(res, "bare.example").level == "warn"
        gone = check_mx(res, "gone.example")
        assert gone.level == "fail" and "gone.example. MX 10" in gone.fix


def test_a_relay_login_that_is_refused_and_a_relay_that_is_down(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = TestCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
    monkeypatch.setenv("BANTIN_SMTP__PASSWORD", "wrong")
    with tls_relay(ca) as port:
        settings = configure(project, base_url="https://x.example", port=str(port))
        refused = check_relay(settings.smtp, 5)
    assert refused.level == "fail" and "535" in refused.detail
    assert "smtp.username" in refused.fix
    down = check_relay(settings.smtp.model_copy(update={"port": free_port()}), 5)
    assert down.level == "fail" and "smtp.host and smtp.port" in down.fix


def test_an_unreachable_site_and_a_huge_template(project: Path, tmp_path: Path) -> None:
    unreachable = check_unsubscribe(f"http://127.0.0.1:{free_port()}", 5)
    assert unreachable.level == "fail" and "cannot be reached" in unreachable.detail
    settings = configure(project, base_url="https://x.example", port="25")
    template = project / "templates" / "email" / "digest.html.j2"
    template.write_text(
        template.read_text(encoding="utf-8").replace(
            '<div class="footer">', "<p>chữ</p>" * 12_000 + '<div class="footer">'
        ),
        encoding="utf-8",
    )
    huge = check_digest_size(settings)
    assert huge.level == "fail" and "Gmail clips it" in huge.detail


def test_a_dns_server_that_fails_is_named_not_a_crash(project: Path) -> None:
    settings = configure(project, base_url=f"http://127.0.0.1:{free_port()}", port="25")
    settings = settings.model_copy(
        update={"mail": settings.mail.model_copy(update={"from_": "B <b@servfail.example>"})}
    )
    with running_dns({}) as ns:
        checks = run_checks(settings, nameservers=[ns], relay_ips=[RELAY_IP], timeout=5)
    by_name = {c.name: c for c in checks}
    spf_check = by_name["SPF servfail.example (From)"]
    assert spf_check.level == "fail" and spf_check.detail.startswith("temperror")
    assert by_name["DMARC"].level == "fail" and "--nameserver" in by_name["DMARC"].fix
