"""deploy/nginx.conf as shipped, in a real nginx in front of a real `bantin run`.

The static files come from public/ (the feeds from the .gz the build wrote, 304s on both
validators), the dynamic routes go to bantin (health, the subscription form and its
confirmation, one-click unsubscribe), and the content types are bantin's own.
"""

from __future__ import annotations

import gzip
import re
import subprocess
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from nginxkit import NGINX, SHIPPED, Nginx, check_config, main_config, running_nginx
from servicekit import Bantin, Mailbox, smtp_server

from service.mail.tokens import unsubscribe_url

SECRET = "khoa-ky-lien-ket-cho-thu-nghiem"
GZIP = {"Accept-Encoding": "gzip"}
PLAIN = {"Accept-Encoding": "identity"}


@pytest.fixture
def stack(project: Path) -> Iterator[tuple[Bantin, Nginx, Mailbox]]:
    with smtp_server() as (smtp_port, mailbox):
        bantin = Bantin(project, smtp_port)
        bantin.publish("Thông báo lịch tiếp công dân tháng 5")
        bantin.publish("Kế hoạch cải cách hành chính năm 2024")
        bantin.subscribe()
        public = project / "public"
        public.mkdir()
        try:
            with running_nginx(public, upstream_port=bantin.port) as nginx:
                # the site's public name is nginx's, as site.base_url is in production
                config = bantin.config_text().replace(
                    f'base_url = "{bantin.url}"', f'base_url = "{nginx.url}"'
                )
                assert nginx.url in config
                bantin.write_config(
                    config + f'secret_key = "{SECRET}"\n[subscribe]\nenabled = true\n'
                )
                bantin.start()
                bantin.wait(lambda: (public / "rss.xml.gz").exists(), 20, "the first build")
                yield bantin, nginx, mailbox
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()[-4000:]}")


def raw_get(url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """GET, and the body exactly as sent (httpx would undo the Content-Encoding)."""
    with httpx.Client(timeout=5) as client, client.stream("GET", url, headers=headers) as answer:
        return answer, b"".join(answer.iter_raw())


def test_the_feed_is_the_builds_gzip_with_validators_that_answer_304(
    stack: tuple[Bantin, Nginx, Mailbox], project: Path
) -> None:
    bantin, nginx, _ = stack
    public = project / "public"
    feed, packed = public / "rss.xml", public / "rss.xml.gz"

    answer, body = raw_get(nginx.url + "/rss.xml", GZIP)
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == "gzip"
    assert body == packed.read_bytes()  # the very file, not compressed on the fly
    assert gzip.decompress(body) == feed.read_bytes()
    assert answer.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert "Accept-Encoding" in answer.headers["vary"]
    etag = answer.headers["etag"]
    assert not etag.startswith("W/")  # a strong validator: the bytes are the file's
    # the .gz carries the file's mtime: one Last-Modified for both representations
    last_modified = formatdate(feed.stat().st_mtime, usegmt=True)
    assert answer.headers["last-modified"] == last_modified

    plain, plain_body = raw_get(nginx.url + "/rss.xml", PLAIN)
    assert "content-encoding" not in plain.headers
    assert plain_body == feed.read_bytes()
    assert plain.headers["last-modified"] == last_modified
    assert plain.headers["etag"] != etag  # another representation, another ETag

    for validators in (
        {"If-None-Match": etag},
        {"If-Modified-Since": last_modified},
    ):
        again = httpx.get(nginx.url + "/rss.xml", headers={**GZIP, **validators}, timeout=5)
        assert again.status_code == 304, validators
        assert again.content == b""
    plain_etag = {**PLAIN, "If-None-Match": plain.headers["etag"]}
    assert httpx.get(nginx.url + "/rss.xml", headers=plain_etag, timeout=5).status_code == 304
    head = httpx.head(nginx.url + "/rss.xml", headers=GZIP, timeout=5)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(body))

    # a new article: the feed and its .gz change together, and the old ETag no longer matches
    bantin.publish("Thông báo nghỉ lễ")
    bantin.wait(lambda: b"ngh" in gzip.decompress(packed.read_bytes()), 20, "the rebuilt feed")
    assert packed.stat().st_mtime_ns == feed.stat().st_mtime_ns
    changed, new_body = raw_get(nginx.url + "/rss.xml", {**GZIP, "If-None-Match": etag})
    assert changed.status_code == 200
    assert new_body == packed.read_bytes()
    assert "Thông báo nghỉ lễ" in gzip.decompress(new_body).decode()


def test_every_kind_of_file_has_bantins_content_type(
    stack: tuple[Bantin, Nginx, Mailbox], project: Path
) -> None:
    bantin, nginx, _ = stack
    public = project / "public"
    article = next(p for p in (public / "articles").iterdir() if p.is_dir())
    category = next(p for p in (public / "categories").iterdir() if p.is_dir())
    paths = [
        "/rss.xml",
        "/atom.xml",
        "/feed.json",
        "/calendar.ics",
        "/sitemap.xml",
        "/robots.txt",
        "/",
        f"/articles/{article.name}/",
        f"/categories/{category.name}/rss.xml",
        "/rss.xml.gz",
    ]
    for path in paths:
        for headers in (GZIP, PLAIN):
            ours = httpx.get(nginx.url + path, headers=headers, timeout=5)
            theirs = httpx.get(bantin.url + path, headers=headers, timeout=5)
            assert ours.status_code == theirs.status_code == 200, path
            assert ours.headers["content-type"] == theirs.headers["content-type"], path
            assert ours.content == theirs.content, path
    # rss.xml.gz by name is the compressed file, as bantin serves it: never the feed itself
    named, body = raw_get(nginx.url + "/rss.xml.gz", GZIP)
    assert named.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in named.headers
    assert body == (public / "rss.xml.gz").read_bytes()

    # a folder without its slash, as bantin answers it: a relative redirect
    moved = httpx.get(f"{nginx.url}/articles/{article.name}", timeout=5)
    assert moved.status_code == 301
    assert moved.headers["location"] == f"/articles/{article.name}/"
    # the site's own 404 page; bantin's manifest and temporary files are not published
    missing = httpx.get(nginx.url + "/khong-co.html", timeout=5)
    assert missing.status_code == 404
    assert missing.text == (public / "404.html").read_text(encoding="utf-8")
    (public / ".rss.xml.123.part").write_text("half-written")
    for hidden in ("/.bantin-manifest", "/.rss.xml.123.part", "/metrics"):
        assert httpx.get(nginx.url + hidden, timeout=5).status_code == 404, hidden


def test_the_dynamic_routes_reach_bantin(stack: tuple[Bantin, Nginx, Mailbox]) -> None:
    bantin, nginx, mailbox = stack
    health = httpx.get(nginx.url + "/healthz", timeout=5)
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert "runs" not in health.json()  # relayed by a proxy: no details
    assert "runs" in bantin.health()  # asked on the host itself: the details
    assert health.headers["cache-control"] == "no-store"

    form = httpx.get(nginx.url + "/subscribe", timeout=5)
    assert form.status_code == 200
    assert f'action="{nginx.url}/subscribe"' in form.text
    version = re.search(r'name="v" value="([0-9a-f]+)"', form.text)
    assert version, form.text
    sent = httpx.post(
        nginx.url + "/subscribe",
        data={"email": "lan@example.org", "frequency": "weekly", "v": version[1]},
        headers={"Origin": nginx.url},
        timeout=5,
    )
    assert sent.status_code == 200, sent.text
    assert "Hãy kiểm tra hộp thư" in sent.text
    mail = bantin.wait(lambda: mailbox.to("lan@example.org"), 10, "the confirmation mail")[0]
    confirm = re.search(rf"({re.escape(nginx.url)}/subscribe/confirm/[A-Za-z0-9_-]+)", mail.text)
    assert confirm, mail.text
    assert httpx.get(confirm[1], timeout=5).status_code == 200  # a scanner's GET: a button
    done = httpx.post(confirm[1], headers={"Origin": nginx.url}, timeout=5)
    assert done.status_code == 200, done.text
    status = bantin.cli("status").stdout
    assert "1 confirmed" in status, status

    # RFC 8058 one-click: a POST with List-Unsubscribe=One-Click
    leave = unsubscribe_url(nginx.url, SECRET.encode(), "lan@example.org")
    assert httpx.get(leave, timeout=5).status_code == 200  # a confirmation, not an act
    gone = httpx.post(leave, data={"List-Unsubscribe": "One-Click"}, timeout=5)
    assert gone.status_code == 200
    assert "lan@example.org" in gone.text
    again = httpx.post(leave, data={"List-Unsubscribe": "One-Click"}, timeout=5)
    assert "trước đó" in again.text  # "already": the first POST reached the ledger


def test_nginx_accepts_the_shipped_file_as_it_is(tmp_path: Path) -> None:
    """The file an operator copies to sites-available, unchanged, under Debian's http block."""
    config = tmp_path / "nginx.conf"
    config.write_text(main_config(tmp_path, SHIPPED.read_text(encoding="utf-8")))
    checked = check_config(config)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    assert "[warn]" not in checked.stderr and "[emerg]" not in checked.stderr, checked.stderr


def test_nginx_is_installed_where_the_tests_run() -> None:
    """scripts/test-services installs it: the tests above never skip for want of it."""
    version = subprocess.run([NGINX, "-V"], capture_output=True, text=True, timeout=10)
    assert version.returncode == 0
    assert "--with-http_gzip_static_module" in version.stderr
