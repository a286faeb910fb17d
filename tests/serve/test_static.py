"""Static files over HTTP: content types, ETags and 304s, HEAD, gzip, and no way out.

In process through httpx's ASGI transport, on a fresh output directory per test; the request
targets that must reach the app exactly as written go to one real uvicorn server instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from email.utils import formatdate

import pytest
from webkit import SECRET, Client, Served, Site

from service.publish.output import gzip_bytes
from service.serve.static import _Entry, _FileCache, accepts_gzip, etag_matches

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
        (
            "/articles/lich-tiep-dan/events.ics",
            "text/calendar; charset=utf-8",
            "articles/lich-tiep-dan/events.ics",
        ),
    ],
)
def test_files_are_served_with_their_content_type(
    web: Client, site: Site, path: str, content_type: str, file: str | None
) -> None:
    response = web.get(path, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "public, max-age=60"
    assert "content-encoding" not in response.headers
    if file:
        assert response.content == (site.output / file).read_bytes()


def test_a_directory_without_its_slash_redirects(web: Client) -> None:
    response = web.get("/articles/lich-tiep-dan")
    assert response.status_code == 301
    assert response.headers["location"] == "/articles/lich-tiep-dan/"


def test_unknown_path_is_a_small_html_404(web: Client) -> None:
    response = web.get("/khong-co.xml")
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "Không tìm thấy" in response.text


def test_etag_and_if_none_match(web: Client) -> None:
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


def test_if_modified_since(web: Client, site: Site) -> None:
    first = web.get("/atom.xml")
    last_modified = first.headers["last-modified"]
    mtime = (site.output / "atom.xml").stat().st_mtime
    assert last_modified == formatdate(mtime, usegmt=True)
    assert web.get("/atom.xml", headers={"If-Modified-Since": last_modified}).status_code == 304
    older = formatdate(mtime - 86400, usegmt=True)
    assert web.get("/atom.xml", headers={"If-Modified-Since": older}).status_code == 200
    assert web.get("/atom.xml", headers={"If-Modified-Since": "garbage"}).status_code == 200
    # If-None-Match decides alone when present, even against a matching date.
    both = {"If-Modified-Since": last_modified, "If-None-Match": '"other"'}
    assert web.get("/atom.xml", headers=both).status_code == 200


def test_head_has_the_headers_and_no_body(web: Client) -> None:
    get = web.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    head = web.head("/rss.xml", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))
    for name in ("etag", "last-modified", "content-type", "cache-control"):
        assert head.headers[name] == get.headers[name]


def test_gzip_when_asked(web: Client, site: Site) -> None:
    plain = web.get("/rss.xml", headers={"Accept-Encoding": "identity"})
    headers, raw = web.raw("/rss.xml", headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert plain.headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(raw) < len(plain.content)
    assert gzip.decompress(raw) == (site.output / "rss.xml").read_bytes()
    gz_etag = headers["etag"]
    assert gz_etag != plain.headers["etag"]
    assert gz_etag.endswith('-gz"')
    conditional = {"Accept-Encoding": "gzip, deflate", "If-None-Match": gz_etag}
    assert web.get("/rss.xml", headers=conditional).status_code == 304
    refused = web.get("/rss.xml", headers={"Accept-Encoding": "gzip;q=0, *"})
    assert "content-encoding" not in refused.headers


def test_the_builds_gzip_is_sent_when_it_is_of_this_version_of_the_file(
    web: Client, site: Site
) -> None:
    feed = site.output / "rss.xml"
    body = feed.read_bytes()
    # a .gz of the same bytes at another level: valid, and told apart from ours by its bytes
    other = gzip.compress(body, compresslevel=1, mtime=0)
    assert other != gzip_bytes(body)
    packed = site.output / "rss.xml.gz"
    packed.write_bytes(other)
    stamp = feed.stat().st_mtime_ns
    os.utime(packed, ns=(stamp, stamp))
    ask = {"Accept-Encoding": "gzip"}
    headers, raw = web.raw("/rss.xml", headers=ask)
    assert headers["content-encoding"] == "gzip"
    assert raw == other  # read from disk, not compressed again
    # the strong ETag names these bytes, not the file's: ours would be another's
    assert headers["etag"] == '"' + hashlib.sha256(other).hexdigest()[:32] + '-gz"'

    # the file changed since: the .gz beside it is another version's and is not sent
    feed.write_bytes(body.replace("số 1 ".encode(), "số một ".encode()))
    os.utime(feed, ns=(stamp + 10**9, stamp + 10**9))
    headers, raw = web.raw("/rss.xml", headers=ask)
    assert gzip.decompress(raw) == feed.read_bytes()
    assert raw == gzip_bytes(feed.read_bytes())
    assert headers["etag"] == '"' + hashlib.sha256(raw).hexdigest()[:32] + '-gz"'


def test_a_file_without_its_gzip_is_compressed_into_what_the_build_would_write(
    web: Client, site: Site
) -> None:
    assert not (site.output / "atom.xml.gz").exists()
    headers, raw = web.raw("/atom.xml", headers={"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip"
    assert raw == gzip_bytes((site.output / "atom.xml").read_bytes())


def test_a_gzip_file_asked_for_by_name_is_a_download_never_a_page(web: Client, site: Site) -> None:
    packed = gzip_bytes((site.output / "rss.xml").read_bytes())
    (site.output / "rss.xml.gz").write_bytes(packed)
    for ask in ({"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}):
        headers, raw = web.raw("/rss.xml.gz", headers=ask)
        assert headers["content-type"] == "application/gzip"
        assert "content-encoding" not in headers  # not to be unpacked and shown as a feed
        assert raw == packed
        head = web.head("/rss.xml.gz", headers=ask)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(packed))
    assert web.get("/nothing.xml.gz").status_code == 404


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


def test_etag_changes_when_the_file_is_replaced(web: Client, site: Site) -> None:
    path = site.output / "categories" / "thong-bao" / "rss.xml"
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
def test_paths_that_climb_out_are_404(served: Served, target: str) -> None:
    assert (served.site.output.parent / "secret.txt").read_text() == SECRET
    status, body = served.raw_get(target)
    assert status == 404
    assert SECRET.encode() not in body


def test_absolute_paths_are_404(served: Served) -> None:
    secret = (served.site.output.parent / "secret.txt").as_posix()
    for target in ("/" + secret, "/%2F" + secret.lstrip("/"), "/c:%5csecret.txt"):
        status, body = served.raw_get(target)
        assert status == 404, target
        assert SECRET.encode() not in body


def test_a_symlink_that_stays_inside_is_served(served: Served) -> None:
    status, body = served.raw_get("/inside.xml")
    assert status == 200
    assert body == (served.site.output / "rss.xml").read_bytes()


def test_other_methods_are_refused(web: Client) -> None:
    response = web.post("/rss.xml", content=b"x")
    assert response.status_code == 405


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
