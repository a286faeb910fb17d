"""Typed configuration: config/bantin.toml plus BANTIN_* environment overrides, validated once.

Every key has a default except ``site.title`` and ``site.base_url``. Environment variables
override the file as ``BANTIN_<SECTION>__<KEY>`` (``BANTIN_SMTP__PASSWORD``). Relative paths
are relative to the working directory the command runs in.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tomllib
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.cron import CronSyntaxError, parse_cron
from service.errors import ConfigError

DEFAULT_CONFIG = Path("config/bantin.toml")
LOGO_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}
LOGO_MAX_BYTES = 64 * 1024  # it travels in every message
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or control characters")
    return value


def _no_control_optional(value: str | None) -> str | None:
    return None if value is None else _no_control(value)


class SiteSettings(_Section):
    """[site]: title, base URL, language, time zone, description, author, templates directory."""

    title: str = Field(min_length=1)
    base_url: str
    language: str = "vi"
    timezone: str = "Asia/Ho_Chi_Minh"
    description: str = ""
    author: str = ""
    templates_dir: Path = Path("templates")
    # the office's identity on pages and mail, without editing templates
    logo: Path | None = None  # PNG, JPEG or GIF, at most LOGO_MAX_BYTES
    accent_color: str = "#0b57a4"
    contact_address: str = ""
    contact_phone: str = ""
    contact_email: str = ""
    footer: str = ""

    _plain = field_validator(
        "title",
        "description",
        "author",
        "language",
        "contact_address",
        "contact_phone",
        "contact_email",
    )(_no_control)

    @field_validator("accent_color")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not re.fullmatch(r"#(?:[0-9a-fA-F]{3}){1,2}", value.strip()):
            raise ValueError("must be a colour written like #0b57a4 (or #06c)")
        return value.strip().lower()

    @field_validator("logo")
    @classmethod
    def _image(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix.lower() not in LOGO_TYPES:
            raise ValueError("must be a .png, .jpg or .gif file (mail programs do not show SVG)")
        return value

    @property
    def logo_type(self) -> str | None:
        """The logo's media type, if there is a logo."""
        return LOGO_TYPES[self.logo.suffix.lower()] if self.logo is not None else None

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        try:
            Locale.parse(value.replace("-", "_"))
        except (ValueError, UnknownLocaleError):
            raise ValueError(
                f"{value!r} is not a language bantin knows; use a code like 'vi' or 'en'"
            ) from None
        return value

    @field_validator("base_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                "must be an absolute http:// or https:// URL, like https://example.gov.vn"
            )
        if parts.query or parts.fragment:
            raise ValueError("must not have a query (?) or fragment (#)")
        return value.strip().rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("is not a known time zone name, like Asia/Ho_Chi_Minh") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The site's time zone: dates shown to people and the digests' cron times are in it."""
        return ZoneInfo(self.timezone)


class SourceSettings(_Section):
    """[source]: the articles directory."""

    dir: Path = Path("content")


class FeedsSettings(_Section):
    """[feeds]: where feeds and pages are written, the items per feed, the WebSub hub to ping."""

    output_dir: Path = Path("public")
    max_items: int = Field(default=50, ge=1, le=1000)
    websub_hub: str | None = None


class SearchSettings(_Section):
    """[search]: the memory Pagefind may take to index the archive (MiB); beyond it, indexing
    stops with an error and the previous index stays, rather than the host running out."""

    memory_limit: int = Field(default=4096, ge=256, le=1_048_576)


class StateSettings(_Section):
    """[state]: the URL of the state database (the ledger), and this host's cache folder."""

    url: str = "sqlite:///var/bantin.db"
    # what the last scan parsed and the last build rendered, so that a restart re-reads
    # nothing (content/index.py); each host keeps its own, deleting it only costs a cold start
    cache_dir: Path = Path("var/cache")

    @property
    def scan_index(self) -> Path:
        """The scan's index file (content/index.py)."""
        return self.cache_dir / "scan.index"

    @property
    def build_index(self) -> Path:
        """The build's index file (publish/build.py)."""
        return self.cache_dir / "build.index"


class ScheduleSettings(_Section):
    """[schedule]: seconds between scans, and the cron times of the daily and weekly digests."""

    scan_interval: int = Field(default=60, ge=1, le=86400)
    daily: str = "0 7 * * *"
    weekly: str = "0 7 * * mon"

    @field_validator("daily", "weekly")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            parse_cron(value)
        except CronSyntaxError as exc:
            raise ValueError(str(exc)) from None
        return value


# The From address: ASCII only (SMTP without SMTPUTF8 cannot carry more); unlike a
# subscriber's address the domain may be a single label, as an office mail host often is.
# the longest local part of mail.bounce_address: 64 octets (RFC 5321) less "+unsub-" and the
# longest VERP token (mail.verp: 36 base32 characters)
BOUNCE_LOCAL_MAX = 64 - len("+unsub-") - 36

_SENDER = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


class MailSettings(_Section):
    """[mail]: the From address, the subscribers file, SMTP or the outbox, and DKIM signing."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(default="Bản tin <bantin@localhost>", alias="from")
    subscribers_file: Path = Path("config/subscribers.toml")
    transport: Literal["file", "smtp"] = "file"
    outbox_dir: Path = Path("var/outbox")
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_key_file: Path | None = None
    # the VERP return path: bounces come back to bounce_address, signed per delivery
    bounce_address: str | None = None
    max_items: int = Field(default=20, ge=1, le=1000)  # articles shown in full per digest
    content: Literal["summary", "full"] = "summary"  # what a digest shows of each article

    _plain = field_validator("from_")(_no_control)

    @field_validator("bounce_address")
    @classmethod
    def _bounce_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _SENDER.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a plain email address; write it like "
                "'bounces@example.gov.vn' (no name, no <>)"
            )
        local = value.rsplit("@", 1)[0]
        if "+" in local:
            raise ValueError(
                f"{value!r} must not contain '+': bantin adds '+' and a signed token itself"
            )
        # RFC 5321 limits a local part to 64 octets; the token takes the rest
        if len(local) > BOUNCE_LOCAL_MAX:
            raise ValueError(
                f"the part before '@' is {len(local)} characters; at most {BOUNCE_LOCAL_MAX} "
                "leave room for the token bantin adds (64 in all); use a shorter one like "
                "'bounces'"
            )
        return value

    @field_validator("from_")
    @classmethod
    def _has_address(cls, value: str) -> str:
        if not _SENDER.fullmatch(parseaddr(value)[1]):
            raise ValueError(
                f"{value!r} has no email address; write it like 'Tên <ten@example.org>'"
            )
        return value

    @property
    def sender(self) -> tuple[str, str]:
        """(display name, address) of ``from``."""
        return parseaddr(self.from_)


class SmtpSettings(_Section):
    """[smtp]: the mail server, its security and login, and how many connections send at once."""

    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(default=30.0, gt=0, le=3600, allow_inf_nan=False)
    concurrency: int = Field(default=4, ge=1, le=64)
    # messages per second across all connections (mail.pace); None: as fast as the relay takes
    max_rate: float | None = Field(default=None, gt=0, le=10_000, allow_inf_nan=False)
    # RFC 2920 with servers that offer it (mail.pipelined); false: one command at a time
    pipelining: bool = True


class BouncesSettings(_Section):
    """[bounces]: where bounce and complaint messages are read (a maildir or an IMAP folder),
    and how many soft bounces suppress an address."""

    maildir: Path | None = None
    imap_host: str | None = None
    imap_port: int | None = Field(default=None, ge=1, le=65535)  # None: 993 for tls, else 143
    imap_tls: Literal["none", "starttls", "tls"] = "tls"
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_folder: str = "INBOX"
    imap_done_folder: str = "bantin-processed"
    soft_bounce_limit: int = Field(default=5, ge=1, le=1000)  # soft bounces within the days...
    soft_bounce_days: int = Field(default=14, ge=1, le=365)  # ...that suppress an address
    poll_interval: int = Field(default=300, ge=10, le=86400)  # seconds between reads

    _plain = field_validator("imap_host", "imap_username", "imap_folder", "imap_done_folder")(
        _no_control_optional
    )

    @field_validator("imap_folder", "imap_done_folder")
    @classmethod
    def _folder(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder, like 'INBOX' or 'bantin-processed'")
        if '"' in value or "\\" in value:
            raise ValueError("must not contain '\"' or '\\'")
        return value

    @model_validator(mode="after")
    def _imap_complete(self) -> BouncesSettings:
        if self.imap_host is None:
            return self
        if not self.imap_username or self.imap_password is None:
            raise ValueError(
                "imap_host is set, so imap_username and imap_password are needed too "
                "(put the password in BANTIN_BOUNCES__IMAP_PASSWORD)"
            )
        if self.imap_folder == self.imap_done_folder:
            raise ValueError(
                "imap_done_folder must differ from imap_folder: processed messages move there"
            )
        return self

    @property
    def port(self) -> int:
        """The IMAP port: ``imap_port``, else 993 for implicit TLS and 143 otherwise."""
        if self.imap_port is not None:
            return self.imap_port
        return 993 if self.imap_tls == "tls" else 143


class ClusterSettings(_Section):
    """Several hosts on one PostgreSQL state: who this host is, and how soon a standby leads."""

    host: str | None = None  # this host's name in the ledger (default: its hostname)
    failover_after: float = Field(default=30.0, ge=2, le=600, allow_inf_nan=False)

    _plain = field_validator("host")(_no_control_optional)

    @property
    def name(self) -> str:
        """This host's name: the configured one, else the machine's hostname."""
        return self.host or socket.gethostname()


class ServerSettings(_Section):
    """[server]: where HTTP listens, its limits, the unsubscribe links' key, the health token,
    and the reverse proxies whose X-Forwarded-For is believed."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    secret_key: SecretStr | None = None
    health_token: SecretStr | None = None  # shows /healthz's details to who sends it
    max_connections: int | None = Field(default=None, ge=1, le=100_000)  # None: from the file limit
    header_timeout: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)
    # a request from one of these carries its client's address in X-Forwarded-For (rate limits
    # and the consent record need the client's, not the proxy's)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network; write it like '127.0.0.1' "
                    "or '10.0.0.0/8'"
                ) from None
        return value

    @field_validator("secret_key", "health_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < 16:
            raise ValueError(
                "must be at least 16 characters; use a long random string "
                "(openssl rand -hex 24), or leave it unset"
            )
        return value


class SubscribeSettings(_Section):
    """[subscribe]: the self-service form (double opt-in), its categories, how long a
    confirmation link lasts, and the limits that keep it from being used to mail-bomb."""

    enabled: bool = False  # the form on the pages, and /subscribe; off for a new installation
    categories: tuple[str, ...] | None = None  # names or slugs offered; None: every category
    confirm_hours: int = Field(default=48, ge=1, le=720)  # a confirmation link's lifetime
    ip_limit: int = Field(default=10, ge=1, le=100_000)  # form submissions per client per hour
    address_limit: int = Field(default=3, ge=1, le=100)  # confirmation mails per address per day
    hourly_limit: int = Field(default=200, ge=1, le=1_000_000)  # confirmation mails per hour

    @field_validator("categories")
    @classmethod
    def _names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError(
                "is empty; list the categories the form offers, or remove the key to offer all"
            )
        for name in value:
            _no_control(name)
            if not name.strip():
                raise ValueError("must not contain an empty name")
        return value


class Settings(BaseSettings):
    """The whole configuration. Build it with ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix="BANTIN_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
    )

    site: SiteSettings
    source: SourceSettings = SourceSettings()
    feeds: FeedsSettings = FeedsSettings()
    search: SearchSettings = SearchSettings()
    state: StateSettings = StateSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    mail: MailSettings = MailSettings()
    smtp: SmtpSettings = SmtpSettings()
    server: ServerSettings = ServerSettings()
    cluster: ClusterSettings = ClusterSettings()
    bounces: BouncesSettings = BouncesSettings()
    subscribe: SubscribeSettings = SubscribeSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Where settings come from, the first one winning: arguments, then BANTIN_* environment
        variables, then the file load_settings parsed."""
        data = _CURRENT_FILE.get("data")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if data is not None:
            # the file as load_settings already parsed it: TomlConfigSettingsSource would read
            # it a second time, and choke on a UTF-8 BOM that load_settings accepted
            sources.append(InitSettingsSource(settings_cls, init_kwargs=data))
        return tuple(sources)


# settings_customise_sources is a classmethod with a fixed signature: the parsed file travels
# beside it. load_settings is the only writer and is not re-entered.
_CURRENT_FILE: dict[str, dict[str, Any] | None] = {"data": None}


def config_path(cli_value: str | None) -> Path:
    """The config file to read: --config, else $BANTIN_CONFIG, else config/bantin.toml."""
    return Path(cli_value or os.environ.get("BANTIN_CONFIG") or DEFAULT_CONFIG)


_LOGO_MAGIC = {"image/png": b"\x89PNG", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8"}


def read_logo(site: SiteSettings) -> bytes | None:
    """The bytes of ``site.logo`` (None without one); ConfigError naming the file if it cannot
    be read, is not the image its name says, or is too big to travel in every message."""
    if site.logo is None or site.logo_type is None:
        return None
    try:
        data = site.logo.read_bytes()
    except OSError as exc:
        raise ConfigError(
            site.logo, f"site.logo cannot be read ({exc.strerror}); check the path"
        ) from None
    if not data.startswith(_LOGO_MAGIC[site.logo_type]):
        raise ConfigError(site.logo, f"site.logo is not a valid {site.logo_type} file")
    if len(data) > LOGO_MAX_BYTES:
        raise ConfigError(
            site.logo,
            f"site.logo is {len(data) // 1024} KB; it is sent inside every message, so keep it "
            f"under {LOGO_MAX_BYTES // 1024} KB (a PNG about 400 px wide)",
        )
    return data


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; raise ConfigError naming the file, line and key."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(
            path, "config file not found; create it (see README, Configuration) or pass --config"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read the config file: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc))
        raise ConfigError(path, f"not valid TOML: {exc}", line) from exc
    _check_environment(path)
    _CURRENT_FILE["data"] = data
    try:
        return Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        raise _config_error(path, text, exc) from None
    finally:
        _CURRENT_FILE["data"] = None


# BANTIN_* variables that are not settings overrides
_NOT_OVERRIDES = {"BANTIN_CONFIG"}


def _known_keys() -> dict[str, list[str]]:
    """Each section of Settings and its keys, as the environment spells them (lower case)."""
    sections: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            sections[name] = [
                spelling.lower()
                for key, info in model.model_fields.items()
                for spelling in {key, info.alias or key}
            ]
    return sections


def _check_environment(path: Path) -> None:
    """An unknown BANTIN_* variable is a mistake (a misspelt key is otherwise silently ignored)."""
    sections = _known_keys()
    valid = [
        f"BANTIN_{section.upper()}__{key.upper()}"
        for section, keys in sections.items()
        for key in keys
    ]
    for variable in sorted(os.environ):
        upper = variable.upper()
        if not upper.startswith("BANTIN_") or upper in _NOT_OVERRIDES:
            continue
        section, _, key = upper.removeprefix("BANTIN_").lower().partition("__")
        if section in sections and key in sections[section]:
            continue
        close = difflib.get_close_matches(upper, valid, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else "; see README, Configuration"
        raise ConfigError(
            variable,
            f"is not a bantin setting (overrides are BANTIN_<SECTION>__<KEY>){hint}",
        )


def _toml_error_line(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


def _config_error(path: Path, text: str, exc: ValidationError) -> ConfigError:
    """Turn pydantic's error into one line: file:line: [section] key: what is wrong.

    A value that came from the environment is blamed on its variable, not on the file.
    """
    error = exc.errors(include_input=False)[0]
    loc = [str(part) for part in error["loc"]]
    variable = _variable_for(loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        reason = f"unknown key {'.'.join(loc)!r}; check its spelling (see README, Configuration)"
    elif kind == "missing":
        reason = f"{'.'.join(loc)} is required; add it"
    else:
        message = error["msg"].removeprefix("Value error, ")
        reason = f"{'.'.join(loc)}: {message}"
    extra = len(exc.errors()) - 1
    if extra:
        reason += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    if variable is not None:
        return ConfigError(variable, f"{reason} (this variable overrides {path})")
    return ConfigError(path, reason, _key_line(text, loc))


def _variable_for(loc: list[str]) -> str | None:
    """The BANTIN_* variable that set the value at ``loc``, if one did."""
    if len(loc) < 2:
        return None
    wanted = f"BANTIN_{loc[0]}__{loc[1]}".upper()
    return next((name for name in os.environ if name.upper() == wanted), None)


def _key_line(text: str, loc: list[str]) -> int | None:
    """The line in ``text`` where the key at ``loc`` (section, key) is written, if it is."""
    if not loc:
        return None
    section, key = (loc[0], loc[1]) if len(loc) > 1 else (None, loc[0])
    current: str | None = None
    section_line: int | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.fullmatch(r"\[\s*([^\]\s]+)\s*\]", line)
        if header:
            current = header.group(1)
            if current == (section or key):
                section_line = number
            continue
        match = re.match(r"([A-Za-z0-9_\-\"]+)\s*=", line)
        if match and match.group(1).strip('"') == key and current == section:
            return number
    return section_line


def describe(settings: Settings) -> dict[str, Any]:
    """The effective configuration with secrets masked, for `bantin check` and logs."""
    data: dict[str, Any] = settings.model_dump(mode="json", by_alias=True)
    for section, key in (
        ("smtp", "password"),
        ("server", "secret_key"),
        ("server", "health_token"),
        ("bounces", "imap_password"),
    ):
        if data[section][key] is not None:
            data[section][key] = "********"
    return data
