"""The HTTP app served by real uvicorn on 127.0.0.1, driven by real HTTP clients."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import os
import signal
import socket
import threading
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.applications import Starlette

from service.mail.tokens import make_token
from service.metrics import Metrics
from service.serve.app import create_app
from service.serve.server import HttpServer, _bind
from service.serve.static import _Entry, _FileCache, accepts_gzip, etag_matches
from service.templating import Templates

REPO = Path(__file__).resolve().parents[2]
HEALTH_TOKEN = "ma-kiem-tra-suc-khoe-0123456789"
KEY = b"unsubscribe key for tests......."
SECRET = "TOP-SECRET-beside-the-output-dir"
RSS = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
    "<title>Cổng thông tin tỉnh</title>"
    + "".join(
        f"<item><title>Thông báo số {n} về lịch tiếp công dân</title>"
        f"<description>Ủy ban nhân dân tỉnh thông báo lịch tiếp công dân tháng {n}.</description>"
        "</item>"
        for n in range(1, 13)
    )
    + "</channel></rss>\n"
)


class Harness:
    """One app on one real server, run in its own thread and event loop, with knobs."""

    def __init__(self, output: Path, templates: Templates | None) -> None:
        self.output = output
        self.metrics = Metrics()
        self.healthy = True
        self.unsubscribed: list[str] = []
        self.fail_unsubscribe = False
        self.app = create_app(
            output_dir=output,
            site_title=lambda: "Cổng thông tin <tỉnh>",
            max_age=lambda: 60,
            secret_key=lambda: KEY,
            unsubscribe=self._unsubscribe,
            health=self._health,
            metrics=self.metrics,
            templates=lambda: templates,
            health_token=lambda: SecretStr(HEALTH_TOKEN),
        )
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))
        self.port = 0

    def _health(self, detailed: bool) -> tuple[dict[str, object], bool]:
        body: dict[str, object] = {"status": "ok" if self.healthy else "failing"}
        if detailed:
            body.update({"last_scan": {"ok": self.healthy}, "vi": "ổn"})
        return body, self.healthy

    async def _unsubscribe(self, email: str) -> bool:
        if self.fail_unsubscribe:
            raise RuntimeError("state is locked")
        if email in self.unsubscribed:
            return False
        self.unsubscribed.append(email)
        return True

    async def _main(self) -> None:
        async with HttpServer(self.app, "127.0.0.1", 0) as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Harness:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "server did not stop"
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def raw_get(self, target: str) -> tuple[int, bytes]:
        """GET with the request target sent exactly as written (httpx would normalise it)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.putrequest("GET", target, skip_accept_encoding=True)
            connection.endheaders()
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _layout(root: Path) -> Path:
    output = root / "public"
    (output / "categories" / "thong-bao").mkdir(parents=True)
    (output / "articles" / "lich-tiep-dan").mkdir(parents=True)
    (output / "rss.xml").write_text(RSS, encoding="utf-8")
    (output / "atom.xml").write_text(RSS.replace("rss", "feed"), encoding="utf-8")
    (output / "feed.json").write_text('{"version": "https://jsonfeed.org/version/1.1"}')
    (output / "index.html").write_text("<!DOCTYPE html><title>Trang chủ</title>", "utf-8")
    (output / "categories" / "thong-bao" / "rss.xml").write_text(RSS, encoding="utf-8")
    article = output / "articles" / "lich-tiep-dan" / "index.html"
    article.write_text("<!DOCTYPE html><title>Lịch tiếp dân</title>", encoding="utf-8")
    (output / ".rss.xml.tmp").write_text("half-written", encoding="utf-8")
    (root / "secret.txt").write_text(SECRET, encoding="utf-8")
    (output / "leak.txt").symlink_to(root / "secret.txt")
    (output / "up").symlink_to(root)
    (output / "inside.xml").symlink_to(output / "rss.xml")
    return output


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    output = _layout(tmp_path_factory.mktemp("web"))
    templates = Templates(REPO / "templates", zone=ZoneInfo("Asia/Ho_Chi_Minh"))
    with Harness(output, templates) as harness:
        yield harness


@pytest.fixture
def web(server: Harness) -> Iterator[httpx.Client]:
    server.healthy = True
    server.fail_unsubscribe = False
    server.unsubscribed.clear()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


# --- static files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "file"),
    [
        ("/rss.xml", "application/rss+xml; charset=utf-8", "rss.xml"),
        ("/atom.xml", "application/atom+xml; charset=utf-8", "atom.xml"),
        ("/feed.json", "application/feed+json; charset=utf-8", "feed.json"),
        ("/", "text/html; charset=utf-8", "index.html"),
        (
            "/articles/lich-tiep-dan/",
            "text/html; charset=utf-8",
            "articles/lich-tiep-dan/index.html",
        ),
        ("/categories/thong-bao/rss.xml", "application/rss+xml; charset=utf-8", None),
    ],
)
def test_files_are_served_with_their_content_type(
    web: httpx.Client, server: Harness, path: str, content_type: str, file: str | None
) -> None:
    response = web.get(path, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "public, max-age=60"
    assert "content-encoding" not in response.headers
    if file:
        assert response.content == (server.output / file).read_bytes()


def test_a_directory_without_its_slash_redirects(web: httpx.Client) -> None:
    response = web.get("/articles/lich-tiep-dan")
    assert response.status_code == 301
    assert response.headers["location"] == "/articles/lich-tiep-dan/"


def test_unknown_path_is_a_small_html_404(web: httpx.Client) -> None:
    response = web.get("/khong-co.xml")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Không tìm thấy" in response.text


def test_etag_and_if_none_match(web: httpx.Client) -> None:
    first = web.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    again = web.get("/rss.xml", headers={"Accept-Encoding": "identity", "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == "public, max-age=60"
    for header in (f'"nope", {etag}', f"W/{etag}", "*"):
        conditional = {"Accept-Encoding": "identity", "If-None-Match": header}
        assert web.get("/rss.xml", headers=conditional).status_code == 304, header
    stale = web.get("/rss.xml", headers={"Accept-Encoding": "identity", "If-None-Match": '"x"'})
    assert stale.status_code == 200
    assert stale.content == first.content


def test_if_modified_since(web: httpx.Client, server: Harness) -> None:
    first = web.get("/atom.xml")
    last_modified = first.headers["last-modified"]
    mtime = (server.output / "atom.xml").stat().st_mtime
    assert last_modified == formatdate(mtime, usegmt=True)
    assert web.get("/atom.xml", headers={"If-Modified-Since": last_modified}).status_code == 304
    older = formatdate(mtime - 86400, usegmt=True)
    assert web.get("/atom.xml", headers={"If-Modified-Since": older}).status_code == 200
    assert web.get("/atom.xml", headers={"If-Modified-Since": "garbage"}).status_code == 200
    # If-None-Match decides alone when present, even against a matching date.
    both = {"If-Modified-Since": last_modified, "If-None-Match": '"other"'}
    assert web.get("/atom.xml", headers=both).status_code == 200


def test_head_has_the_headers_and_no_body(web: httpx.Client) -> None:
    get = web.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    head = web.head("/rss.xml", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    for name in ("etag", "last-modified", "content-type", "cache-control"):
        assert head.headers[name] == get.headers[name]


def test_gzip_when_asked(web: httpx.Client, server: Harness) -> None:
    plain = web.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    with web.stream("GET", "/rss.xml", headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
        headers = response.headers
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert plain.headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(raw) < len(plain.content)
    assert gzip.decompress(raw) == (server.output / "rss.xml").read_bytes()
    gz_etag = headers["etag"]
    assert gz_etag != plain.headers["etag"]
    assert gz_etag.endswith('-gz"')
    conditional = {"Accept-Encoding": "gzip, deflate", "If-None-Match": gz_etag}
    assert web.get("/rss.xml", headers=conditional).status_code == 304
    refused = web.get("/rss.xml", headers={"Accept-Encoding": "gzip;q=0, *"})
    assert "content-encoding" not in refused.headers


def test_accept_encoding_parsing() -> None:
    assert accepts_gzip("gzip, deflate, br")
    assert accepts_gzip("br;q=1.0, gzip;q=0.8")
    assert accepts_gzip("*")
    assert not accepts_gzip(None)
    assert not accepts_gzip("identity")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("*, gzip;q=0.000")
    assert not accepts_gzip("gzip;q=bogus")


def test_etag_matching() -> None:
    assert etag_matches('"a", "b"', '"b"')
    assert etag_matches('W/"b"', '"b"')
    assert not etag_matches('"b-gz"', '"b"')
    assert not etag_matches("", '"b"')


def test_etag_changes_when_the_file_is_replaced(web: httpx.Client, server: Harness) -> None:
    path = server.output / "categories" / "thong-bao" / "rss.xml"
    before = web.get("/categories/thong-bao/rss.xml", headers={"Accept-Encoding": "identity"})
    old = path.stat()
    # Same size and, to be nasty, the same mtime: only the bytes (and the inode) differ.
    new = path.with_name("rss.xml.new")
    new.write_bytes(path.read_bytes().replace(b"<title>Th", b"<title>TH", 1))
    os.utime(new, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(new, path)
    after = web.get(
        "/categories/thong-bao/rss.xml",
        headers={"Accept-Encoding": "identity", "If-None-Match": before.headers["etag"]},
    )
    assert after.status_code == 200
    assert after.headers["etag"] != before.headers["etag"]
    assert after.content == path.read_bytes()
    assert b"<title>TH" in after.content


TRAVERSALS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/.%2e/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/categories/../../secret.txt",
    "/categories/%2e%2e/%2e%2e/secret.txt",
    "/..%5csecret.txt",
    "/..\\secret.txt",
    "/%252e%252e/secret.txt",
    "/%2e%2e%00/secret.txt",
    "/leak.txt",
    "/up/secret.txt",
    "/.rss.xml.tmp",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_paths_that_climb_out_are_404(server: Harness, target: str) -> None:
    assert (server.output.parent / "secret.txt").read_text() == SECRET
    status, body = server.raw_get(target)
    assert status == 404
    assert SECRET.encode() not in body


def test_absolute_paths_are_404(server: Harness) -> None:
    secret = (server.output.parent / "secret.txt").as_posix()
    for target in ("/" + secret, "/%2F" + secret.lstrip("/"), "/c:%5csecret.txt"):
        status, body = server.raw_get(target)
        assert status == 404, target
        assert SECRET.encode() not in body


def test_a_symlink_that_stays_inside_is_served(server: Harness) -> None:
    status, body = server.raw_get("/inside.xml")
    assert status == 200
    assert body == (server.output / "rss.xml").read_bytes()


def test_other_methods_are_refused(web: httpx.Client) -> None:
    response = web.post("/rss.xml", content=b"x")
    assert response.status_code == 405


# --- unsubscribe --------------------------------------------------------------------------

ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


def test_get_shows_a_confirmation_and_changes_nothing(web: httpx.Client, server: Harness) -> None:
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
    assert server.unsubscribed == []


def test_one_click_post_unsubscribes(web: httpx.Client, server: Harness) -> None:
    token = make_token(KEY, "Chi.Nguyen@Example.gov.vn")
    url = f"/unsubscribe/{token}"
    response = web.post(url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert response.status_code == 200
    assert "Đã hủy đăng ký" in response.text
    assert server.unsubscribed == ["chi.nguyen@example.gov.vn"]
    again = web.post(url, data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200
    assert "trước đó" in again.text
    assert server.unsubscribed == ["chi.nguyen@example.gov.vn"]


def test_the_address_is_escaped(web: httpx.Client) -> None:
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
def test_a_forged_token_is_refused(web: httpx.Client, server: Harness, token: str) -> None:
    get = web.get(f"/unsubscribe/{token}")
    post = web.post(
        f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK
    )
    assert get.status_code in (400, 404)
    assert post.status_code in (400, 404)
    assert server.unsubscribed == []


def test_a_failing_store_answers_503(web: httpx.Client, server: Harness) -> None:
    server.fail_unsubscribe = True
    token = make_token(KEY, "a@b.vn")
    response = web.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click")
    assert response.status_code == 503
    assert "thử lại" in response.text


def test_the_built_in_page_without_templates(tmp_path: Path) -> None:
    with Harness(_layout(tmp_path), templates=None) as server:
        token = make_token(KEY, "a@b.vn")
        get = httpx.get(f"{server.url}/unsubscribe/{token}")
        assert get.status_code == 200
        assert "Hủy đăng ký</button>" in get.text
        assert "Cổng thông tin &lt;tỉnh&gt;" in get.text
        assert '<form method="post" action="">' in get.text
        assert server.unsubscribed == []
        post = httpx.post(
            f"{server.url}/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click"
        )
        assert "Đã hủy đăng ký" in post.text
        assert server.unsubscribed == ["a@b.vn"]
        assert httpx.get(f"{server.url}/unsubscribe/x{token}").status_code == 400


# --- health and metrics -------------------------------------------------------------------


def test_healthz(web: httpx.Client, server: Harness) -> None:
    ok = web.get("/healthz")
    assert ok.status_code == 200
    assert ok.headers["cache-control"] == "no-store"
    assert ok.json() == {"status": "ok", "last_scan": {"ok": True}, "vi": "ổn"}  # local: all
    server.healthy = False
    failing = web.get("/healthz")
    assert failing.status_code == 503
    assert failing.json()["last_scan"] == {"ok": False}


def test_healthz_details_are_for_this_host_or_the_token(web: httpx.Client, server: Harness) -> None:
    """Behind a proxy every request comes from 127.0.0.1: a forwarded one is public."""
    forwarded = web.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"})
    assert forwarded.json() == {"status": "ok"}
    assert web.get("/healthz", headers={"Forwarded": "for=203.0.113.9"}).json() == {"status": "ok"}
    wrong = web.get(
        "/healthz",
        headers={"X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer sai-ma-kiem-tra"},
    )
    assert wrong.json() == {"status": "ok"}
    for ask in (
        {"headers": {"X-Forwarded-For": "203.0.113.9", "Authorization": f"Bearer {HEALTH_TOKEN}"}},
        {"headers": {"X-Forwarded-For": "203.0.113.9"}, "params": {"token": HEALTH_TOKEN}},
    ):
        assert web.get("/healthz", **ask).json()["vi"] == "ổn"  # type: ignore[arg-type]


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_metrics_count_requests_and_304s(web: httpx.Client) -> None:
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
        output_dir=_layout(tmp_path),
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


def test_a_busy_port_is_a_clear_error(server: Harness) -> None:
    from service.errors import BantinError

    async def main() -> None:
        other = HttpServer(server.app, "127.0.0.1", server.port)
        with pytest.raises(BantinError, match=rf"127\.0\.0\.1:{server.port}.*server\.port"):
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


def test_the_file_cache_keeps_to_its_budget() -> None:
    cache = _FileCache(budget=8000)
    entries = {name: _Entry((1, 900, 1), 0.0, b"x" * 900, '"e"') for name in "abcdefghij"}
    for name, entry in entries.items():
        cache.put(name, entry)
    assert cache.size <= 8000
    assert cache.get("a", (1, 900, 1)) is None  # least recently used went first
    assert cache.get("j", (1, 900, 1)) is entries["j"]
    assert cache.get("j", (2, 900, 1)) is None  # another version of the file is a miss
    entries["j"].gz = b"z" * 100
    cache.put("j", entries["j"])
    assert cache.size == sum(e.cost for n, e in entries.items() if cache.get(n, (1, 900, 1)))
    cache.put("huge", _Entry((1, 2000, 1), 0.0, b"x" * 2000, '"h"'))  # > budget / 8: not kept
    assert cache.get("huge", (1, 2000, 1)) is None
