"""`bantin subscribers export | import` and `bantin forget`, run as an operator runs them, on a
real state database (SQLite) whose rows and bytes the tests read back."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service import cli
from service.ledger import State
from service.model import Subscriber

Write = Callable[[str, str], Path]
NOW = datetime.now(UTC)
CONSENT = "Tôi đồng ý để Văn phòng UBND tỉnh lưu địa chỉ email của tôi để gửi bản tin."


def article(title: str, days_ago: int = 1) -> str:
    day = (NOW - timedelta(days=days_ago)).date()
    return f"---\ntitle: {title}\ndate: {day.isoformat()}\ncategory: Thông báo\n---\nNội dung.\n"


def configure(project: Path, *file_subscribers: str) -> Path:
    config = project / "config" / "bantin.toml"
    config.write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        '[mail]\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
        "[subscribe]\nenabled = true\n",
        encoding="utf-8",
    )
    (project / "config" / "subscribers.toml").write_text(
        "".join(
            f'[[subscriber]]\nemail = "{e}"\nfrequency = "daily"\n\n' for e in file_subscribers
        ),
        encoding="utf-8",
    )
    return config


def bantin(config: Path, *args: str) -> int:
    return cli.main(["--config", str(config), *args])


def sign_up(project: Path, email: str, ip: str = "203.0.113.5") -> None:
    """A sign-up through the form's ledger calls: requested, then confirmed from another IP."""
    state = State(f"sqlite:///{project / 'var' / 'bantin.db'}")
    try:
        subscriber = Subscriber(email, "Nguyễn Thị Lan", "daily", frozenset({"thong-bao"}))
        _, since = state.signups.request(subscriber, ip, CONSENT, NOW - timedelta(hours=1))
        assert state.signups.confirm(email, int(since.timestamp()), "198.51.100.9", NOW) == (
            "confirmed"
        )
    finally:
        state.close()


def outbox(project: Path) -> list[str]:
    """The recipients of the messages in the outbox (the file transport's), in order."""
    folder = project / "var" / "outbox"
    return sorted(p.name.split("-", 4)[-1].removesuffix(".eml") for p in folder.glob("*.eml"))


def test_export_lists_everyone_with_their_source_and_consent(
    project: Path, write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(project, "hoa@example.org")
    write("2026/cu.md", article("Tin cũ", 3))
    assert bantin(config, "digest") == 0  # the state made, hoa seen
    sign_up(project, "Lan@Example.org")
    capsys.readouterr()

    assert bantin(config, "subscribers", "export") == 0
    out = capsys.readouterr()
    rows = {r["email"]: r for r in csv.DictReader(io.StringIO(out.out))}
    assert "2 subscriber(s)" in out.err
    assert rows["hoa@example.org"]["source"] == "file"
    assert rows["hoa@example.org"]["status"] == "subscribed"
    lan = rows["Lan@Example.org"]
    assert (lan["source"], lan["status"], lan["categories"]) == ("form", "subscribed", "thong-bao")
    assert lan["consent_text"] == CONSENT
    assert (lan["request_ip"], lan["confirm_ip"]) == ("203.0.113.5", "198.51.100.9")
    assert datetime.fromisoformat(lan["confirmed_at"]) == NOW

    target = project / "nguoi-dang-ky.json"
    assert bantin(config, "subscribers", "export", "--format", "json", "--output", str(target)) == 0
    records = json.loads(target.read_text(encoding="utf-8"))
    assert [r["email"] for r in records] == ["hoa@example.org", "Lan@Example.org"]
    assert records[1]["categories"] == ["thong-bao"]
    assert records[1]["consent_text"] == CONSENT


def test_import_adds_confirmed_subscribers_with_a_legal_basis_who_then_get_digests(
    project: Path, write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(project, "hoa@example.org")
    write("2026/cu.md", article("Tin cũ", 3))
    assert bantin(config, "digest") == 0
    source = project / "so-dang-ky.csv"
    source.write_text(
        "email,name,frequency,categories,status\n"
        "mai@example.org,Trần Thị Mai,daily,Thông báo,\n"
        "tuan@example.org,,weekly,,unsubscribed\n"
        "khong-phai-dia-chi,,daily,,\n"
        "hoa@example.org,,daily,,\n",
        encoding="utf-8",
    )
    assert bantin(config, "subscribers", "import", str(source), "--legal-basis", "ngắn") == 2
    assert bantin(config, "subscribers", "export") == 0
    assert "mai@example.org" not in capsys.readouterr().out  # nothing imported on refusal

    basis = "đồng ý bằng phiếu giấy tại bộ phận một cửa, 2025"
    assert bantin(config, "subscribers", "import", str(source), "--legal-basis", basis) == 1
    out = capsys.readouterr()
    assert f"{source}:4: email" in out.err  # the bad row is named
    assert "2 added" in out.out  # mai, and hoa (the file's too: the file still wins)
    assert "1 skipped (unsubscribed)" in out.out

    assert bantin(config, "subscribers", "export") == 0
    rows = {r["email"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows["mai@example.org"]["source"] == "import"
    assert rows["mai@example.org"]["legal_basis"] == basis
    assert "tuan@example.org" not in rows

    write("2026/moi.md", article("Lịch tiếp công dân tháng 12", 0))
    assert bantin(config, "digest") == 0
    assert outbox(project) == ["hoa@example.org", "mai@example.org"]  # hoa once, not twice


def test_forget_leaves_nothing_but_the_salted_hash(
    project: Path, write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(project, "hoa@example.org")
    write("2026/cu.md", article("Tin cũ", 3))
    assert bantin(config, "digest") == 0
    sign_up(project, "Lan@Example.org")
    write("2026/moi.md", article("Tin mới", 0))
    assert bantin(config, "digest") == 0
    assert outbox(project) == ["Lan@Example.org", "hoa@example.org"]  # deliveries recorded
    db = project / "var" / "bantin.db"
    capsys.readouterr()

    assert bantin(config, "forget", "LAN@example.org") == 0
    said = capsys.readouterr().out
    assert "sign-up with its consent record" in said
    assert "deliveries" in said
    assert "salted hash" in said

    # No row and no byte of the database (nor its log) holds the address any more.
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = repr([list(conn.execute(f'SELECT * FROM "{t}"')) for t in tables])
        kept = list(conn.execute("SELECT digest FROM forgotten"))
    assert "lan@example.org" not in dump.lower()
    assert "Nguyễn Thị Lan" not in dump
    assert len(kept) == 1
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            raw = path.read_bytes().lower()
            assert b"lan@example.org" not in raw, path
            assert "nguyễn thị lan".encode() not in raw, path
    state = State(f"sqlite:///{db}")
    try:
        assert kept[0][0] == state.keys.digest("lan@example.org")
        assert state.erasure.is_forgotten("lan@example.org")
    finally:
        state.close()

    # A second request finds nothing more; the file's address is erased, never mailed again
    # while the file still lists it, and the command says where it is listed.
    assert bantin(config, "forget", "lan@example.org") == 0
    assert "held nothing more" in capsys.readouterr().out
    assert bantin(config, "forget", "hoa@example.org") == 0
    assert "still listed in config/subscribers.toml line 1" in capsys.readouterr().out
    write("2026/sau.md", article("Tin sau khi xóa", 0))
    assert bantin(config, "digest") == 0
    assert outbox(project) == ["Lan@Example.org", "hoa@example.org"]  # nobody mailed

    # Only a new sign-up, confirmed, brings an address back.
    sign_up(project, "hoa@example.org")
    write("2026/lai.md", article("Tin đăng ký lại", 0))
    assert bantin(config, "digest") == 0
    assert outbox(project).count("hoa@example.org") == 2


def test_check_refuses_the_form_without_its_templates(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(project)
    assert bantin(config, "check") == 0
    (project / "templates" / "subscribe_consent.txt.j2").unlink()
    capsys.readouterr()
    assert bantin(config, "check") == 1
    assert "subscribe_consent.txt.j2" in capsys.readouterr().out
    config.write_text(
        config.read_text(encoding="utf-8").replace("enabled = true", "enabled = false"),
        encoding="utf-8",
    )
    assert bantin(config, "check") == 0  # the form off needs none of them
