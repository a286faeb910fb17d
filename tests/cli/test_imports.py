"""What each command imports: a restart of the site (`bantin build`) and `bantin --help` load
only what they need, so that the time a restart takes to get current is not spent importing the
mail stack, the migrations or the DNS checks (issue 15). Each case runs the real command in a
fresh interpreter and reads its ``sys.modules`` at the end."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from service.ledger import migrations

# never needed by a build of an unchanged site (nor by --help)
NOT_FOR_A_BUILD = (
    "alembic",  # only when the schema is behind: see migrations.at_head
    "sqlalchemy",  # a current SQLite state is read without it: see ledger/snapshot.py
    "flufl.bounce",
    "css_inline",
    "aiosmtplib",
    "dns",
    "starlette",
    "uvicorn",
    "apscheduler",
    "prometheus_client",
    "service.mail",
    "service.serve",
    "service.runtime",
    "service.ledger.state",  # every noun of the ledger; a build reads the articles only
    "service.ledger.deliveries",
    "service.cli.mail",
    "service.cli.doctor",
)
NOT_FOR_HELP = (
    *NOT_FOR_A_BUILD,
    "pydantic",
    "jinja2",
    "service.settings",
    "service.ledger",
    "service.content",
    "service.publish",
)

RUN = """
import json, sys
from service.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def run(project: Path, *args: str) -> tuple[int, set[str], str]:
    """`bantin ARGS` in a fresh interpreter: its status, the modules it loaded, its output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")}
    done = subprocess.run(
        [sys.executable, "-c", RUN, *args],
        cwd=project,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    *output, last = done.stdout.splitlines()
    result = json.loads(last)
    return result["status"], set(result["modules"]), "\n".join(output) + done.stderr


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The ``names`` (packages or modules) of which anything is in ``modules``."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


ARTICLE = "---\ntitle: Thông báo {n}\ndate: 2024-05-0{n}\n---\nNội dung {n}.\n"


def test_help_imports_no_command(project: Path) -> None:
    status, modules, output = run(project, "--help")
    assert status == 0
    assert "build" in output and "doctor" in output  # every command is still listed
    assert "--nameserver" not in output
    assert loaded(modules, NOT_FOR_HELP) == []


def test_doctor_help_keeps_its_options(project: Path) -> None:
    status, modules, output = run(project, "doctor", "--help")
    assert status == 0
    assert "--nameserver" in output and "--relay-ip" in output and "--timeout" in output
    assert loaded(modules, ("dns", "service.cli.doctor")) == []


def test_a_build_over_a_current_state_imports_no_mail_and_no_migrations(project: Path) -> None:
    for n in (1, 2):
        path = project / "content" / f"2024/a{n}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(ARTICLE.format(n=n), encoding="utf-8")
    status, first, output = run(project, "build")
    assert status == 0, output
    assert "alembic" in first  # a new state database: made through the migrations
    status, modules, output = run(project, "build")
    assert status == 0, output
    assert "2 articles published" in output and "0 files written" in output
    assert loaded(modules, NOT_FOR_A_BUILD) == []
    # the identities came from the ledger, read straight from its file
    assert "service.ledger.snapshot" in modules
    # nor does a build that parses and renders nothing load the parsers, feeds or iCalendar
    assert (
        loaded(
            modules, ("yaml", "cmarkgfm", "nh3", "lxml", "feedgen", "icalendar", "multiprocessing")
        )
        == []
    )


def test_a_build_over_an_older_state_upgrades_it(project: Path) -> None:
    """The cheap path is taken only at the newest revision: a state of an earlier release is
    upgraded by the build that opens it, through Alembic, as before."""
    (project / "content" / "a.md").write_text(ARTICLE.format(n=1), encoding="utf-8")
    assert run(project, "build")[0] == 0
    database = project / "var" / "bantin.db"
    with sqlite3.connect(database) as connection:
        for table in ("forgotten", "throttles", "consents", "signups"):  # as 0005 left it
            connection.execute(f"DROP TABLE {table}")
        connection.execute("UPDATE alembic_version SET version_num = '0005'")
    status, modules, output = run(project, "build")
    assert status == 0, output
    assert "alembic" in modules
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (migrations.HEAD,)
        ]
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"signups", "consents", "throttles", "forgotten"} <= tables
