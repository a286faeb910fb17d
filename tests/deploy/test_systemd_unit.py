"""deploy/bantin.service: it runs `bantin run` from the project's venv, and its read-only file
system leaves writable every path bantin writes with the sample configuration."""

from __future__ import annotations

import configparser
from pathlib import Path

from service.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "bantin.service"


def service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser["Service"]


def test_the_unit_runs_bantin_from_the_projects_venv_as_its_own_user() -> None:
    unit = service_section()
    home = Path(unit["WorkingDirectory"])
    assert unit["User"] == "bantin"
    assert unit["ExecStart"].split() == [str(home / ".venv/bin/bantin"), "--log-json", "run"]
    assert unit["Restart"] == "on-failure"
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"  # bantin reloads its config on HUP
    assert int(unit["LimitNOFILE"]) >= 65536
    assert (unit["NoNewPrivileges"], unit["ProtectSystem"], unit["PrivateTmp"]) == (
        "yes",
        "strict",
        "yes",
    )


def test_every_path_bantin_writes_is_writable_under_the_hardening() -> None:
    unit = service_section()
    home = Path(unit["WorkingDirectory"])
    writable = [Path(p) for p in unit["ReadWritePaths"].split()]
    settings = load_settings(REPO / "config" / "bantin.toml")
    database = Path(settings.state.url.removeprefix("sqlite:///"))
    written = [
        settings.feeds.output_dir,
        settings.state.cache_dir,
        settings.mail.outbox_dir,
        database,
        database.with_name(database.name + ".lock"),
        database.with_name("subscribers.last-good.toml"),
    ]
    for path in written:
        assert not path.is_absolute(), path  # the sample's paths are the project's
        assert any((home / path).is_relative_to(w) for w in writable), path


def test_the_readme_installs_the_shipped_files() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    deployment = readme.split("\n## Deployment\n", 1)[1].split("\n## ", 1)[0]
    assert "deploy/bantin.service /etc/systemd/system/bantin.service" in deployment
    assert "deploy/nginx.conf /etc/nginx/sites-available/bantin" in deployment
    assert "[Service]" not in deployment  # the unit lives in one place: deploy/
