"""The subscribers file: every bad entry reported with its line, the good ones still read."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import ConfigError
from service.mail.subscribers import check_address, read_entries, validate
from service.model import Subscriber

KNOWN = {"lich-tiep-cong-dan": "Lịch tiếp công dân", "thong-bao": "Thông báo"}

FILE = """\
# Người nhận bản tin
[[subscriber]]
email = "hoa.nguyen@example.org"
name = "Nguyễn Thị Hoa"
categories = ["Lịch tiếp công dân", "thong-bao"]

[[subscriber]]
email = "not an address"

[[subscriber]]  # a comment after the header
email = "lan@example.org"
name = "Lan\\nBcc: victim@example.org"

[[subscriber]]
email = "HOA.NGUYEN@example.org"
frequency = "weekly"

[[subscriber]]
email = "ba@example.org"
frequency = "monthly"

[[subscriber]]
email = "tu@example.org"
emial = "typo"

[[subscriber]]
email = "nam@example.org"
categories = ["Thể thao"]

[[subscriber]]
email = "broken@example.org
name = "x"

[[subscriber]]
email = "last@example.org"
frequency = "immediate"
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "subscribers.toml"
    p.write_text(FILE, encoding="utf-8")
    return p


def test_each_problem_is_reported_on_its_line_and_the_rest_stay_valid(path: Path) -> None:
    entries = list(read_entries(path, KNOWN))
    good = {e.line: e.subscriber for e in entries if e.subscriber}
    bad = {e.line: e.problem for e in entries if e.problem}
    assert good == {
        2: Subscriber(
            "hoa.nguyen@example.org",
            "Nguyễn Thị Hoa",
            "daily",
            frozenset({"lich-tiep-cong-dan", "thong-bao"}),
        ),
        26: Subscriber("nam@example.org", None, "daily", frozenset({"the-thao"})),
        34: Subscriber("last@example.org", None, "immediate", None),
    }
    reasons = {line: (p.line, p.reason) for line, p in bad.items() if p}
    assert reasons[7][0] == 7 and "not an email address" in reasons[7][1]
    assert reasons[10][0] == 10 and "name of lan@example.org must be one line" in reasons[10][1]
    assert reasons[14] == (14, "HOA.NGUYEN@example.org is listed twice; remove one of the entries")
    assert reasons[18][0] == 18 and "'monthly'" in reasons[18][1]
    assert reasons[22][0] == 22 and "unknown key 'emial'" in reasons[22][1]
    # broken TOML: the line of the unclosed string, not the block's
    assert reasons[30][0] == 31 and "not valid TOML" in reasons[30][1]
    assert sorted(reasons) == [7, 10, 14, 18, 22, 30]
    [warned] = [e for e in entries if e.warning]
    assert warned.line == 26
    assert warned.warning is not None and "'Thể thao'" in warned.warning
    assert str(path) in str(bad[14])


def test_validate_counts_for_bantin_check(path: Path) -> None:
    count, problems, warnings = validate(path, KNOWN)
    assert (count, len(problems), len(warnings)) == (3, 6, 1)
    assert all(isinstance(p, ConfigError) and p.line for p in problems)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('email = "a@example.org"\n', 1, "expected a [[subscriber]] line"),
        ('[[subscriber]]\nname = "Không thư"\n', 1, "has no 'email'"),
        ("[[subscriber]]\nemail = 'a@example.org'\n[meta]\nx = 1\n", 3, "unexpected table"),
        ('[[subscriber]]\nemail = "a@example.org"\nname = 3\n', 1, "must be one line"),
        ('[[subscriber]]\nemail = "a@example.org"\ncategories = "x"\n', 1, "must be a list"),
        ('[[subscriber]]\nemail = "a\\r\\n@example.org"\n', 1, "line break"),
        ('[[subscriber]]\nemail = "a@example.org"\nname = "A\\u0007"\n', 1, "one line"),
        ('\n\n[[subscriber]]\nemail = "a@example.org"\n\nfrequency = 7\n', 3, "frequency"),
    ],
)
def test_table_of_bad_entries(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    [entry] = [e for e in read_entries(path, KNOWN) if e.problem]
    assert entry.problem is not None
    assert entry.problem.line == line
    assert reason in entry.problem.reason


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("hoa.nguyen@example.org", True),
        ("a+tag@sub.example.gov.vn", True),
        ("Hoa@Example.ORG", True),
        ("no-at-sign.example.org", False),
        ("two@@example.org", False),
        (".dot@example.org", False),
        ("dot.@example.org", False),
        ("do..t@example.org", False),
        ("a@localhost", False),
        ("a@example.org\n", False),
        ("a@example.org\r\nBcc: b@example.org", False),
        ("hòa@example.org", False),
        ("a@-example.org", False),
        ("a b@example.org", False),
        ("x" * 65 + "@example.org", False),
    ],
)
def test_addresses(address: str, ok: bool) -> None:
    assert (check_address(address) is None) is ok


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        list(read_entries(tmp_path / "missing.toml"))
    latin = tmp_path / "latin.toml"
    latin.write_bytes(
        '[[subscriber]]\nemail = "a@example.org"\nname = "caf\xe9"\n'.encode("latin-1")
    )
    with pytest.raises(ConfigError, match="not UTF-8"):
        list(read_entries(latin))


def test_categories_match_the_slug_articles_get(tmp_path: Path) -> None:
    long_name = "Thông báo " + "về việc tổ chức lấy ý kiến nhân dân " * 4
    from service.content.slug import category

    path = tmp_path / "s.toml"
    path.write_text(
        f'[[subscriber]]\nemail = "a@example.org"\ncategories = ["{long_name}"]\n',
        encoding="utf-8",
    )
    [entry] = read_entries(path)
    assert entry.subscriber is not None and entry.subscriber.categories is not None
    assert entry.subscriber.categories == {category(long_name).slug}
