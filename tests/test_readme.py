"""The README's everyday tasks, typed as written, on a copy of the repository's sample project:
each command it shows must work (a promise to the newcomer who follows it word by word)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def everyday_commands() -> list[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Everyday tasks\n", 1)[1].split("\n## ", 1)[0]
    return [
        " ".join(c.split())
        for c in re.findall(r"`(\.venv/bin/bantin [^`]+)`", section.replace("\n  ", " "))
        if "EMAIL" not in c  # a placeholder, for the reader to fill in
    ]


def test_every_everyday_command_of_the_readme_works_as_written(tmp_path: Path) -> None:
    commands = everyday_commands()
    assert len(commands) >= 5, commands
    assert any(c.startswith(".venv/bin/bantin preview ") for c in commands)
    for name in ("config", "content", "templates"):
        shutil.copytree(REPO / name, tmp_path / name)
    (tmp_path / "config" / "bantin.toml").write_text(
        (REPO / "config" / "bantin.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
    for command in commands:
        words = shlex.split(command)
        words = [str(tmp_path / "d.html") if w == "/tmp/d.html" else w for w in words]
        words = [w for w in words if w != "--open"]  # no browser here
        done = subprocess.run(
            [sys.executable, "-m", "service", *words[1:]],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
    assert "Kính gửi Nguyễn Thị Hoa," in (tmp_path / "d.html").read_text(encoding="utf-8")
