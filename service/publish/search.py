"""Search over the whole archive with no server side: a Pagefind index of the article pages.

Pagefind (the ``pagefind`` package from PyPI, which ships its binary) indexes the article pages
(``data-pagefind-body``) into ``pagefind/`` under the output directory; the browser fetches only
the index chunks a query needs, so 100,000 articles cost a visitor a few hundred kilobytes.

Vietnamese: Pagefind 1.5 indexes each word with its diacritics folded ("tiếp" under "tiep") and
can match either way. ``assets/search.js`` asks for exact diacritics when the query has any
("tiệp" does not find "tiếp") and folded matching when it has none ("tiep" finds "tiếp"). One
letter escapes Pagefind's folding: đ is a letter of its own, not d with a mark, yet people who
type without diacritics write "dong" for "Đông". Each page therefore carries its đ-words folded
("Dong Phong") in an attribute Pagefind indexes but never shows (``search_alternates``).

Indexing reads every page, so it never runs inside a build: ``bantin build --search`` runs it
once after the build, and the daemon calls ``SearchIndexer.built`` after each build, which
indexes once builds have been quiet for a while. The new index is written beside the live one
and swapped in whole, so a visitor never meets half an index.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import resource
import shutil
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from service.errors import BantinError

__all__ = [
    "SEARCH_DIR",
    "SEARCH_SCRIPT",
    "IndexReport",
    "SearchIndexError",
    "SearchIndexer",
    "index_site",
    "search_alternates",
]

SEARCH_DIR = "pagefind"
SEARCH_SCRIPT = "search.js"  # in the templates directory; published as assets/search.js
PAGES_GLOB = "articles/*/index.html"
QUIET_SECONDS = 30.0  # builds this far apart are one burst of edits: index once after it
# what Pagefind (Rust), the loader or Python say when the address-space limit is reached
_OUT_OF_MEMORY = re.compile(
    r"memory allocation of|failed to map segment|Cannot allocate memory|MemoryError"
)
_D_WORD = re.compile(r"\w*[đĐ]\w*")
_D = str.maketrans({"đ": "d", "Đ": "D"})

log = logging.getLogger("bantin.search")


class SearchIndexError(BantinError):
    """Pagefind could not index the output directory; the previous index stays in place."""


@dataclass(frozen=True, slots=True)
class IndexReport:
    """One indexing run: pages indexed, seconds taken, and the index's size on disk."""

    pages: int
    seconds: float
    bytes: int
    files: int


def search_alternates(*texts: str) -> str:
    """The words of ``texts`` that contain đ, folded as people type them without diacritics
    ("Đông Phong" -> "Dong"): Pagefind's own folding leaves đ as it is.

    Every article page asks this of its whole text: a regex over the text and a fold of every
    hit took 0.36 ms a page. Whitespace never joins a word, so the text's distinct
    whitespace-separated pieces are searched instead, only those with a đ, each word folded
    once (the same words, in the same order of first appearance: 0.10 ms)."""
    found: dict[str, None] = {}
    for text in texts:
        for piece in dict.fromkeys(text.split()):
            if "đ" in piece or "Đ" in piece:
                for word in _D_WORD.findall(piece):
                    found[_fold(word)] = None
    return " ".join(found)


@functools.lru_cache(maxsize=4096)
def _fold(word: str) -> str:
    plain = unicodedata.normalize("NFD", word.translate(_D))
    return "".join(c for c in plain if not unicodedata.combining(c))


def _limited(memory_mib: int | None) -> Callable[[], None] | None:
    """What the Pagefind child runs before it starts: an address-space limit of
    ``memory_mib`` MiB (a large site takes gigabytes; past the limit it stops, the host lives)."""
    if memory_mib is None:
        return None
    limit = memory_mib * 1024 * 1024

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return limit_memory


def _command(output_dir: Path, target: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pagefind",
        "--site",
        str(output_dir),
        "--glob",
        PAGES_GLOB,
        "--output-path",
        str(target),
    ]


def _size(directory: Path) -> tuple[int, int]:
    total = files = 0
    for root, _, names in os.walk(directory):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
            files += 1
    return total, files


_PAGES = re.compile(r"Indexed (\d+) pages?")


def _swap_in(output_dir: Path, fresh: Path) -> None:
    """Put ``fresh`` where the live index is: two renames, the gap between them microseconds."""
    live = output_dir / SEARCH_DIR
    old = output_dir / f".{SEARCH_DIR}-old"
    shutil.rmtree(old, ignore_errors=True)
    if live.exists():
        live.rename(old)
    fresh.rename(live)
    shutil.rmtree(old, ignore_errors=True)


def _finish(output_dir: Path, fresh: Path, output: str, started: float) -> IndexReport:
    _swap_in(output_dir, fresh)
    size, files = _size(output_dir / SEARCH_DIR)
    found = _PAGES.findall(output)
    return IndexReport(int(found[-1]) if found else 0, time.monotonic() - started, size, files)


def _failed(output: str, code: int | None, memory_mib: int | None = None) -> SearchIndexError:
    if memory_mib is not None and _OUT_OF_MEMORY.search(output):
        return SearchIndexError(
            f"search index not rebuilt: Pagefind needed more than search.memory_limit = "
            f"{memory_mib} MiB (about 1.7 GB per 10,000 articles); raise it if the host has "
            "the memory; the previous index stays"
        )
    last = next((line for line in reversed(output.splitlines()) if line.strip()), "")
    return SearchIndexError(f"search index not rebuilt: pagefind exited {code}: {last}")


def index_site(
    output_dir: Path, timeout: float = 3600, memory_mib: int | None = None
) -> IndexReport:
    """Index the article pages under ``output_dir`` into ``pagefind/`` (blocking), Pagefind
    limited to ``memory_mib`` MiB.

    :raises SearchIndexError: Pagefind failed or is missing; the previous index stays.
    """
    import subprocess

    fresh = output_dir / f".{SEARCH_DIR}-new"  # a dot name: never served while it grows
    shutil.rmtree(fresh, ignore_errors=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            _command(output_dir, fresh),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=_limited(memory_mib),  # setrlimit only: safe before exec
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(fresh, ignore_errors=True)
        raise SearchIndexError(f"search index not rebuilt: {exc}") from exc
    output = done.stdout + done.stderr
    if done.returncode != 0 or not fresh.is_dir():
        shutil.rmtree(fresh, ignore_errors=True)
        raise _failed(output, done.returncode, memory_mib)
    return _finish(output_dir, fresh, output, started)


async def index_site_async(output_dir: Path, memory_mib: int | None = None) -> IndexReport:
    """``index_site`` as a child process the event loop waits for; cancelling it (the service
    stopping) kills Pagefind instead of waiting for it."""
    fresh = output_dir / f".{SEARCH_DIR}-new"
    await asyncio.to_thread(shutil.rmtree, fresh, True)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *_command(output_dir, fresh),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=_limited(memory_mib),  # setrlimit only: safe before exec
    )
    try:
        data, _ = await process.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    output = data.decode("utf-8", "replace")
    if process.returncode != 0 or not fresh.is_dir():
        shutil.rmtree(fresh, ignore_errors=True)
        raise _failed(output, process.returncode, memory_mib)
    return await asyncio.to_thread(_finish, output_dir, fresh, output, started)


class SearchIndexer:
    """The daemon's hook: call ``built(output_dir, changed)`` after every build; the index is
    rebuilt ``quiet`` seconds after the last build that changed files, one run at a time, off
    the build's path (a one-file rebuild never waits for it)."""

    def __init__(
        self,
        quiet: float = QUIET_SECONDS,
        run: Callable[[Path, int | None], Awaitable[IndexReport]] = index_site_async,
        on_done: Callable[[bool, str, float], None] | None = None,
    ) -> None:
        self.quiet = quiet
        self.run = run
        self.on_done = on_done  # told (ok, detail, seconds) after each run
        self.memory_mib: int | None = None  # Pagefind's limit, as the last build's settings say
        self.last: IndexReport | None = None
        self.error: str | None = None
        self._due: Path | None = None  # an output directory waiting to be indexed
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def built(self, output_dir: Path, changed: bool = True, memory_mib: int | None = None) -> None:
        """A build finished (on the event loop's thread); ``changed``: it wrote or removed
        files. Indexes ``quiet`` seconds after the last such call, within ``memory_mib``."""
        self.memory_mib = memory_mib
        if not changed and not (self.last is None and self._due is None):
            return  # nothing new, and an index exists or is on its way
        self._due = output_dir
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.quiet, self._start)

    def _start(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            # one run at a time: try again when this one is likely done
            self._timer = asyncio.get_running_loop().call_later(self.quiet, self._start)
            return
        due, self._due = self._due, None
        if due is not None:
            self._task = asyncio.get_running_loop().create_task(self._index(due))

    async def _index(self, output_dir: Path) -> None:
        started = time.monotonic()
        try:
            self.last = await self.run(output_dir, self.memory_mib)
        except SearchIndexError as exc:
            self.error = str(exc)
            log.error("%s", exc)
            if self.on_done is not None:
                self.on_done(False, self.error, time.monotonic() - started)
            return
        self.error = None
        detail = f"{self.last.pages} pages, {self.last.bytes / 1e6:.1f} MB"
        log.info("search index: %s in %.1f s", detail, self.last.seconds)
        if self.on_done is not None:
            self.on_done(True, detail, self.last.seconds)

    async def idle(self) -> None:
        """Wait until no index run is due or running (for tests and a clean stop)."""
        while self._timer is not None or (self._task is not None and not self._task.done()):
            if self._task is not None and not self._task.done():
                await asyncio.wait({self._task})
            else:
                await asyncio.sleep(min(self.quiet, 0.05))  # the timer is due in ``quiet``
