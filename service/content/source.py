"""The articles directory: scanning it into Articles, cheaply when little has changed.

A rescan stats every file and re-parses only those whose (mtime, size, inode) changed, so an
unchanged tree of 100,000 articles costs about as much as walking it. Bad files are reported as
ArticleErrors, never raised; duplicates are resolved deterministically (first path wins).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from zoneinfo import ZoneInfo

from service import workers
from service.content import index, stored
from service.content.index import Throttle as index_throttle
from service.content.scan import Scan
from service.errors import ArticleError, ConfigError, printable
from service.model import Article

__all__ = ["MAX_FILE_BYTES", "PARSERS", "Source", "parse_file"]


# The parsers (YAML, cmark, nh3, lxml) are imported with the first file to parse: a restart
# over an unchanged tree parses none.
def _markdown(text: str, source: str, zone: ZoneInfo) -> Article:
    from service.content.parse import parse_markdown

    return parse_markdown(text, source, zone)


def _portal(text: str, source: str, zone: ZoneInfo) -> Article:
    from service.content.parse import parse_portal

    return parse_portal(text, source, zone)


PARSERS = {".md": _markdown, ".markdown": _markdown, ".txt": _portal}
# An announcement is a few kilobytes; a file far beyond this is a misplaced dump or log, and
# reading it whole on every change would stall the scan and the feeds that carry it.
MAX_FILE_BYTES = 2_000_000
_Stamp = tuple[int, int, int]


# Hidden files (and .#lock files), editor backups (*~, *.swp, #autosave#) are skipped silently,
# as is every other extension.
_IGNORED_EXTENSIONS = frozenset([".swp", ".swo", ".tmp"])
_SUFFIXES = tuple(PARSERS)  # as written, lower case: the fast path of a rescan
_NOT_REGULAR = (
    "is not a regular file (a named pipe, socket or device); only files are read: "
    "remove it from the articles directory"
)
_NOT_UTF8_NAME = "the file name is not valid UTF-8; rename it (bantin cannot publish or link it)"


def parse_file(root: Path, relative: str, zone: ZoneInfo) -> Article | ArticleError:
    """Read and parse one article file; every problem comes back as an ArticleError.

    Only a regular file is read: the file is opened without blocking and checked after opening,
    so a named pipe, a socket or a device put (or swapped) in its place is reported, never
    waited on.
    """
    path = os.path.join(root, relative)
    parser = PARSERS[os.path.splitext(relative)[1].lower()]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return ArticleError(
            relative, "vanished while it was being read; it is read again next scan"
        )
    except OSError as exc:
        return ArticleError(relative, f"cannot be read: {exc.strerror}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ArticleError(relative, _NOT_REGULAR)
        with os.fdopen(fd, "rb", closefd=False) as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return ArticleError(relative, f"cannot be read: {exc.strerror}")
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        return ArticleError(
            relative,
            f"is larger than {MAX_FILE_BYTES:,} bytes; an article should be far smaller "
            "(move attachments out of the articles directory)",
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return ArticleError(
            relative,
            f"is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8 in your editor",
        )
    try:
        article = parser(text, relative, zone)
    except ArticleError as exc:
        return exc
    fingerprint = hashlib.blake2b(raw, digest_size=12).hexdigest()
    return dataclasses.replace(article, fingerprint=fingerprint)


def _parse_batch(
    root: Path, zone: ZoneInfo, paths: list[str]
) -> list[tuple[str, Article | ArticleError]]:
    return [(relative, parse_file(root, relative, zone)) for relative in paths]


def parse_files(
    root: Path, zone: ZoneInfo, paths: list[str]
) -> Iterator[tuple[str, Article | ArticleError]]:
    """Parse ``paths``; a cold scan of thousands of files uses every core."""
    if len(paths) < workers.PARALLEL_MIN or workers.cores() < 2:
        for relative in paths:
            yield relative, parse_file(root, relative, zone)
        return
    for batch in workers.map_batches(functools.partial(_parse_batch, root, zone), paths):
        yield from batch


def _id_from_path(article: Article) -> bool:
    """Whether the article's id is the default one made from its path (no ``id:`` given)."""
    return article.id == article.source.rsplit(".", 1)[0]


def _utf8(name: str) -> bool:
    """False for a name the file system gave with bytes that are not UTF-8 (surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Walk:
    """One walk of the tree, comparing each file's stamp with the last scan's as it goes.

    This loop is the whole cost of an unchanged rescan, so it stays flat: no per-entry helper
    calls beyond the stat the baseline makes too.
    """

    def __init__(self, real_root: str, old: dict[str, tuple[_Stamp, Article | ArticleError]]):
        self.real_root = real_root
        self.old = old
        self.seen: list[str] | None = None  # every article file, when asked (see scan)
        self.changed: list[tuple[str, _Stamp]] = []  # added or modified: to parse
        self.matched = 0  # files of the last scan seen again
        self.problems: list[ArticleError] = []
        self.visited = {real_root}

    def run(self, root: Path) -> None:
        links: list[tuple[str, str]] = []
        self._directory(self.real_root, "", links, root)
        # Symlinked directories are walked after every real one, in name order, so which of
        # two links to one directory wins does not depend on the file system's order.
        while links:
            links.sort()
            relative, target = links.pop(0)
            if target not in self.visited:
                self.visited.add(target)
                self._directory(target, relative + "/", links, root)

    def _bad_name(self, entry: os.DirEntry[str], relative: str) -> None:
        """A name that is not UTF-8: reported if it would be an article or a folder of them."""
        if entry.is_dir(follow_symlinks=False):
            self.problems.append(ArticleError(relative + "/", _NOT_UTF8_NAME))
        elif relative.lower().endswith(_SUFFIXES):
            self.problems.append(ArticleError(relative, _NOT_UTF8_NAME))

    def _unusual(
        self, entry: os.DirEntry[str], relative: str, links: list[tuple[str, str]]
    ) -> bool:
        """An entry the fast path does not take: True if it is an article file to stat."""
        name = entry.name
        if name[0] in ".#" or name[-1] == "~":  # hidden, lock, backup and autosave files
            return False
        dot = name.rfind(".")
        extension = name[dot:].lower() if dot > 0 else ""
        if not entry.is_symlink():
            return extension in PARSERS
        if extension in _IGNORED_EXTENSIONS:
            return False
        target = os.path.realpath(entry.path)
        if target != self.real_root and not target.startswith(self.real_root + os.sep):
            if extension in PARSERS or os.path.isdir(target):
                self.problems.append(
                    ArticleError(
                        relative,
                        "symlink leads outside the source directory; copy the file in instead",
                    )
                )
            return False
        if os.path.isdir(target):
            links.append((relative, target))
            return False
        return extension in PARSERS

    def _directory(
        self, directory: str, prefix: str, links: list[tuple[str, str]], root: Path
    ) -> None:
        try:
            iterator = os.scandir(directory)
        except OSError as exc:
            if not prefix:
                raise ConfigError(
                    root,
                    f"source directory cannot be read ({exc.strerror}); "
                    "check its permissions or set [source] dir in the config",
                ) from None
            self.problems.append(ArticleError(prefix, f"directory cannot be read: {exc.strerror}"))
            return
        old_get, changed = self.old.get, self.changed
        seen = self.seen.append if self.seen is not None else None
        matched = 0
        subdirs: list[tuple[str, str]] = []
        with iterator:
            for entry in iterator:
                name = entry.name
                if not name.isascii() and not _utf8(name):
                    self._bad_name(entry, prefix + name)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if not (name[0] == "." or name[-1] == "~" or name[0] == name[-1] == "#"):
                        subdirs.append((entry.path, prefix + name + "/"))
                    continue
                # the rare cases (upper-case extensions, links, other files) take the slow path
                if (
                    not name.endswith(_SUFFIXES) or name[0] == "." or entry.is_symlink()
                ) and not self._unusual(entry, prefix + name, links):
                    continue
                relative = prefix + name
                try:
                    st = entry.stat()
                except OSError as exc:
                    self.problems.append(ArticleError(relative, f"cannot be read: {exc.strerror}"))
                    continue
                if st.st_mode & 0o170000 != 0o100000:  # not a regular file: never opened
                    self.problems.append(ArticleError(relative, _NOT_REGULAR))
                    continue
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
                if seen is not None:
                    seen(relative)
                known = old_get(relative)
                if known is not None:
                    matched += 1
                    if known[0] == stamp:
                        continue
                changed.append((relative, stamp))
        self.matched += matched
        for path, relative in subdirs:
            self._directory(path, relative, links, root)


class Source:
    """A directory of articles, remembered between scans.

    ``identities`` (fingerprint -> id) and ``places`` (path -> id), from the ledger, let a file
    moved or renamed with its content unchanged keep the identity it had, through later edits
    and restarts: its entry ids in the feeds stay the same and it is not news again. Only an id
    made from the path is taken over (an explicit ``id:`` is always kept), and only from an
    article no file claims any more.

    ``index`` (a cache file, see content/index.py) keeps each file's stamp and parse across
    restarts: the first scan after a restart stats every file as a rescan does and parses only
    those whose stamp differs from the index's. Articles come back from it as StoredArticles
    (content/stored.py), whose bodies are decoded only when something renders them. A missing,
    damaged or foreign index (another bantin, another source directory or zone) means a cold
    first scan.
    """

    def __init__(
        self,
        root: Path,
        zone: ZoneInfo,
        identities: Mapping[str, str] | None = None,
        places: Mapping[str, str] | None = None,
        index: Path | None = None,
    ) -> None:
        self.root = root
        self.zone = zone
        self.index = index
        self._throttle = index_throttle()
        self.parsed = 0  # files parsed by the last scan (for tests and benchmarks)
        self._identities: dict[str, str] = dict(identities or {})  # fingerprint -> id
        self._places: dict[str, str] = dict(places or {})  # path -> the id it was recorded as
        # path -> (the id it took over from a moved file, its own parse, the parse with that id)
        self._adopted: dict[str, tuple[str, Article, Article]] = {}
        self._files: dict[str, tuple[_Stamp, Article | ArticleError]] = {}
        self._last: Scan | None = None
        self._walk_problems: list[str] = []
        self._winners: dict[str, Article] = {}  # id -> the article that holds it

    def scan(self) -> Scan:
        """Walk the tree; re-parse what changed; return the resolved set of articles.

        When nothing changed, the previous Scan object itself is returned.
        """
        try:
            real_root = os.path.realpath(self.root, strict=True)
            if not os.path.isdir(real_root):
                raise NotADirectoryError(real_root)
        except OSError as exc:
            raise ConfigError(
                self.root,
                f"source directory cannot be read ({exc.strerror or 'not a directory'}); "
                "create it or set [source] dir in the config",
            ) from None
        key = (index.code_version(), real_root, str(self.zone))
        if self._last is None and self.index is not None and not self._files:
            saved = stored.load(self.index, key)
            if saved is not None:
                self._files = dict(saved)
        walk = _Walk(real_root, self._files)
        walk.run(self.root)
        self.parsed = len(walk.changed)
        files = self._files  # updated in place: an unchanged tree of 100,000 costs no copy
        removals = walk.matched < len(files)  # some file of the last scan was not seen
        before = {relative: files.get(relative) for relative, _ in walk.changed}
        stamps = dict(walk.changed)
        for relative, parsed in parse_files(self.root, self.zone, list(stamps)):
            files[relative] = (stamps[relative], parsed)
        changed = list(stamps)
        if removals:
            # Which files went is known only by a list of those present: a second walk that
            # keeps one, paid only when files were removed (a rescan keeps none)
            again = _Walk(real_root, files)
            again.seen = []
            again.run(self.root)
            present = set(again.seen)
            removed = [path for path in files if path not in present]
            for path in removed:
                before[path] = files.pop(path)
            changed += removed
        if self.index is not None and self._throttle.due(bool(changed)):
            # a file that could not be parsed is tried again after a restart (a permission
            # fixed, a file that was being written): only parses are kept
            kept = {p: (f[0], f[1]) for p, f in files.items() if isinstance(f[1], Article)}
            stored.save(self.index, key, kept)
        problem_keys = [str(p) for p in walk.problems]
        same_problems = problem_keys == self._walk_problems
        if self._last is not None and not changed and same_problems:
            if self._last.changed:
                self._last = dataclasses.replace(self._last, changed=())
            return self._last
        self._walk_problems = problem_keys
        edits = self._edits(before, changed) if same_problems else None
        if edits is not None and self._last is not None:
            for _, new in edits:
                self._winners[new.id] = new
            self._last = self._last.patched(edits, tuple(sorted(changed)))
        else:
            self._last = self._resolve(walk.problems, tuple(sorted(changed)))
        return self._last

    def _edits(
        self,
        before: dict[str, tuple[_Stamp, Article | ArticleError] | None],
        changed: list[str],
    ) -> list[tuple[Article, Article]] | None:
        """(old, new) pairs if every change is an edit that keeps its article's id and slug.

        Those leave the duplicate rules' outcome as it was, so the resolved set can be patched
        instead of recomputed (an edit in a tree of 100,000 articles). None otherwise.
        """
        edits = []
        for path in changed:
            was, now = before.get(path), self._files.get(path)
            if was is None or now is None:
                return None
            old, new = was[1], now[1]
            if not isinstance(old, Article) or not isinstance(new, Article):
                return None
            if old.id != new.id or old.slug != new.slug or old.draft != new.draft:
                return None
            if self._winners.get(old.id) is not old:
                return None
            edits.append((old, new))
        return edits

    def _identified(self) -> dict[str, Article]:
        """Each file's article, under the id it took over if it is a moved file.

        A file whose id comes from its path takes over the id of an earlier article with the
        same bytes (its fingerprint) that no file claims any more, and keeps it through later
        edits; it gives it back if a file claims that id again.
        """
        natural = {p.id for _, p in self._files.values() if isinstance(p, Article)}
        adopted: dict[str, tuple[str, Article, Article]] = {}
        result: dict[str, Article] = {}
        for path in sorted(self._files):
            parsed = self._files[path][1]
            if not isinstance(parsed, Article):
                continue
            result[path] = parsed
            if not _id_from_path(parsed):
                continue
            kept = self._adopted.get(path)
            earlier = (
                kept[0]
                if kept
                else self._places.get(path) or self._identities.get(parsed.fingerprint)
            )
            if earlier is None or earlier in natural or earlier == parsed.id:
                continue
            if kept is not None and kept[1] is parsed:
                adopted[path] = kept  # the same object as before: pages are not redone
            else:
                adopted[path] = (earlier, parsed, dataclasses.replace(parsed, id=earlier))
            natural.add(earlier)
            result[path] = adopted[path][2]
        self._adopted = adopted
        return result

    def _resolve(self, problems: list[ArticleError], changed: tuple[str, ...]) -> Scan:
        """Apply duplicate rules to the cached parses: the first path (sorted) wins an id/slug."""
        by_id: dict[str, Article] = {}
        by_slug: dict[str, Article] = {}
        identified = self._identified()
        for path in sorted(self._files):
            parsed = identified.get(path) or self._files[path][1]
            if isinstance(parsed, ArticleError):
                problems.append(parsed)
                continue
            first = by_id.get(parsed.id) or by_slug.get(parsed.slug)
            if first is not None:
                what = f"id {parsed.id!r}" if first.id == parsed.id else f"slug {parsed.slug!r}"
                problems.append(
                    ArticleError(
                        path,
                        f"{what} is already used by {printable(first.source)}; "
                        "give one of them a different 'id:' or 'slug:'",
                    )
                )
                continue
            by_id[parsed.id] = parsed
            by_slug[parsed.slug] = parsed
        articles = sorted(by_id.values(), key=lambda a: (a.date, a.id), reverse=True)
        self._winners = by_id
        self._identities.update((a.fingerprint, a.id) for a in articles if a.fingerprint)
        problems.sort(key=lambda p: p.path)
        return Scan(tuple(articles), tuple(problems), changed)
