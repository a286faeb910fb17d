"""Search: a real Pagefind index of real pages, searched with Pagefind's own pagefind.js in Node.

Node.js comes with this kind of machine (as Pagefind's binary comes with its PyPI wheel); the
script below reads the index from disk instead of over HTTP, and switches exact diacritics
the way assets/search.js does.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.content.source import Source
from service.publish.build import Builder
from service.publish.search import (
    SearchIndexer,
    SearchIndexError,
    index_site,
    index_site_async,
    search_alternates,
)
from service.settings import Settings

Write = Callable[[str, str], Path]
REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)

SEARCH = r"""
import { readFile } from "node:fs/promises";
import { fileURLToPath, pathToFileURL } from "node:url";
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init) => {
  const href = String(url);
  if (!href.startsWith("file:")) return realFetch(url, init);
  return new Response(await readFile(fileURLToPath(href.split("?")[0])));
};
const pagefind = await import(pathToFileURL(process.argv[2]).href);
const out = {};
for (const query of JSON.parse(process.argv[3])) {
  // as assets/search.js does: marks in the query are meant, none means any
  const exact = /[đĐ]/.test(query) || query.normalize("NFD") !== query;
  await pagefind.options({ exactDiacritics: exact });
  const found = await pagefind.search(query);
  const data = await Promise.all(found.results.map((r) => r.data()));
  out[query] = data.map((d) => d.url.replace(/\/$/, "").split("/").pop()).sort();
}
console.log(JSON.stringify(out));
"""


def search(public: Path, queries: list[str], tmp_path: Path) -> dict[str, list[str]]:
    script = tmp_path / "search.mjs"
    script.write_text(SEARCH, encoding="utf-8")
    node = shutil.which("node")
    assert node, "Node.js comes with this kind of machine"
    done = subprocess.run(
        [node, str(script), str(public / "pagefind" / "pagefind.js"), json.dumps(queries)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, list[str]] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.fixture
def public(settings: Settings, write: Write, project: Path) -> Path:
    for name in ("lich-tiep-cong-dan-thang-12-2026.md", "thong-bao-nghi-tet-duong-lich-2027.md"):
        shutil.copy(REPO / "content/2026/11" / name, project / "content" / name)
    write("tiep-thi.md", "---\ntitle: Hội chợ\ndate: 2026-11-20\n---\nTiệp khắc và tiếp thị.\n")
    write("khac.md", "---\ntitle: Đường giao thông\ndate: 2026-11-21\n---\nSửa đường.\n")
    scan = Source(settings.source.dir, settings.site.zone).scan()
    Builder(settings, settings.site.templates_dir).build(scan, NOW)
    return project / "public"


def test_vietnamese_search_with_and_without_diacritics(public: Path, tmp_path: Path) -> None:
    report = index_site(public)
    assert report.pages == 4 and report.bytes > 0
    assert (public / "assets/search.js").is_file()
    found = search(public, ["tiếp", "tiep", "tiệp", "dong phong", "Đông Phong", "duong"], tmp_path)
    schedule, holiday = "lich-tiep-cong-dan-thang-12-2026", "nghi-tet-duong-lich-2027"
    with_tiep = sorted([schedule, holiday, "tiep-thi"])  # the holiday notice: "tiếp nhận"
    assert found["tiếp"] == with_tiep  # marks typed: exact
    assert found["tiep"] == with_tiep  # none typed: any marks
    assert found["tiệp"] == ["tiep-thi"]  # "Tiệp khắc", not "tiếp"
    # đ typed as d, through the folded words (the holiday notice has "đồng" and "phòng")
    assert found["dong phong"] == sorted([schedule, holiday])
    assert found["Đông Phong"] == [schedule]
    assert holiday in found["duong"] and "khac" in found["duong"]  # Dương, Đường


def test_a_new_index_replaces_the_old_one_whole(public: Path, tmp_path: Path) -> None:
    index_site(public)
    (public / "articles/khac/index.html").unlink()
    index_site(public)
    assert not (public / ".pagefind-new").exists() and not (public / ".pagefind-old").exists()
    assert search(public, ["duong"], tmp_path)["duong"] == ["nghi-tet-duong-lich-2027"]


def test_a_failed_index_keeps_the_previous_one(public: Path, tmp_path: Path) -> None:
    index_site(public)
    with pytest.raises(SearchIndexError, match="search index not rebuilt"):
        index_site(tmp_path / "no-such-site")
    assert search(public, ["tiep"], tmp_path)["tiep"]


def test_past_its_memory_limit_indexing_stops_and_says_which_setting(
    public: Path, tmp_path: Path
) -> None:
    """Pagefind takes ~1.7 GB per 10,000 pages and did not finish 100,000 within 12 GiB: on a
    modest host it must stop at search.memory_limit, not take the host's memory."""
    index_site(public, memory_mib=1024)  # a small site fits
    with pytest.raises(SearchIndexError, match=r"search\.memory_limit = 48 MiB") as caught:
        index_site(public, memory_mib=48)
    assert "previous index stays" in str(caught.value)
    assert search(public, ["tiep"], tmp_path)["tiep"]  # the previous index still answers
    with pytest.raises(SearchIndexError, match=r"search\.memory_limit = 48 MiB"):
        asyncio.run(index_site_async(public, 48))

    told: list[tuple[bool, str]] = []  # what the daemon's health is told

    async def daemon(memory_mib: int) -> None:
        indexer = SearchIndexer(quiet=0, on_done=lambda ok, detail, _: told.append((ok, detail)))
        indexer.built(public, memory_mib=memory_mib)
        await indexer.idle()

    asyncio.run(daemon(48))
    asyncio.run(daemon(1024))
    assert [ok for ok, _ in told] == [False, True]
    assert "search.memory_limit = 48 MiB" in told[0][1] and "4 pages" in told[1][1]


def test_the_daemon_indexes_once_after_a_burst_of_builds(public: Path, tmp_path: Path) -> None:
    runs: list[Path] = []

    async def counted(output: Path, memory_mib: int | None) -> object:
        runs.append(output)
        return await index_site_async(output, memory_mib)

    async def burst() -> SearchIndexer:
        indexer = SearchIndexer(quiet=0, run=counted)  # type: ignore[arg-type]
        for _ in range(3):
            indexer.built(public, memory_mib=1024)
        await indexer.idle()
        indexer.built(public, changed=False)  # nothing new: no run
        await indexer.idle()
        return indexer

    indexer = asyncio.run(burst())
    assert runs == [public]
    assert indexer.last is not None and indexer.last.pages == 4 and indexer.error is None
    assert search(public, ["tiep"], tmp_path)["tiep"]


def test_folded_words_are_the_d_words_only() -> None:
    assert search_alternates("Trụ sở, phường Đông Phong", "<p>đường Điện Biên</p>") == (
        "Dong duong Dien"
    )
    assert search_alternates("Lịch tiếp công dân") == ""


def _alternates_reference(*texts: str) -> str:
    """search_alternates as first written: every đ-word of the whole text, folded in order."""
    found: dict[str, None] = {}
    for text in texts:
        for word in re.findall(r"\w*[đĐ]\w*", text):
            plain = unicodedata.normalize("NFD", word.replace("đ", "d").replace("Đ", "D"))
            found["".join(c for c in plain if not unicodedata.combining(c))] = None
    return " ".join(found)


@given(
    st.lists(
        st.text(alphabet=st.sampled_from(list('aăđĐoơ_1 .-<>"=\t\n\u00a0\u2003\x1c\u0300')))
        | st.sampled_from(["Đông", "đường", "x_đ", "<p>Điện</p>"]),
        max_size=4,
    )
)
def test_alternates_are_those_of_the_whole_text(texts: list[str]) -> None:
    """Searching the whitespace-separated pieces finds the words a search of the whole text
    finds, in the same order (the pieces are a speed-up only)."""
    assert search_alternates(*texts) == _alternates_reference(*texts)
