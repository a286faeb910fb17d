"""The HTTP routes: the output directory for feed readers, one-click unsubscribe, the
subscription pages (signup.py), health, metrics.

``create_app`` builds the Starlette app from callables the service gives it (so a live config
edit applies at once); the output directory itself is served by ``static.OutputFiles``.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.errors import TemplateError
from service.mail.tokens import read_token
from service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from service.metrics import Metrics
from service.serve.signup import Desk, SignupPages
from service.serve.static import NO_STORE, OutputFiles, plain_page
from service.settings import Settings
from service.templating import Templates

__all__ = ["UNSUBSCRIBE_TEMPLATE", "create_app", "fallback_unsubscribe_page"]

log = logging.getLogger("bantin.web")

UNSUBSCRIBE_TEMPLATE = "unsubscribe.html.j2"
_UNSUBSCRIBE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex",
}

UnsubscribeState = Literal["confirm", "done", "already", "invalid", "error"]


# --- unsubscribe --------------------------------------------------------------------------

_HEADINGS: dict[UnsubscribeState, str] = {
    "confirm": "Hủy đăng ký nhận bản tin",
    "done": "Đã hủy đăng ký",
    "already": "Đã hủy đăng ký",
    "invalid": "Liên kết không hợp lệ",
    "error": "Chưa hủy được đăng ký",
}


def fallback_unsubscribe_page(
    state: UnsubscribeState, *, site_title: str, email: str | None
) -> str:
    """The built-in page, used when the operator's templates have no usable one."""
    site = html.escape(site_title)
    address = html.escape(email or "")
    texts: dict[UnsubscribeState, str] = {
        "confirm": (
            f"<p>Ngừng gửi bản tin của {site} tới <strong>{address}</strong>?</p>\n"
            '<form method="post" action="">\n'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">\n'
            '<button type="submit">Hủy đăng ký</button>\n</form>'
        ),
        "done": f"<p>Địa chỉ <strong>{address}</strong> sẽ không nhận bản tin của {site} nữa.</p>",
        "already": f"<p>Địa chỉ <strong>{address}</strong> đã được hủy đăng ký trước đó.</p>",
        "invalid": (
            "<p>Liên kết hủy đăng ký này không đúng hoặc đã bị thay đổi. "
            "Hãy dùng liên kết trong email bản tin mới nhất.</p>"
        ),
        "error": "<p>Có lỗi tạm thời, chưa hủy được đăng ký. Vui lòng thử lại sau ít phút.</p>",
    }
    return plain_page(html.escape(_HEADINGS[state]), texts[state], "vi")


class _Unsubscribe:
    """GET shows a confirmation (mail scanners follow links); POST unsubscribes."""

    def __init__(
        self,
        *,
        site_title: Callable[[], str],
        secret_key: Callable[[], bytes],
        unsubscribe: Callable[[str], Awaitable[bool]],
        metrics: Metrics,
        templates: Callable[[], Templates | None],
    ) -> None:
        self.site_title = site_title
        self.secret_key = secret_key
        self.unsubscribe = unsubscribe
        self.metrics = metrics
        self.templates = templates

    async def handle(self, request: Request) -> Response:
        email = read_token(self.secret_key(), str(request.path_params["token"]))
        if email is None:
            return await self._answer("invalid", None, 400)
        if request.method != "POST":
            return await self._answer("confirm", email, 200)
        # RFC 8058 one-click sends "List-Unsubscribe=One-Click"; our form sends the same. The
        # signed token is the authority, so the body is not required to match.
        try:
            newly = await self.unsubscribe(email)
        except Exception:
            log.exception("unsubscribe failed; the subscriber was told to try again later")
            return await self._answer("error", email, 503)
        return await self._answer("done" if newly else "already", email, 200)

    async def _answer(self, state: UnsubscribeState, email: str | None, status: int) -> Response:
        self.metrics.request("other", status)
        # the operators' template renders off the event loop, under its time budget
        page = await run_in_threadpool(self._render, state, email)
        return Response(
            page,
            status_code=status,
            media_type="text/html",
            headers=_UNSUBSCRIBE_HEADERS,
        )

    def _render(self, state: UnsubscribeState, email: str | None) -> str:
        templates, site_title = self.templates(), self.site_title()
        if templates is not None:
            try:
                return templates.render(
                    UNSUBSCRIBE_TEMPLATE,
                    state=state,
                    email=email or "",
                    site_title=site_title,
                    heading=_HEADINGS[state],
                )
            except TemplateError as exc:
                log.warning("%s; using the built-in unsubscribe page", exc)
        return fallback_unsubscribe_page(state, site_title=site_title, email=email)


# --- the app ------------------------------------------------------------------------------

_PROXIED = ("x-forwarded-for", "forwarded", "x-real-ip")


def _may_see_details(request: Request, token: SecretStr | None) -> bool:
    """A request from this host itself (not relayed by a proxy), or one with the token."""
    if token is not None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query_params.get("token", "")
        if given and hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return True
    host = request.client.host if request.client else ""
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
    return local and not any(name in request.headers for name in _PROXIED)


def create_app(
    *,
    output_dir: Path,
    site_title: Callable[[], str],
    max_age: Callable[[], int],
    secret_key: Callable[[], bytes],
    unsubscribe: Callable[[str], Awaitable[bool]],
    health: Callable[[bool], tuple[dict[str, object], bool]],
    metrics: Metrics,
    templates: Callable[[], Templates | None] = lambda: None,
    health_token: Callable[[], SecretStr | None] = lambda: None,
    signups: Desk | None = None,
    settings: Callable[[], Settings] | None = None,
) -> Starlette:
    """The HTTP app. The callables are asked on every request, so live config applies at once
    (the output directory alone needs a restart).

    ``unsubscribe(email)`` records the unsubscription and returns True if it is new;
    ``health(detailed)`` returns the JSON body and whether the service is healthy; the
    details are asked for only for a local request or one that carries the health token.
    ``signups`` (with ``settings``) serves the subscription pages.
    """
    site = OutputFiles(output_dir, max_age, metrics)
    unsubscribe_endpoint = _Unsubscribe(
        site_title=site_title,
        secret_key=secret_key,
        unsubscribe=unsubscribe,
        metrics=metrics,
        templates=templates,
    )

    async def healthz(request: Request) -> Response:
        body, healthy = await run_in_threadpool(health, _may_see_details(request, health_token()))
        status = 200 if healthy else 503
        metrics.request("other", status)
        text = json.dumps(body, ensure_ascii=False, default=str, indent=2) + "\n"
        return Response(text, status_code=status, media_type="application/json", headers=NO_STORE)

    async def metrics_endpoint(request: Request) -> Response:
        metrics.request("other", 200)
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE, headers=NO_STORE)

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint, methods=["GET", "HEAD"]),
        Route("/unsubscribe/{token}", unsubscribe_endpoint.handle, methods=["GET", "HEAD", "POST"]),
    ]
    if signups is not None and settings is not None:
        pages = SignupPages(signups, settings=settings, templates=templates, metrics=metrics)
        either = ["GET", "HEAD", "POST"]
        routes += [
            Route("/subscribe", pages.subscribe, methods=either),
            Route("/subscribe/confirm/{token}", pages.confirm, methods=either),
            Route("/preferences/{token}", pages.preferences, methods=either),
        ]
    routes.append(Route("/{path:path}", site.handle, methods=["GET", "HEAD"]))
    return Starlette(routes=routes)
