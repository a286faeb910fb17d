"""The Makefile's choice of interpreter, driven with PYTHON unset and a PATH holding only the
interpreters a test puts there (fakes that answer like Python, or the real one).

make and sh are called by absolute path, so /usr/bin, which holds this machine's own
python3, is never on the PATH the Makefile sees.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")

pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")

# A stand-in for an interpreter: answers the version question as that Python would, and
# makes a .venv whose pip does nothing and which records who made it.
FAKE = """#!/bin/sh
if [ "$1" = "-c" ]; then echo {version}; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    /bin/mkdir -p "$3/bin"
    printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/pip"
    printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python"
    /bin/chmod +x "$3/bin/pip" "$3/bin/python"
    echo "{name} {version}" > "$3/made-by"
    exit 0
fi
exit 3
"""


def project(tmp_path: Path) -> Path:
    """A checkout's Makefile, its helper script and pyproject.toml, in a fresh folder."""
    root = tmp_path / "bantin"
    (root / "scripts").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "scripts/find-python"):
        shutil.copy2(REPO / name, root / name)
    return root


def interpreters(tmp_path: Path, **versions: str) -> Path:
    """A folder holding only the named fake interpreters: python3="3.12", python3_13="3.13"."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for key, version in versions.items():
        name = key.replace("_", ".")
        path = folder / name
        path.write_text(FAKE.format(version=version, name=name), encoding="utf-8")
        path.chmod(0o755)
    return folder


def make(root: Path, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert MAKE is not None
    env = {"PATH": str(path), "HOME": str(root), "LANG": "C.UTF-8"}  # no PYTHON, no MAKEFLAGS
    return subprocess.run(
        [MAKE, "--no-print-directory", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_with_only_a_python3_that_is_new_enough_it_is_used_and_named(tmp_path: Path) -> None:
    root = project(tmp_path)
    done = make(root, interpreters(tmp_path, python3="3.12"), ".venv/bin/python")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "make: using python3 (Python 3.12) for .venv" in done.stderr
    assert (root / ".venv" / "made-by").read_text().split() == ["python3", "3.12"]


def test_the_newest_versioned_interpreter_wins_over_python3(tmp_path: Path) -> None:
    root = project(tmp_path)
    path = interpreters(tmp_path, python3="3.11", python3_12="3.12", python3_13="3.13")
    done = make(root, path, ".venv/bin/python")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "using python3.13 (Python 3.13)" in done.stderr
    assert (root / ".venv" / "made-by").read_text().split() == ["python3.13", "3.13"]


def test_an_older_python3_is_refused_with_what_to_do(tmp_path: Path) -> None:
    root = project(tmp_path)
    done = make(root, interpreters(tmp_path, python3="3.9"), "run")
    assert done.returncode != 0
    assert "python3 is Python 3.9; bantin needs Python 3.11 or newer" in done.stderr
    assert "make PYTHON=" in done.stderr and "apt-get install" in done.stderr
    assert not (root / ".venv").exists()


def test_no_python_at_all_is_said_plainly(tmp_path: Path) -> None:
    root = project(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    done = make(root, empty, ".venv/bin/python")
    assert done.returncode != 0
    assert "no python3.13, python3.12, python3.11 or python3 on PATH" in done.stderr


def test_python_given_by_name_is_checked_too(tmp_path: Path) -> None:
    root = project(tmp_path)
    path = interpreters(tmp_path, python3="3.12", python3_10="3.10")
    done = make(root, path, "PYTHON=python3.10", ".venv/bin/python")
    assert done.returncode != 0
    assert "python3.10 is Python 3.10" in done.stderr
    done = make(root, path, "PYTHON=python3", ".venv/bin/python")
    assert done.returncode == 0, done.stderr
    assert (root / ".venv" / "made-by").read_text().split() == ["python3", "3.12"]


def test_the_real_interpreter_as_the_only_python3(tmp_path: Path) -> None:
    """This machine's own Python, named python3 and alone on PATH: `make -n` shows the .venv
    it would make with it (nothing is installed)."""
    root = project(tmp_path)
    folder = tmp_path / "bin"
    folder.mkdir()
    real = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    (folder / "python3").symlink_to(real)
    done = make(root, folder, "-n", ".venv/bin/python")
    assert done.returncode == 0, done.stderr
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"make: using python3 (Python {version}) for .venv" in done.stderr
    assert "python3 -m venv .venv" in done.stdout
    assert not (root / ".venv").exists()


def test_make_run_says_how_to_call_the_cli(tmp_path: Path) -> None:
    root = project(tmp_path)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "pip"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    (bin_dir / "bantin").write_text('#!/bin/sh\necho "bantin called with: $*"\n')
    (bin_dir / "bantin").chmod(0o755)
    installed = root / ".venv" / ".installed"
    installed.touch()
    later = os.stat(root / "pyproject.toml").st_mtime + 10
    os.utime(installed, (later, later))
    done = make(root, tmp_path, "run")
    assert done.returncode == 0, done.stderr
    assert ".venv/bin/bantin status" in done.stdout
    assert "source .venv/bin/activate" in done.stdout
    assert "bantin called with: --config config/bantin.toml run" in done.stdout
