"""The articles directory: scanning it into Articles, cheaply when little has changed.

A rescan stats every file and re-parses only those whose (mtime, size, inode) changed, so an
unchanged tree of 100,000 articles costs about as much as walking it. Bad files are reported as
ArticleErrors, never raised; duplicates are resolved deterministically (first path wins).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from service.errors import ArticleError, ConfigError
from service.model import Article
from service.parse import parse_markdown, parse_portal

PARSERS = {".md": parse_markdown, ".markdown": parse_markdown, ".txt": parse_portal}
# An announcement is a few kilobytes; a file far beyond this is a misplaced dump or log, and
# reading it whole on every change would stall the scan and the feeds that carry it.
MAX_FILE_BYTES = 2_000_000
_Stamp = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Scan:
    """The outcome of one scan: every valid article (drafts and future ones too), newest first."""

    articles: tuple[Article, ...]
    problems: tuple[ArticleError, ...]
    changed: tuple[str, ...]  # source paths added, modified or removed since the last scan

    def published(self, now: object) -> list[Article]:
        return [a for a in self.articles if a.is_published(now)]  # type: ignore[arg-type]


def _ignored(name: str) -> bool:
    """Hidden files, editor backups and lock files: skipped without a word."""
    return (
        name.startswith(".")
        or name.endswith(("~", ".swp", ".swo", ".tmp"))
        or (name.startswith("#") and name.endswith("#"))
    )


class Source:
    """A directory of articles, remembered between scans."""

    def __init__(self, root: Path, zone: ZoneInfo) -> None:
        self.root = root
        self.zone = zone
        self._files: dict[str, tuple[_Stamp, Article | ArticleError]] = {}
        self._last: Scan | None = None

    def scan(self) -> Scan:
        """Walk the tree; re-parse what changed; return the resolved set of articles."""
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
        seen: dict[str, _Stamp] = {}
        problems: list[ArticleError] = []
        self._walk(real_root, "", real_root, seen, problems, {real_root})
        old = self._files
        changed = [path for path in old if path not in seen]
        fresh: dict[str, tuple[_Stamp, Article | ArticleError]] = {}
        for path, stamp in seen.items():
            entry = old.get(path)
            if entry is None or entry[0] != stamp:
                entry = (stamp, self._parse(path))
                changed.append(path)
            fresh[path] = entry
        self._files = fresh
        if self._last is not None and not changed and not problems:
            if self._last.changed:
                self._last = Scan(self._last.articles, self._last.problems, ())
            return self._last
        self._last = self._resolve(problems, tuple(sorted(changed)))
        return self._last

    def _walk(
        self,
        directory: str,
        prefix: str,
        real_root: str,
        seen: dict[str, _Stamp],
        problems: list[ArticleError],
        visited: set[str],
    ) -> None:
        try:
            # sorted: which of two links to one directory is walked must not depend on the
            # file system's order, or an article's id would change from machine to machine
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            if not prefix:
                raise ConfigError(
                    self.root,
                    f"source directory cannot be read ({exc.strerror}); "
                    "check its permissions or set [source] dir in the config",
                ) from None
            problems.append(ArticleError(prefix, f"directory cannot be read: {exc.strerror}"))
            return
        for entry in entries:
            name = entry.name
            if _ignored(name):
                continue
            relative = prefix + name
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if target != real_root and not target.startswith(real_root + os.sep):
                    if entry.is_dir() or os.path.splitext(name)[1].lower() in PARSERS:
                        problems.append(
                            ArticleError(
                                relative,
                                "symlink leads outside the source directory; "
                                "copy the file in instead",
                            )
                        )
                    continue
                if entry.is_dir():
                    if target not in visited:
                        visited.add(target)
                        self._walk(target, relative + "/", real_root, seen, problems, visited)
                    continue
            elif entry.is_dir(follow_symlinks=False):
                self._walk(entry.path, relative + "/", real_root, seen, problems, visited)
                continue
            if os.path.splitext(name)[1].lower() not in PARSERS:
                continue
            try:
                st = entry.stat()
            except OSError as exc:
                problems.append(ArticleError(relative, f"cannot be read: {exc.strerror}"))
                continue
            seen[relative] = (st.st_mtime_ns, st.st_size, st.st_ino)

    def _parse(self, relative: str) -> Article | ArticleError:
        path = os.path.join(self.root, relative)
        parser = PARSERS[os.path.splitext(relative)[1].lower()]
        try:
            with open(path, "rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            return ArticleError(relative, f"cannot be read: {exc.strerror}")
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
            return parser(text, relative, self.zone)
        except ArticleError as exc:
            return exc

    def _resolve(self, problems: list[ArticleError], changed: tuple[str, ...]) -> Scan:
        """Apply duplicate rules to the cached parses: the first path (sorted) wins an id/slug."""
        by_id: dict[str, Article] = {}
        by_slug: dict[str, Article] = {}
        for path in sorted(self._files):
            parsed = self._files[path][1]
            if isinstance(parsed, ArticleError):
                problems.append(parsed)
                continue
            first = by_id.get(parsed.id) or by_slug.get(parsed.slug)
            if first is not None:
                what = f"id {parsed.id!r}" if first.id == parsed.id else f"slug {parsed.slug!r}"
                problems.append(
                    ArticleError(
                        path,
                        f"{what} is already used by {first.source}; "
                        "give one of them a different 'id:' or 'slug:'",
                    )
                )
                continue
            by_id[parsed.id] = parsed
            by_slug[parsed.slug] = parsed
        articles = sorted(by_id.values(), key=lambda a: (a.date, a.id), reverse=True)
        problems.sort(key=lambda p: p.path)
        return Scan(tuple(articles), tuple(problems), changed)
