"""The deliverability settings: [bounces], mail.bounce_address and max_items, smtp.max_rate.

Each is read from a real file (and the environment), refused with the file, line and key when
wrong, and its secret never shown.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError
from service.settings import Settings, describe, load_settings

HEAD = '[site]\ntitle = "T"\nbase_url = "https://tinh.example.gov.vn"\n'


def load(project: Path, body: str) -> Settings:
    config = project / "config" / "bantin.toml"
    config.write_text(HEAD + body, encoding="utf-8")
    return load_settings(config)


def test_the_defaults_leave_everything_off(project: Path) -> None:
    settings = load(project, "")
    assert settings.mail.bounce_address is None
    assert settings.mail.max_items == 20
    assert settings.smtp.max_rate is None
    bounces = settings.bounces
    assert bounces.maildir is None and bounces.imap_host is None
    assert (bounces.imap_tls, bounces.port, bounces.imap_folder) == ("tls", 993, "INBOX")
    assert (bounces.soft_bounce_limit, bounces.soft_bounce_days) == (5, 14)


def test_an_imap_mailbox_is_read_whole_and_its_password_never_shown(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANTIN_BOUNCES__IMAP_PASSWORD", "mat-khau-hop-thu")
    settings = load(
        project,
        '[bounces]\nimap_host = "mail.example.gov.vn"\nimap_tls = "starttls"\n'
        'imap_username = "bounces"\nimap_folder = "Bounces"\nimap_done_folder = "Done"\n'
        'maildir = "/var/mail/bounces"\n',
    )
    bounces = settings.bounces
    assert bounces.port == 143 and bounces.imap_username == "bounces"
    assert bounces.imap_password is not None
    assert bounces.imap_password.get_secret_value() == "mat-khau-hop-thu"
    assert bounces.maildir == Path("/var/mail/bounces")
    shown = describe(settings)
    assert shown["bounces"]["imap_password"] == "********"
    assert "mat-khau-hop-thu" not in repr(settings) + str(shown)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('[bounces]\nimap_host = "m.example.org"\n', r"bantin.toml:4: bounces: .*imap_username"),
        (
            '[bounces]\nimap_host = "m"\nimap_username = "u"\nimap_password = "p"\n'
            'imap_done_folder = "INBOX"\n',
            r"bounces: .*must differ from imap_folder",
        ),
        ('[bounces]\nimap_tls = "ssl"\n', r"bantin.toml:5: bounces.imap_tls"),
        ("[bounces]\nimap_port = 0\n", r"bantin.toml:5: bounces.imap_port"),
        ('[bounces]\nimap_folder = ""\n', r"bounces.imap_folder: must name a folder"),
        ('[bounces]\nimap_folder = "a\\"b"\n', r"bounces.imap_folder: must not contain"),
        ('[bounces]\nimap_host = "a\\nb"\n', r"bounces.imap_host: must not contain line"),
        ("[bounces]\nsoft_bounce_limit = 0\n", r"bounces.soft_bounce_limit"),
        ('[bounces]\nimap_pasword = "x"\n', r"unknown key 'bounces.imap_pasword'"),
        ("[smtp]\nmax_rate = 0\n", r"bantin.toml:5: smtp.max_rate"),
        ('[smtp]\nmax_rate = "fast"\n', r"smtp.max_rate"),
        ("[mail]\nmax_items = 0\n", r"bantin.toml:5: mail.max_items"),
    ],
)
def test_bad_values_are_refused_with_their_place(project: Path, body: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load(project, body)


def test_a_rate_and_a_cap_are_taken_as_written(project: Path) -> None:
    settings = load(project, "[smtp]\nmax_rate = 14.5\n[mail]\nmax_items = 50\n")
    assert settings.smtp.max_rate == 14.5 and settings.mail.max_items == 50


def test_a_misspelt_bounces_variable_is_named(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANTIN_BOUNCES__IMAP_PASWORD", "x")
    with pytest.raises(ConfigError, match="did you mean BANTIN_BOUNCES__IMAP_PASSWORD"):
        load(project, "")
