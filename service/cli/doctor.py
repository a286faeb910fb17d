"""`bantin doctor`: checks what bantin cannot fix itself, and says exactly what to change.

SPF of the From and bounce domains lets the relay send, the DKIM key published under the
selector matches ``mail.dkim_key_file``, DMARC exists and aligns with From, the bounce domain
has an MX, the relay takes a connection with STARTTLS, a valid certificate and (if set) the
login, the one-click unsubscribe URL answers a POST, and a sample digest stays under Gmail's
clipping size. DNS (dnspython) asks ``--nameserver`` when given. Exit status 1 if any check
fails. The checks run from this host: "from outside" means through ``site.base_url``'s public
name, which a proxy on this host may answer differently than the world sees.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import aiosmtplib
import dns.exception
import dns.resolver

from service.cli.doctor_dns import Check, check_dkim, check_dmarc, check_mx, check_spf, resolver
from service.content.slug import category
from service.errors import BantinError
from service.mail.compose import HTML_BUDGET, MORE_LINKS, Composer
from service.mail.mime import read_dkim_key
from service.mail.replies import classify
from service.model import Article, Subscriber
from service.settings import Settings, SmtpSettings

__all__ = ["check_digest_size", "check_relay", "check_unsubscribe", "cmd_doctor"]

GMAIL_CLIP = 102_000  # bytes of HTML after which Gmail hides the rest


def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin doctor`: print every check; 1 if any fails, else 0."""
    checks = run_checks(
        settings,
        nameservers=getattr(args, "nameserver", None) or (),
        relay_ips=getattr(args, "relay_ip", None) or (),
        timeout=getattr(args, "timeout", 10.0),
    )
    for check in checks:
        print(f"{check.level:<4}  {check.name}: {check.detail}")
        if check.fix and check.level != "ok":
            print(f"      fix: {check.fix}")
    failed = sum(c.level == "fail" for c in checks)
    warned = sum(c.level == "warn" for c in checks)
    print(f"bantin doctor: {len(checks)} checks, {failed} failed, {warned} warnings")
    return 1 if failed else 0


def run_checks(
    settings: Settings,
    *,
    nameservers: Sequence[str] = (),
    relay_ips: Sequence[str] = (),
    timeout: float = 10.0,
) -> list[Check]:
    """Every check of `bantin doctor`, in the order it prints them."""
    res = resolver(nameservers, timeout)
    mail = settings.mail
    from_domain = mail.sender[1].rsplit("@", 1)[1]
    bounce_domain = mail.bounce_address.rsplit("@", 1)[1] if mail.bounce_address else from_domain
    host = settings.smtp.host
    ips = list(relay_ips) or _relay_addresses(res, host)
    checks = [_dns("SPF", lambda: check_spf(res, from_domain, ips, host, "From"))]
    if bounce_domain.lower() != from_domain.lower():
        checks.append(_dns("SPF", lambda: check_spf(res, bounce_domain, ips, host, "bounces")))
    if mail.dkim_domain and mail.dkim_selector and mail.dkim_key_file:
        domain, selector = mail.dkim_domain, mail.dkim_selector
        try:
            pem = mail.dkim_key_file.read_bytes()
        except OSError as exc:
            checks.append(
                Check(
                    "DKIM",
                    "fail",
                    f"{mail.dkim_key_file}: {exc.strerror}",
                    "make mail.dkim_key_file readable by bantin",
                )
            )
        else:
            checks.append(_dns("DKIM", lambda: check_dkim(res, domain, selector, pem)))
    else:
        checks.append(
            Check(
                "DKIM",
                "fail",
                "digests are not signed",
                "set mail.dkim_domain, mail.dkim_selector and mail.dkim_key_file "
                "(see README, Deliverability)",
            )
        )
    checks.append(
        _dns("DMARC", lambda: check_dmarc(res, from_domain, bounce_domain, mail.dkim_domain))
    )
    if mail.bounce_address:
        checks.append(_dns("MX", lambda: check_mx(res, bounce_domain)))
    else:
        checks.append(
            Check(
                "bounces",
                "warn",
                f"mail.bounce_address is unset: bounces go to {mail.sender[1]} and nobody "
                "reads them",
                f'set mail.bounce_address = "bounces@{from_domain}" and read it with '
                "[bounces] maildir or imap_*",
            )
        )
    checks.append(check_relay(settings.smtp, timeout))
    checks.append(check_unsubscribe(settings.site.base_url, timeout))
    checks.append(check_digest_size(settings))
    return checks


def _dns(name: str, check: Callable[[], Check]) -> Check:
    """``check()``, or a failure naming the DNS server when it does not answer."""
    try:
        return check()
    except dns.exception.DNSException as exc:
        return Check(
            name,
            "fail",
            f"DNS lookup failed: {exc}",
            "check that the DNS server answers (the system's resolvers, or --nameserver)",
        )


def _relay_addresses(res: dns.resolver.Resolver, host: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    found = []
    for kind in ("A", "AAAA"):
        # NXDOMAIN, no answer, a timeout: SPF then says it knows no address
        with contextlib.suppress(dns.exception.DNSException):
            found += [r.to_text() for r in res.resolve(host, kind)]
    return found


def check_relay(smtp: SmtpSettings, timeout: float = 10.0) -> Check:
    """Whether the relay takes a connection as configured: TLS with a valid certificate,
    and the login if ``smtp.username`` is set."""
    name = f"relay {smtp.host}:{smtp.port}"
    password = smtp.password.get_secret_value() if smtp.password else None
    client = aiosmtplib.SMTP(
        hostname=smtp.host,
        port=smtp.port,
        use_tls=smtp.security == "tls",
        start_tls=smtp.security == "starttls",
        timeout=min(timeout, smtp.timeout),
        tls_context=ssl.create_default_context() if smtp.security != "none" else None,
    )

    async def probe() -> str:
        try:
            await client.connect()
            if smtp.username:
                await client.login(smtp.username, password or "")
            return ""
        finally:
            if client.is_connected:
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    client.close()

    try:
        asyncio.run(probe())
    except ssl.SSLError as exc:
        return Check(name, "fail", f"TLS failed: {exc.reason or exc}", _tls_fix(smtp))
    except aiosmtplib.SMTPAuthenticationError as exc:
        advice = classify("auth", exc.code, exc.message).advice
        return Check(name, "fail", f"the login was refused: {exc.code} {exc.message}", advice)
    except (aiosmtplib.SMTPException, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else None
        if cause is not None:
            return Check(name, "fail", f"TLS failed: {cause.reason or cause}", _tls_fix(smtp))
        text = " ".join(str(exc).split())
        stage = "tls" if "TLS" in text else "auth" if "AUTH" in text else "connect"
        return Check(name, "fail", text, classify(stage, None, text).advice)  # type: ignore[arg-type]
    if smtp.security == "none":
        local = smtp.host in ("localhost", "127.0.0.1", "::1")
        return Check(
            name,
            "ok" if local else "warn",
            "connected without TLS",
            "" if local else 'set smtp.security = "starttls" (port 587) or "tls" (465)',
        )
    login = f", logged in as {smtp.username}" if smtp.username else ""
    return Check(name, "ok", f"{smtp.security} with a valid certificate{login}")


def _tls_fix(smtp: SmtpSettings) -> str:
    return (
        f"the relay must present a certificate valid for {smtp.host!r} (signed by a known "
        "authority, not expired); or set smtp.host to the name on its certificate"
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # one-click POSTs are not followed across redirects: show the redirect


def check_unsubscribe(base_url: str, timeout: float = 10.0) -> Check:
    """Whether ``base_url``/unsubscribe/ answers a one-click POST (RFC 8058) from bantin.

    A deliberately invalid token is sent: bantin refuses it with 400 and its own headers,
    which shows the route reaches bantin, and nobody is unsubscribed."""
    url = f"{base_url.rstrip('/')}/unsubscribe/bantin-doctor-check"
    name = "one-click unsubscribe"
    request = urllib.request.Request(
        url,
        data=b"List-Unsubscribe=One-Click",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": "bantin"},
    )
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=timeout) as response:
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, exc.headers
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(
            name,
            "fail",
            f"{url} cannot be reached: {reason}",
            "make site.base_url reachable from the Internet (DNS, firewall, the "
            "reverse proxy's TLS certificate)",
        )
    if status in (301, 302, 303, 307, 308):
        where = headers.get("Location", "?")
        return Check(
            name,
            "fail",
            f"{url} redirects to {where}: one-click POSTs do not follow redirects",
            "set site.base_url to the address it redirects to",
        )
    if status == 400 and headers.get("X-Robots-Tag") == "noindex":
        if base_url.startswith("http://"):
            return Check(
                name,
                "warn",
                f"{url} answers a POST from bantin, but over http: RFC 8058 and Gmail need https",
                "serve the site over https (the "
                "reverse proxy) and set site.base_url to the https:// address",
            )
        return Check(name, "ok", f"{url} answers a POST from bantin (asked from this host)")
    what = {
        404: "does not route /unsubscribe/ to bantin",
        405: "refuses POST",
        501: "refuses POST",
    }.get(status, "does not answer as bantin does")
    return Check(
        name,
        "fail",
        f"{url} answered {status}: the server there {what}",
        "proxy every method of /unsubscribe/ to bantin (see README, Deployment)",
    )


def check_digest_size(settings: Settings) -> Check:
    """How large a long digest comes out with the templates and ``mail.max_items``."""
    name = "digest size"
    count = settings.mail.max_items + MORE_LINKS + 100
    now = datetime.now(UTC)
    summary = "Ủy ban nhân dân tỉnh thông báo lịch tiếp công dân định kỳ của lãnh đạo tỉnh. " * 8
    articles = [
        Article(
            id=f"mau-{n}",
            slug=f"mau-{n}",
            date=now - timedelta(minutes=n),
            title=f"Thông báo số {n} về việc tổ chức tiếp công dân định kỳ tháng này của "
            "Chủ tịch Ủy ban nhân dân tỉnh",
            category=category("Thông báo"),
            summary=summary[:600],
            content_html="",
            source=f"mau-{n}.md",
        )
        for n in range(count)
    ]
    mail = settings.mail
    try:
        dkim = read_dkim_key(mail.dkim_domain, mail.dkim_selector, mail.dkim_key_file)
        composer = Composer(settings, b"bantin doctor sample key", dkim)
        subscriber = Subscriber(f"ten.nguoi.nhan@{composer.domain}", "Nguyễn Văn A")
        rendered = composer.render(subscriber, articles, "daily", now)
        data = composer.message_bytes(subscriber, rendered, "<doctor@bantin>", now, 1)
    except BantinError as exc:
        return Check(name, "fail", str(exc), "fix the email templates; `bantin check` lists it")
    html = len(rendered.html.encode("utf-8"))
    detail = (
        f"a digest of {count} long articles: HTML {html / 1000:.1f} KB, message "
        f"{len(data) / 1000:.1f} KB"
    )
    if html > GMAIL_CLIP:
        return Check(
            name,
            "fail",
            detail + "; Gmail clips it and hides the unsubscribe link",
            "shorten templates/email/digest.html.j2 (its styles are inlined into "
            "every element) or lower mail.max_items",
        )
    if html > HTML_BUDGET:
        return Check(
            name,
            "warn",
            detail + "; close to Gmail's 102 KB clip",
            "lower mail.max_items or shorten templates/email/digest.html.j2",
        )
    return Check(name, "ok", detail)
