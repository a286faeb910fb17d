"""The subscription pages over HTTP: ``/subscribe`` (the form; a POST submits it),
``/subscribe/confirm/<token>`` (GET shows the button, only its POST confirms: mail scanners
open links) and ``/preferences/<token>`` (GET shows, POST saves or unsubscribes).

Every POST must come from the site itself. A browser says where a form was sent from
(``Sec-Fetch-Site``, else ``Origin``, else ``Referer``); a form sent from another site is refused
with 403 before anything is read: cross-site request forgery protection that needs neither a
cookie nor a per-visitor token, so the form can sit on the static pages and bantin sets no
cookie at all. A client that says none of it is no browser and carries nobody's session: the
rate limits deal with it. Bodies are bounded (MAX_BODY), only urlencoded forms are read, and
the client's address is read from X-Forwarded-For only on a connection from a trusted proxy
(``server.trusted_proxies``). What a submission does is the desk's (mail/signups.py).
"""

from __future__ import annotations

import html
import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from service.errors import TemplateError
from service.metrics import Metrics
from service.model import SignupAnswer, SignupPage
from service.serve.static import plain_page
from service.settings import Settings
from service.templating import CONSENT_TEMPLATE, Templates

__all__ = [
    "MAX_BODY",
    "SIGNUP_PAGES",
    "SIGNUP_TEMPLATE",
    "Desk",
    "SignupPages",
    "client_ip",
    "same_site",
]

log = logging.getLogger("bantin.web")

SIGNUP_TEMPLATE = "subscribe.html.j2"
# what the form needs of the templates: these pages, the form the index and categories include,
# and the consent text
SIGNUP_PAGES = [SIGNUP_TEMPLATE, "_subscribe_form.html.j2", CONSENT_TEMPLATE]
MAX_BODY = 16_384  # bytes of a form: ours is well under 1 KB even with fifty categories
MAX_FIELDS = 256
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the tokens are in the URLs
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "frame-ancestors 'none'",  # no button pressed through a frame
    "X-Frame-Options": "DENY",
}

Fields = Mapping[str, Sequence[str]]


class Desk(Protocol):
    """What the pages ask of the subscription desk (mail.signups.Desk)."""

    def blank(self, category: str | None = None) -> SignupAnswer:
        """The empty form."""
        ...

    async def submit(self, fields: Fields, ip: str) -> SignupAnswer:
        """A submission of the form."""
        ...

    async def confirmation(self, token: str) -> SignupAnswer:
        """The page a confirmation link opens."""
        ...

    async def confirm(self, token: str, ip: str) -> SignupAnswer:
        """The confirmation button pressed."""
        ...

    async def preferences(self, token: str) -> SignupAnswer:
        """The preferences page."""
        ...

    async def change(self, token: str, fields: Fields) -> SignupAnswer:
        """The preferences form sent."""
        ...


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_site(request: Request, base_url: str) -> bool:
    """Whether a POST comes from a page of the site (or from no browser at all)."""
    fetch = request.headers.get("sec-fetch-site")
    if fetch is not None:
        return fetch.lower() in ("same-origin", "none")
    allowed = {_origin(base_url), _origin(str(request.base_url))}
    origin = request.headers.get("origin")
    if origin is not None:
        return origin.lower() in allowed  # "null" (a sandboxed or file: page) is not
    referer = request.headers.get("referer")
    if referer:
        return _origin(referer) in allowed
    return True


def _trusted(host: str, networks: Sequence[str]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def client_ip(request: Request, trusted: Sequence[str]) -> str:
    """The client's address: the connection's, or, when that is a trusted proxy, the last
    address in X-Forwarded-For that is not one (what a client writes there itself is to the
    left of what the proxies appended, and ignored)."""
    peer = request.client.host if request.client else ""
    if not _trusted(peer, trusted):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a proxy of ours would not write that
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


class _Unreadable(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


async def read_fields(request: Request) -> dict[str, list[str]]:
    """The urlencoded fields of the body; _Unreadable with the status to answer otherwise."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise _Unreadable(415)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _Unreadable(413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _Unreadable(413)
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise _Unreadable(400) from None
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


_HEADINGS: dict[SignupPage, str] = {
    "form": "Đăng ký nhận bản tin",
    "sent": "Hãy kiểm tra hộp thư",
    "limited": "Xin thử lại sau",
    "closed": "Chưa mở đăng ký qua trang web",
    "confirm": "Xác nhận đăng ký",
    "confirmed": "Đã đăng ký",
    "expired": "Liên kết đã hết hạn",
    "invalid": "Liên kết không hợp lệ",
    "preferences": "Tùy chọn nhận bản tin",
    "saved": "Đã lưu tùy chọn",
    "office": "Địa chỉ này do cơ quan quản lý",
    "unsubscribed": "Đã hủy đăng ký",
    "refused": "Không nhận biểu mẫu này",
    "error": "Có lỗi tạm thời",
}


def fallback_page(answer: SignupAnswer, site_title: str) -> str:
    """The built-in page, when the operators' template cannot be rendered: the heading, the
    address, and the buttons that must always work (confirm, unsubscribe)."""
    body = f"<p>{html.escape(site_title)}</p>"
    if answer.email:
        body += f"\n<p>{html.escape(answer.email)}</p>"
    if answer.page == "confirm":
        body += '\n<form method="post"><button type="submit">Xác nhận</button></form>'
    if answer.page in ("preferences", "office"):
        body += (
            '\n<form method="post"><input type="hidden" name="action" value="unsubscribe">'
            '<button type="submit">Hủy đăng ký</button></form>'
        )
    return plain_page(html.escape(_HEADINGS[answer.page]), body, "vi")


_FEEDS = (
    ("RSS", "rss.xml", "application/rss+xml"),
    ("Atom", "atom.xml", "application/atom+xml"),
    ("JSON Feed", "feed.json", "application/feed+json"),
)


def _feeds(title: str, base: str) -> list[dict[str, str]]:
    """The site's feeds, as the pages link them."""
    return [
        {"title": f"{title} ({kind})", "url": f"{base}/{name}", "type": media}
        for kind, name, media in _FEEDS
    ]


class SignupPages:
    """The endpoints of the subscription pages, over a desk."""

    def __init__(
        self,
        desk: Desk,
        *,
        settings: Callable[[], Settings],
        templates: Callable[[], Templates | None],
        metrics: Metrics,
    ) -> None:
        self.desk = desk
        self.settings = settings
        self.templates = templates
        self.metrics = metrics

    async def subscribe(self, request: Request) -> Response:
        """GET: the form (``?category=slug`` ticks one); POST: a submission."""
        if request.method != "POST":
            category = request.query_params.get("category")
            return await self._answer(await run_in_threadpool(self.desk.blank, category))
        if self._refused(request):
            return await self._answer(SignupAnswer("refused", 403))
        try:
            fields = await read_fields(request)
        except _Unreadable as exc:
            return self._plain(exc.status)
        ip = client_ip(request, self.settings().server.trusted_proxies)
        return await self._answer(await self.desk.submit(fields, ip))

    async def confirm(self, request: Request) -> Response:
        """GET: what is about to be confirmed, and the button; POST: confirmed."""
        token = str(request.path_params["token"])
        if request.method != "POST":
            return await self._answer(await self.desk.confirmation(token))
        if self._refused(request):
            return await self._answer(SignupAnswer("refused", 403))
        ip = client_ip(request, self.settings().server.trusted_proxies)
        return await self._answer(await self.desk.confirm(token, ip))

    async def preferences(self, request: Request) -> Response:
        """GET: the subscriber's choices; POST: save them, or unsubscribe."""
        token = str(request.path_params["token"])
        if request.method != "POST":
            return await self._answer(await self.desk.preferences(token))
        if self._refused(request):
            return await self._answer(SignupAnswer("refused", 403))
        try:
            fields = await read_fields(request)
        except _Unreadable as exc:
            return self._plain(exc.status)
        return await self._answer(await self.desk.change(token, fields))

    def _refused(self, request: Request) -> bool:
        if same_site(request, self.settings().site.base_url):
            return False
        log.warning("a form sent from another site was refused (%s)", request.url.path)
        return True

    def _plain(self, status: int) -> Response:
        self.metrics.request("other", status)
        reason = {413: "the form is too large", 415: "not a form", 400: "unreadable form"}
        return Response(f"{reason.get(status, 'refused')}\n", status, headers=_HEADERS)

    async def _answer(self, answer: SignupAnswer) -> Response:
        self.metrics.request("other", answer.status)
        page = await run_in_threadpool(self._render, answer)
        return Response(page, answer.status, media_type="text/html", headers=_HEADERS)

    def _render(self, answer: SignupAnswer) -> str:
        settings = self.settings()
        site = settings.site
        templates = self.templates()
        if templates is not None:
            base = site.base_url
            try:
                return templates.render(
                    SIGNUP_TEMPLATE,
                    page=answer.page,
                    site=site,
                    base_url=base,
                    feeds=_feeds(site.title, base),
                    email=answer.email,
                    frequency=answer.frequency or "daily",
                    category_names=answer.category_names,
                    hours=settings.subscribe.confirm_hours,
                    signup=answer.form,
                )
            except TemplateError as exc:
                log.warning("%s; using the built-in subscription page", exc)
        return fallback_page(answer, site.title)
