"""Settings: one clear ConfigError per mistake, env overrides, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError
from service.settings import DEFAULT_CONFIG, config_path, describe, load_settings

MINIMAL = '[site]\ntitle = "Cổng"\nbase_url = "https://tinh.example.gov.vn/"\n'
SECRET = "mật-khẩu-bí-mật-42"


def config(project: Path, text: str) -> Path:
    path = project / "config" / "bantin.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error(path: Path, source: str | None = None) -> ConfigError:
    """The one-line error of loading ``path``; it names ``source`` (default: the file) first."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(source or str(path))
    assert "pydantic" not in message.lower()
    assert "errors.pydantic.dev" not in message
    return caught.value


def test_minimal_config_gets_every_default(project: Path) -> None:
    settings = load_settings(config(project, MINIMAL))
    assert settings.site.title == "Cổng"
    assert settings.site.base_url == "https://tinh.example.gov.vn"  # trailing slash dropped
    assert settings.site.language == "vi"
    assert settings.site.timezone == "Asia/Ho_Chi_Minh"
    assert str(settings.site.zone) == "Asia/Ho_Chi_Minh"
    assert settings.source.dir == Path("content")
    assert settings.feeds.output_dir == Path("public")
    assert settings.feeds.max_items == 50
    assert settings.state.url == "sqlite:///var/bantin.db"
    assert settings.schedule.scan_interval == 60
    assert settings.schedule.daily == "0 7 * * *"
    assert settings.schedule.weekly == "0 7 * * mon"
    assert settings.mail.subscribers_file == Path("config/subscribers.toml")
    assert settings.mail.transport == "file"
    assert settings.mail.outbox_dir == Path("var/outbox")
    assert settings.smtp.password is None
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.subscribe.enabled is False  # a new installation has no public form
    assert settings.subscribe.confirm_hours == 48
    assert settings.subscribe.categories is None


def test_repository_config_loads(project: Path) -> None:
    repo = Path(__file__).resolve().parents[2] / "config" / "bantin.toml"
    settings = load_settings(repo)
    assert settings.site.base_url.startswith("http")


def test_unknown_key_names_the_key_file_and_line(project: Path) -> None:
    path = config(project, MINIMAL + "\n[feeds]\nmax_items = 10\nmax_itemz = 5\n")
    caught = error(path)
    assert caught.line == 7
    assert caught.file == str(path)
    assert "feeds.max_itemz" in caught.reason
    assert str(caught).startswith(f"{path}:7: ")


def test_unknown_section_names_the_section_line(project: Path) -> None:
    caught = error(config(project, MINIMAL + "[sites]\ntitle = 'x'\n"))
    assert "'sites'" in caught.reason
    assert caught.line == 4


def test_unknown_key_in_site(project: Path) -> None:
    caught = error(config(project, MINIMAL + "titel = 'x'\n"))
    assert "site.titel" in caught.reason
    assert caught.line == 4


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[site]\nbase_url = "https://x.vn"\n', "site.title is required"),
        ('[site]\ntitle = ""\nbase_url = "https://x.vn"\n', "site.title"),
        ('[site]\ntitle = "x"\n', "site.base_url is required"),
        ("", "site is required"),
        ('[site]\ntitle = "x"\nbase_url = "tinh.example.gov.vn"\n', "base_url"),
        ('[site]\ntitle = "x"\nbase_url = "ftp://x.vn"\n', "base_url"),
        ('[site]\ntitle = "x"\nbase_url = "https://"\n', "base_url"),
        ('[site]\ntitle = "x"\nbase_url = "https://x.vn/?a=1"\n', "base_url"),
        (MINIMAL + 'timezone = "Asia/Hanoi_City"\n', "timezone"),
        (MINIMAL + 'timezone = "../../etc/passwd"\n', "timezone"),
        (MINIMAL + "[schedule]\ndaily = '0 25 * * *'\n", "schedule.daily"),
        (MINIMAL + "[schedule]\nweekly = '0 7 * *'\n", "schedule.weekly"),
        (MINIMAL + "[schedule]\nweekly = '0 7 * * funday'\n", "day-of-week"),
        (MINIMAL + "[feeds]\nmax_items = 0\n", "feeds.max_items"),
        (MINIMAL + "[feeds]\nmax_items = 'many'\n", "feeds.max_items"),
        (MINIMAL + "[smtp]\nsecurity = 'ssl'\n", "smtp.security"),
        (MINIMAL + "[mail]\ntransport = 'pigeon'\n", "mail.transport"),
        (MINIMAL + "[server]\nsecret_key = ''\n", "at least 16 characters"),
        (MINIMAL + "[server]\nsecret_key = 'short'\n", "at least 16 characters"),
        (MINIMAL + 'language = "klingon-xx"\n', "not a language"),
        (MINIMAL + "[schedule]\ndaily = '0 7 31 2 *'\n", "never fires"),
        (MINIMAL + "[schedule]\nweekly = '0 7 30,31 2 *'\n", "never fires"),
        (MINIMAL + "[smtp]\ntimeout = inf\n", "smtp.timeout"),
        (MINIMAL + "[smtp]\ntimeout = nan\n", "smtp.timeout"),
        (MINIMAL + "[smtp]\ntimeout = 86400\n", "smtp.timeout"),
        ('[site]\ntitle = "a\\nb"\nbase_url = "https://x.vn"\n', "site.title"),
        ("[site\ntitle = 1", "not valid TOML"),
        (MINIMAL + "[server]\ntrusted_proxies = ['proxy.lan']\n", "not an IP address"),
        (MINIMAL + "[subscribe]\ncategories = []\n", "subscribe.categories"),
        (MINIMAL + "[subscribe]\nconfirm_hours = 0\n", "subscribe.confirm_hours"),
        (MINIMAL + "[subscribe]\nip_limit = -1\n", "subscribe.ip_limit"),
        (MINIMAL + "[subscribe]\nenable = true\n", "enable"),
    ],
)
def test_each_mistake_gives_one_clear_message(project: Path, text: str, needle: str) -> None:
    assert needle in error(config(project, text)).reason


def test_bad_value_names_its_line(project: Path) -> None:
    caught = error(config(project, MINIMAL + 'language = "vi"\ntimezone = "Mars/Olympus"\n'))
    assert caught.line == 5
    assert "Asia/Ho_Chi_Minh" in caught.reason  # says what a good value looks like


def test_bad_toml_names_its_line(project: Path) -> None:
    assert error(config(project, MINIMAL + "oops = \n")).line == 4


def test_missing_and_unreadable_files(project: Path) -> None:
    assert "not found" in error(project / "config" / "khong-co.toml").reason
    bad = project / "config" / "latin1.toml"
    bad.write_bytes(b'[site]\ntitle = "caf\xe9"\n')
    assert "cannot read" in error(bad).reason


def test_env_overrides_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config(project, MINIMAL + "[smtp]\nhost = 'mail.local'\npassword = 'from-file'\n")
    monkeypatch.setenv("BANTIN_SMTP__PASSWORD", SECRET)
    monkeypatch.setenv("BANTIN_SMTP__PORT", "2525")
    monkeypatch.setenv("BANTIN_SITE__TITLE", "Tên từ môi trường")
    settings = load_settings(path)
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == SECRET
    assert settings.smtp.port == 2525
    assert settings.smtp.host == "mail.local"  # the rest of the section still from the file
    assert settings.site.title == "Tên từ môi trường"
    assert settings.site.base_url == "https://tinh.example.gov.vn"
    for shown in (str(settings), repr(settings), str(describe(settings)), str(settings.smtp)):
        assert SECRET not in shown
    assert describe(settings)["smtp"]["password"] == "********"
    assert describe(settings)["server"]["secret_key"] is None


def test_secret_never_appears_in_errors(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config(project, MINIMAL + f"[smtp]\npasword = '{SECRET}'\n")
    caught = error(path)
    assert "smtp.pasword" in caught.reason
    assert SECRET not in str(caught)
    assert SECRET not in repr(caught.args)
    config(project, MINIMAL)
    monkeypatch.setenv("BANTIN_SMTP__PASWORD", SECRET)  # a mistyped env name
    caught = error(path, "BANTIN_SMTP__PASWORD")
    assert SECRET not in str(caught)
    monkeypatch.delenv("BANTIN_SMTP__PASWORD")
    monkeypatch.setenv("BANTIN_SMTP__PORT", SECRET)  # a secret pasted into the wrong key
    caught = error(path, "BANTIN_SMTP__PORT")
    assert "smtp.port" in caught.reason
    assert SECRET not in str(caught)
    assert caught.__cause__ is None or SECRET not in str(caught.__cause__)


def test_bantin_config_picks_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert config_path(None) == DEFAULT_CONFIG
    other = project / "khac.toml"
    other.write_text(MINIMAL.replace("Cổng", "Khác"), encoding="utf-8")
    monkeypatch.setenv("BANTIN_CONFIG", str(other))
    assert config_path(None) == other
    assert config_path("explicit.toml") == Path("explicit.toml")  # --config wins
    assert load_settings(config_path(None)).site.title == "Khác"


def test_bom_in_config_is_fine(project: Path) -> None:
    path = project / "config" / "bantin.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_settings(path).site.title == "Cổng"


@pytest.mark.parametrize(
    ("variable", "suggestion"),
    [
        ("BANTIN_FEEDS__MAX_ITMES", "BANTIN_FEEDS__MAX_ITEMS"),
        ("BANTIN_SMTP_PASSWORD", "BANTIN_SMTP__PASSWORD"),  # one underscore where two belong
        ("BANTIN_SERVR__PORT", "BANTIN_SERVER__PORT"),
        ("BANTIN_WHATEVER", None),
    ],
)
def test_an_unknown_bantin_variable_is_named_with_the_closest_key(
    project: Path, monkeypatch: pytest.MonkeyPatch, variable: str, suggestion: str | None
) -> None:
    path = config(project, MINIMAL)
    monkeypatch.setenv(variable, "42")
    caught = error(path, variable)
    if suggestion:
        assert f"did you mean {suggestion}?" in caught.reason
    else:
        assert "BANTIN_<SECTION>__<KEY>" in caught.reason


def test_known_variables_and_the_alias_of_from_are_accepted(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANTIN_MAIL__FROM", "Tỉnh <tin@tinh.example.gov.vn>")
    monkeypatch.setenv("BANTIN_CONFIG", str(config(project, MINIMAL)))
    assert load_settings(config_path(None)).mail.from_ == "Tỉnh <tin@tinh.example.gov.vn>"


def test_a_bad_override_is_blamed_on_its_variable_not_on_a_line_of_the_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = config(project, MINIMAL + "[smtp]\nport = 587\n")
    monkeypatch.setenv("BANTIN_SMTP__PORT", "notaport")
    caught = error(path, "BANTIN_SMTP__PORT")
    assert caught.line is None
    assert "valid integer" in caught.reason and str(path) in caught.reason
