"""The HTTP app under test: its knobs, an in-process client, and a real server for raw targets.

Used by tests/serve/: ``Site`` builds the app over one output directory with callables the
tests turn (healthy, unsubscribe failing); ``Client`` drives it through httpx's ASGI transport
without a socket; ``Served`` puts it on real uvicorn in a thread, for what only a socket shows.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette

from service.metrics import Metrics
from service.serve.app import create_app
from service.serve.server import HttpServer
from service.templating import Templates

KEY = b"unsubscribe key for tests......."
HEALTH_TOKEN = "ma-kiem-tra-suc-khoe-0123456789"
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


class Site:
    """One app over one output directory, with the knobs the tests turn."""

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


class Client:
    """httpx over its ASGI transport, driven from plain tests: no socket, no thread."""

    def __init__(self, app: Starlette) -> None:
        self._runner = asyncio.Runner()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://tinh.example.gov.vn"
        )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._runner.run(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("HEAD", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def raw(self, url: str, **kwargs: Any) -> tuple[httpx.Headers, bytes]:
        """GET, and the body as it came, before httpx undoes any Content-Encoding."""

        async def fetch() -> tuple[httpx.Headers, bytes]:
            async with self._client.stream("GET", url, **kwargs) as response:
                return response.headers, b"".join([chunk async for chunk in response.aiter_raw()])

        return self._runner.run(fetch())

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()


class Served:
    """An app on a real uvicorn server, in its own thread and event loop."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.app = site.app
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))
        self.port = 0

    async def _main(self) -> None:
        async with HttpServer(self.app, "127.0.0.1", 0) as server:
            self.port = server.port
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Served:
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


def layout(root: Path) -> Path:
    """An output directory with feeds and pages, and traps beside and inside it."""
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
    (article.parent / "events.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nSUMMARY:Tiếp công dân\r\nEND:VCALENDAR\r\n",
        encoding="utf-8",
    )
    (output / ".rss.xml.tmp").write_text("half-written", encoding="utf-8")
    (root / "secret.txt").write_text(SECRET, encoding="utf-8")
    (output / "leak.txt").symlink_to(root / "secret.txt")
    (output / "up").symlink_to(root)
    (output / "inside.xml").symlink_to(output / "rss.xml")
    return output
