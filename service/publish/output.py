"""The output directory: atomic writes, untouched when the bytes are the same, stale files removed.

Static servers and our own HTTP layer derive ETags from file contents or mtimes, so a file is
rewritten only when its bytes change. bantin removes only files it wrote itself (listed in a
manifest), never an operator's own files in the same directory.

Beside each text file (pages, feeds, calendars, sitemaps) lies its gzip, ``<name>.gz``, for
nginx's ``gzip_static`` (and our own server) to send without compressing per request. The
``.gz`` follows its file: written with it, only when it is smaller, with the file's mtime
(nginx gives the ``.gz``'s own mtime as Last-Modified and in its ETag), the same bytes every
time for the same file (no name, mtime 0 in the gzip header), and removed with it.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import zlib
from pathlib import Path

from isal import igzip

__all__ = ["GZIP_SUFFIX", "MANIFEST", "Output", "gzip_bytes", "precompressed"]

MANIFEST = ".bantin-manifest"
GZIP_SUFFIX = ".gz"
# the text files a build writes; images and already-compressed files gain nothing
_COMPRESSED_KINDS = (".html", ".xml", ".json", ".ics", ".txt", ".css", ".js", ".svg")
# ISA-L's deflate at level 2. Measured on a 200 KB feed: 0.44 ms and 54.7 KB, against zlib's
# 13.2 ms and 47.0 KB at level 6 and 2.3 ms and 58.1 KB at level 1. At level 6 a one-file
# rebuild spent ~90 ms gzipping the feeds the change touched, and a cold build ~28% of its time.
_LEVEL = 2


def gzip_bytes(data: bytes) -> bytes:
    """``data`` gzipped as bantin writes and serves it: the same bytes every time on a host.

    Another CPU or library version may pick other (equally valid) bytes, so the server makes
    the ETag of a gzip from its bytes, never from the file's alone."""
    return igzip.compress(data, compresslevel=_LEVEL, mtime=0)


def precompressed(relative: str) -> bool:
    """Whether a ``.gz`` is kept beside the file at ``relative`` (when it is smaller)."""
    return relative.endswith(_COMPRESSED_KINDS)


def _inside(relative: str) -> bool:
    """A manifest line names a file under the output directory: never an absolute path or '..'.

    Path("public") / "/etc/x" is "/etc/x": one stray line would make finish() delete it.
    """
    parts = relative.split("/")
    return bool(relative) and not relative.startswith("/") and ".." not in parts and "" not in parts


class Output:
    """The output directory as builds write it: atomic writes, files rewritten only when their
    bytes change, files of earlier builds that a build did not produce removed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._previous = self._read_manifest()
        self._made: set[str] = set()  # directories known to exist

    def _read_manifest(self) -> set[str]:
        try:
            text = (self.root / MANIFEST).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            # no manifest (first build) or an unusable one: remove nothing rather than guess;
            # an output directory that cannot be written fails loudly on the first write
            return set()
        return {line for line in text.splitlines() if _inside(line)}

    def read(self, relative: str) -> bytes | None:
        """The bytes of ``relative`` as it is now, or None if there is no such file."""
        try:
            with open(os.path.join(self.root, relative), "rb") as file:
                return file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def disown(self, relative: str) -> None:
        """Stop treating ``relative`` as bantin's: the operator replaced it with their own,
        which no build may overwrite or remove. A ``.gz`` of bantin's version beside it goes
        (nginx would send it for the operator's file); one that matches their file stays."""
        self._previous.discard(relative)
        try:
            with open(os.path.join(self.root, relative + GZIP_SUFFIX), "rb") as file:
                packed = file.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return
        try:
            matches = gzip.decompress(packed) == self.read(relative)
        except (OSError, EOFError, zlib.error):
            matches = False
        if not matches:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.root, relative + GZIP_SUFFIX))

    def gzip_current(self, relative: str, mtime_ns: int) -> bool:
        """Whether the ``.gz`` beside ``relative`` (whose mtime is ``mtime_ns``) was written with
        that version of it. False for a file that has none, or no reason to have one."""
        try:
            st = os.stat(os.path.join(self.root, relative + GZIP_SUFFIX))
        except OSError:
            return False
        return st.st_mtime_ns == mtime_ns

    def write(self, relative: str, data: bytes) -> bool:
        """Write ``data`` at ``relative`` unless the file already holds it; True if written.

        Its ``.gz`` is written with it, or, for a file that is unchanged, only if missing or
        left from another version of the file (an older bantin wrote none)."""
        path = os.path.join(self.root, relative)
        try:
            st = os.stat(path)
            if st.st_size == len(data):
                with open(path, "rb") as file:
                    if file.read() == data:
                        if precompressed(relative) and not self.gzip_current(
                            relative, st.st_mtime_ns
                        ):
                            self._write_gzip(path, data, st)
                        return False
        except FileNotFoundError:
            pass
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        tmp = self._put(path, data)
        try:
            if precompressed(relative):
                # the old .gz goes first: until the new one is in, nginx sends the new file
                # (compressing it itself), never the old one's gzip
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path + GZIP_SUFFIX)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if precompressed(relative):
            self._write_gzip(path, data, os.stat(path))
        return True

    def _put(self, path: str, data: bytes, mtime_ns: int | None = None) -> str:
        """``data`` in a temporary file beside ``path`` (given that mtime); its name."""
        # A dot name in the same directory: never served (dotfiles are refused) and renamed
        # over the target atomically. The pid keeps two writers from sharing one.
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def _write_gzip(self, path: str, data: bytes, st: os.stat_result) -> None:
        """The ``.gz`` of ``data`` beside ``path`` (whose stat is ``st``), stamped with its mtime;
        or none, if gzip would not make it smaller (a tiny file grows)."""
        packed = gzip_bytes(data)
        target = path + GZIP_SUFFIX
        if len(packed) >= len(data):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            return
        tmp = self._put(target, packed, st.st_mtime_ns)
        try:
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def finish(self, produced: set[str]) -> list[str]:
        """Remove files of an earlier build that this one did not produce; save the manifest."""
        removed = []
        for relative in sorted(self._previous - produced):
            path = self.root / relative
            with contextlib.suppress(FileNotFoundError):
                path.with_name(path.name + GZIP_SUFFIX).unlink()
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(relative)
            self._prune_dirs(path.parent)
        if produced != self._previous:
            self.write(MANIFEST, "".join(f"{p}\n" for p in sorted(produced)).encode())
            self._previous = set(produced)
        return removed

    def _prune_dirs(self, directory: Path) -> None:
        root = self.root.resolve()
        while directory.resolve() != root:
            try:
                directory.rmdir()
            except OSError:
                return
            self._made.discard(str(directory))
            directory = directory.parent
