"""The HTTP app's routes (unsubscribe, health, metrics) and the server's life in the service.

Every test gets its own output directory and app (httpx's ASGI transport, no socket), so none
can see another's files, knobs or metrics; the server tests bind real sockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from webkit import HEALTH_TOKEN, KEY, Client, Site, layout

from service.errors import BantinError
from service.mail.tokens import make_token
from service.metrics import Metrics
from service.serve.app import create_app
from service.serve.server import HttpServer, _bind

# --- unsubscribe --------------------------------------------------------------------------

ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


def test_get_shows_a_confirmation_and_changes_nothing(web: Client, site: Site) -> None:
    token = make_token(KEY, "Chi.Nguyen@Example.gov.vn")
    response = web.get(f"/unsubscribe/{token}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert "chi.nguyen@example.gov.vn" in response.text
    assert '<form method="post" action="">' in response.text
    assert "Hủy đăng ký</button>" in response.text
    assert "Cổng thông tin &lt;tỉnh&gt;" in response.text  # escaped
    assert web.head(f"/unsubscribe/{token}").status_code == 200
    assert site.unsubscribed == []


def test_one_click_post_unsubscribes(web: Client, site: Site) -> None:
    token = make_token(KEY, "Chi.Nguyen@Example.gov.vn")
    url = f"/unsubscribe/{token}"
    response = web.post(url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert response.status_code == 200
    assert "Đã hủy đăng ký" in response.text
    assert site.unsubscribed == ["chi.nguyen@example.gov.vn"]
    again = web.post(url, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert "trước đó" in again.text
    assert site.unsubscribed == ["chi.nguyen@example.gov.vn"]


def test_the_address_is_escaped(web: Client) -> None:
    token = make_token(KEY, '"><script>alert(1)</script>@x.vn')
    response = web.get(f"/unsubscribe/{token}")
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text


@pytest.mark.parametrize(
    "token",
    [
        make_token(KEY, "a@b.vn")[:-1] + ("A" if make_token(KEY, "a@b.vn")[-1] != "A" else "B"),
        "A" + make_token(KEY, "a@b.vn")[1:]
        if make_token(KEY, "a@b.vn")[0] != "A"
        else "B" + make_token(KEY, "a@b.vn")[1:],
        make_token(b"someone else's key, 32 bytes....", "a@b.vn"),
        "YUBiLnZu",  # base64url("a@b.vn") without a MAC
        "%2e%2e",
        "a.b",
    ],
)
def test_a_forged_token_is_refused(web: Client, site: Site, token: str) -> None:
    get = web.get(f"/unsubscribe/{token}")
    post = web.post(
        f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
    )
    assert get.status_code in (400, 404)
    assert post.status_code in (400, 404)
    assert site.unsubscribed == []


def test_a_failing_store_answers_503(web: Client, site: Site) -> None:
    site.fail_unsubscribe = True
    token = make_token(KEY, "a@b.vn")
    response = web.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 503
    assert "thử lại" in response.text


def test_the_built_in_page_without_templates(tmp_path: Path) -> None:
    site = Site(layout(tmp_path), templates=None)
    web = Client(site.app)
    try:
        token = make_token(KEY, "a@b.vn")
        get = web.get(f"/unsubscribe/{token}")
        assert get.status_code == 200
        assert "Hủy đăng ký</button>" in get.text
        assert "Cổng thông tin &lt;tỉnh&gt;" in get.text
        assert '<form method="post" action="">' in get.text
        assert site.unsubscribed == []
        post = web.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
        assert "Đã hủy đăng ký" in post.text
        assert site.unsubscribed == ["a@b.vn"]
        assert web.get(f"/unsubscribe/x{token}").status_code == 400
    finally:
        web.close()


# --- health and metrics -------------------------------------------------------------------


def test_healthz(web: Client, site: Site) -> None:
    ok = web.get("/healthz")
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"
    assert ok.json() == {"status": "ok", "last_scan": {"ok": True}, "vi": "ổn"}  # local: all
    site.healthy = False
    failing = web.get("/healthz")
    assert failing.status_code == 503
    assert failing.json()["last_scan"] == {"ok": False}


def test_healthz_details_are_for_this_host_or_the_token(web: Client, site: Site) -> None:
    """Behind a proxy every request comes from 127.0.0.1: a forwarded one is public."""
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    assert web.get("/healthz", headers=relayed).json() == {"status": "ok"}
    assert web.get("/healthz", headers={"Forwarded": "for=203.0.113.9"}).json() == {"status": "ok"}
    wrong = {**relayed, "Authorization": "Bearer sai-ma-kiem-tra"}
    assert web.get("/healthz", headers=wrong).json() == {"status": "ok"}
    bearer = {**relayed, "Authorization": f"Bearer {HEALTH_TOKEN}"}
    assert web.get("/healthz", headers=bearer).json()["vi"] == "ổn"
    query = web.get("/healthz", headers=relayed, params={"token": HEALTH_TOKEN})
    assert query.json()["vi"] == "ổn"


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_metrics_count_requests_and_304s(web: Client) -> None:
    before = web.get("/metrics").text
    etag = web.get("/feed.json").headers["etag"]
    web.get("/feed.json", headers={"If-None-Match": etag})
    web.get("/")
    web.get("/nowhere")
    response = web.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    after = response.text

    def delta(name: str, **labels: str) -> float:
        return _sample(after, name, labels) - _sample(before, name, labels)

    assert delta("bantin_http_requests_total", kind="feed", status="200") == 1
    assert delta("bantin_http_requests_total", kind="feed", status="304") == 1
    assert delta("bantin_http_not_modified_total", kind="feed") == 1
    assert delta("bantin_http_requests_total", kind="page", status="200") == 1
    assert delta("bantin_http_requests_total", kind="other", status="404") == 1
    assert "bantin_digests_sent_total" in after


# --- running inside the service's loop ----------------------------------------------------


def test_the_server_leaves_sigterm_to_the_service(tmp_path: Path) -> None:
    """uvicorn 0.54 would take SIGTERM, and re-raise it after shutdown (exit -15)."""
    app: Starlette = create_app(
        output_dir=layout(tmp_path),
        site_title=lambda: "t",
        max_age=lambda: 1,
        secret_key=lambda: KEY,
        unsubscribe=lambda email: asyncio.sleep(0, result=True),
        health=lambda detailed: ({}, True),
        metrics=Metrics(),
    )
    seen: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = HttpServer(app, "127.0.0.1", 0)

        def on_term() -> None:
            seen.append(signal.SIGTERM)
            server.request_stop()

        loop.add_signal_handler(signal.SIGTERM, on_term)
        try:
            await server.start()
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{server.url}/rss.xml")).status_code == 200
            os.kill(os.getpid(), signal.SIGTERM)
            assert server.task is not None
            await asyncio.wait_for(asyncio.shield(server.task), 5)
            assert seen == [signal.SIGTERM]  # our handler stopped it, not uvicorn's
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())
    assert seen == [signal.SIGTERM]  # and nothing re-raised it afterwards


def test_a_busy_port_is_a_clear_error(site: Site) -> None:
    async def main() -> None:
        async with HttpServer(site.app, "127.0.0.1", 0) as first:
            other = HttpServer(site.app, "127.0.0.1", first.port)
            with pytest.raises(BantinError, match=rf"127\.0\.0\.1:{first.port}.*server\.port"):
                await other.start()

    asyncio.run(main())


def test_the_listening_socket_is_tcp_so_responses_are_not_delayed() -> None:
    # asyncio sets TCP_NODELAY on accepted sockets only when proto is IPPROTO_TCP; with
    # socket.create_server's proto 0, a small gzip answer waited 40 ms (delayed ACK).
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
