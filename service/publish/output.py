"""The output directory: atomic writes, untouched when the bytes are the same, stale files removed.

Static servers and our own HTTP layer derive ETags from file contents or mtimes, so a file is
rewritten only when its bytes change. bantin removes only files it wrote itself (listed in a
manifest), never an operator's own files in the same directory.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

MANIFEST = ".bantin-manifest"


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
        which no build may overwrite or remove."""
        self._previous.discard(relative)

    def write(self, relative: str, data: bytes) -> bool:
        """Write ``data`` at ``relative`` unless the file already holds it; True if written."""
        path = os.path.join(self.root, relative)
        try:
            if os.stat(path).st_size == len(data):
                with open(path, "rb") as file:
                    if file.read() == data:
                        return False
        except FileNotFoundError:
            pass
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        # A dot name in the same directory: never served (dotfiles are refused) and renamed
        # over the target atomically. The pid keeps two writers from sharing one.
        tmp = os.path.join(parent, f".{os.path.basename(path)}.{os.getpid()}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return True

    def finish(self, produced: set[str]) -> list[str]:
        """Remove files of an earlier build that this one did not produce; save the manifest."""
        removed = []
        for relative in sorted(self._previous - produced):
            path = self.root / relative
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
