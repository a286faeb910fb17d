"""`bantin digest | preview | status | resume | check`, run as an operator runs them.

The kill -9 and lock cases run the real command in a subprocess against a real, slow SMTP
server; the others call the CLI in process.
"""

from __future__ import annotations

import email
import email.policy
import functools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from smtpserver import Server, running_server

from service import cli
from service.cli import mail as cli_mail
from service.ledger import State
from service.ledger.lock import held, runner_lock
from service.mail.run import DigestRun

Write = Callable[[str, str], Path]
TODAY = datetime.now(UTC).date()


def article(title: str, section: str = "Thông báo", days_ago: int = 1) -> str:
    day = TODAY - timedelta(days=days_ago)
    return f"---\ntitle: {title}\ndate: {day.isoformat()}\ncategory: {section}\n---\nNội dung.\n"


def configure(project: Path, port: int | None = None, concurrency: int = 2) -> Path:
    config = project / "config" / "bantin.toml"
    text = (
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        '[mail]\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
    )
    if port is not None:
        text += (
            'transport = "smtp"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\ntimeout = 5\n'
            f"concurrency = {concurrency}\n"
        )
    config.write_text(text, encoding="utf-8")
    return config


def subscribers(project: Path, *blocks: str) -> None:
    (project / "config" / "subscribers.toml").write_text("\n".join(blocks), encoding="utf-8")


def block(email: str, name: str = "", frequency: str = "daily") -> str:
    text = f'[[subscriber]]\nemail = "{email}"\nfrequency = "{frequency}"\n'
    return text + (f'name = "{name}"\n' if name else "")


def bantin(config: Path, *args: str) -> int:
    return cli.main(["--config", str(config), *args])


def dump(project: Path) -> list[str]:
    """Every row of the ledger, for 'nothing was recorded' comparisons."""
    path = project / "var" / "bantin.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [
            repr(row)
            for table in ("articles", "subscribers", "deliveries", "delivery_items", "runs")
            for row in db.execute(f"SELECT * FROM {table}")
        ]


def subprocess_bantin(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "service", "--config", str(config), *args],
        cwd=config.parent.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")},
    )


@pytest.fixture
def server() -> Iterator[Server]:
    with running_server() as running:
        yield running


def test_check_covers_the_subscribers_file(
    project: Path, write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(project)
    write("2026/lich.md", article("Lịch tiếp", "Lịch tiếp công dân"))
    subscribers(project, block("hoa@example.org", "Nguyễn Thị Hoa"))
    assert bantin(config, "check") == 0
    capsys.readouterr()

    subscribers(
        project,
        block("hoa@example.org"),
        '[[subscriber]]\nemail = "lan@example.org"\ncategories = ["Thể thao"]\n',
        block("hoa@example.org"),
    )
    assert bantin(config, "check") == 1
    out = capsys.readouterr()
    assert "subscribers.toml:9: hoa@example.org is listed twice" in out.out
    assert "warning:" in out.out and "'Thể thao'" in out.out
    assert "1 problem" in out.err


def test_preview_prints_and_writes_but_sends_and_records_nothing(
    project: Path, write: Write, capsys: pytest.CaptureFixture[str]
) -> None:
    config = configure(project)
    subscribers(project, block("hoa@example.org", "Nguyễn Thị Hoa"), block("lan@example.org"))
    write("2026/cu.md", article("Tin cũ"))
    assert bantin(config, "digest") == 0  # first run: they are seen, no back catalogue
    outbox = project / "var" / "outbox"
    assert not outbox.exists() or not list(outbox.iterdir())
    write("2026/moi.md", article("Lịch tiếp công dân tháng 12 <mới>", "Lịch tiếp công dân"))
    capsys.readouterr()
    before = dump(project)

    html, eml = project / "p.html", project / "p.eml"
    assert bantin(config, "preview", "HOA@example.org", "--html", str(html), "--eml", str(eml)) == 0
    out = capsys.readouterr().out
    assert out.startswith("Subject: Lịch tiếp công dân tháng 12 <mới> – Cổng thông tin tỉnh\n")
    assert "Kính gửi Nguyễn Thị Hoa," in out
    assert "1. Lịch tiếp công dân tháng 12 <mới>" in out and "Tin cũ" not in out
    assert "Lịch tiếp công dân tháng 12 &lt;mới&gt;" in html.read_text(encoding="utf-8")
    assert b"multipart/alternative" in eml.read_bytes()
    assert dump(project) == before
    assert not outbox.exists() or not list(outbox.iterdir())

    # a dry run says what a run would do, and does none of it
    assert bantin(config, "digest", "--dry-run") == 0
    assert "2 would send" in capsys.readouterr().out
    assert dump(project) == before
    assert not outbox.exists() or not list(outbox.iterdir())

    # the real run sends what the preview showed: one .eml per message in the outbox
    assert bantin(config, "digest") == 0
    assert "2 sent" in capsys.readouterr().out
    assert len(list(outbox.glob("*.eml"))) == 2

    # someone the state has never seen: a real run would start them after today's articles
    subscribers(
        project, block("hoa@example.org"), block("lan@example.org"), block("moi@example.org")
    )
    write("2026/sau.md", article("Tin sau"))
    assert bantin(config, "preview", "moi@example.org") == 0
    assert "nothing new for moi@example.org" in capsys.readouterr().err
    assert bantin(config, "preview", "lan@example.org") == 0
    assert "1. Tin sau" in capsys.readouterr().out
    assert bantin(config, "preview", "nobody@example.org") == 2
    assert "not a subscriber" in capsys.readouterr().err


def test_status_lists_what_waits_what_failed_and_who_is_suspended(
    project: Path,
    write: Write,
    server: Server,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the real command, with retries after 10 ms rather than 2 s and 10 s
    monkeypatch.setattr(cli_mail, "DigestRun", functools.partial(DigestRun, retry_delays=(0.01,)))
    config = configure(project, server.port)
    subscribers(
        project,
        block("busy@example.org"),
        block("gone@example.org"),
        block("fine@example.org"),
        block("left@example.org"),
    )
    write("2026/a0.md", article("a0"))
    assert bantin(config, "digest") == 0
    state = State("sqlite:///var/bantin.db")
    state.subscribers.unsubscribe("left@example.org", datetime.now(UTC))
    state.close()
    server.script("gone@example.org", "550 5.1.1 user unknown")
    for day in (1, 2, 3):
        write(f"2026/a{day}.md", article(f"a{day}"))
        assert bantin(config, "digest") == 0
    server.script("busy@example.org", "452 4.2.2 mailbox full")
    write("2026/a4.md", article("a4"))
    capsys.readouterr()
    assert bantin(config, "digest") == 0
    assert capsys.readouterr().out.startswith("bantin digest daily: 1 sent, 1 deferred, 0 failed")
    assert server.attempts["busy@example.org"] == 5  # four days, the last one retried once
    assert bantin(config, "status") == 0
    out = capsys.readouterr().out
    assert "Deliveries: 7 sent, 1 pending, 3 failed, 0 cancelled" in out
    assert re.search(r"busy@example.org +pending +2 attempts .* 452 4.2.2 mailbox full", out)
    assert re.search(r"gone@example.org +failed +1 attempts .* 550 5.1.1 user unknown", out)
    assert "Suspended (bantin resume EMAIL):\n  gone@example.org" in out
    assert "Unsubscribed:\n  left@example.org" in out
    assert re.search(r"digest:daily .* bantin digest daily: 1 sent, 1 deferred", out)


def test_a_second_run_on_a_locked_state_names_the_lock_and_its_holder(
    project: Path, write: Write
) -> None:
    config = configure(project)
    subscribers(project, block("hoa@example.org"))
    write("2026/a.md", article("a"))
    state = State("sqlite:///var/bantin.db")
    try:
        with held(runner_lock(state), "digest --frequency weekly"):
            second = subprocess_bantin(config, "digest")
            _, err = second.communicate(timeout=30)
    finally:
        state.close()
    assert second.returncode != 0
    assert str(project / "var" / "bantin.db.lock") in err or "var/bantin.db.lock" in err
    assert f"pid {os.getpid()}" in err and "digest --frequency weekly" in err
    assert not (project / "var" / "outbox").exists()


def test_kill_9_mid_send_loses_nothing_and_repeats_at_most_what_was_in_flight(
    project: Path, write: Write
) -> None:
    concurrency = 2
    addresses = [f"nguoi{n:02d}@example.org" for n in range(30)]
    with running_server(data_delay=0.1) as server:
        config = configure(project, server.port, concurrency)
        subscribers(project, *(block(a, f"Người số {n}") for n, a in enumerate(addresses)))
        write("2026/cu.md", article("Tin cũ"))
        assert bantin(config, "digest") == 0
        assert server.received == []
        write("2026/moi.md", article("Tin mới"))

        first = subprocess_bantin(config, "digest")
        deadline = time.monotonic() + 20
        while len(server.received) < 6 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL
        before_rerun = len(server.received)
        assert 6 <= before_rerun < 30

        started = time.monotonic()
        rerun = subprocess_bantin(config, "digest")
        out, err = rerun.communicate(timeout=60)
        seconds = time.monotonic() - started
        assert rerun.returncode == 0, err
        assert " 0 deferred, 0 failed" in out
        received = list(server.received)

    counts = Counter(r.recipient for r in received)
    assert set(counts) == set(addresses)  # everyone, at least once
    twice = [a for a, n in counts.items() if n > 1]
    assert all(n <= 2 for n in counts.values())
    assert len(twice) <= concurrency
    for address in twice:
        ids = {r.message_id for r in received if r.recipient == address}
        assert len(ids) == 1, f"{address} got two different Message-IDs: {ids}"
    print(f"kill -9 after {before_rerun} messages; rerun sent the rest in {seconds:.1f} s; {out}")


def run_cli(project: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=project,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")},
    )


def test_read_only_commands_run_while_the_runner_lock_is_held(project: Path, write: Write) -> None:
    """`bantin run` holds the lock for as long as it runs: a dry run, a preview, status and
    check never wait for it; a real digest is refused, naming the holder."""
    configure(project)
    subscribers(project, block("hoa@example.org", "Nguyễn Thị Hoa"))
    write("2026/a.md", article("Tin một"))
    assert bantin(configure(project), "digest") == 0
    write("2026/b.md", article("Tin hai"))
    before = dump(project)
    state = State("sqlite:///var/bantin.db")
    try:
        with held(runner_lock(state), "run"):
            for args in (
                ("digest", "--dry-run"),
                ("preview", "hoa@example.org"),
                ("status",),
                ("check",),
            ):
                done = run_cli(project, *args)
                assert done.returncode == 0, (args, done.stdout, done.stderr)
                assert "lock" not in done.stderr, (args, done.stderr)
            dry = run_cli(project, "digest", "--dry-run")
            assert "1 would send" in dry.stdout
            refused = run_cli(project, "digest")
            assert refused.returncode == 2
            assert str(project / "var" / "bantin.db.lock") in refused.stderr
            assert "`bantin run`" in refused.stderr and "stop the service first" in refused.stderr
            assert "wait for it to finish" not in refused.stderr
    finally:
        state.close()
    assert dump(project) == before
    assert not list((project / "var" / "outbox").glob("*.eml"))


def test_resubscribe_takes_back_an_unsubscription_when_the_operator_confirms(
    project: Path, write: Write
) -> None:
    config = configure(project)
    subscribers(
        project, block("hoa@example.org", "Nguyễn Thị Hoa"), block("lan@example.org", "Lan")
    )
    write("2026/a.md", article("Tin một", days_ago=3))
    assert bantin(config, "digest") == 0
    state = State("sqlite:///var/bantin.db")
    state.subscribers.unsubscribe("hoa@example.org", datetime.now(UTC))
    state.suppressions.suppress("hoa@example.org", "complaint", {}, datetime.now(UTC))
    state.close()
    write("2026/b.md", article("Tin khi vắng mặt", days_ago=2))
    assert bantin(config, "digest") == 0  # lan gets it; hoa does not

    status = run_cli(project, "status")
    assert status.returncode == 0
    assert status.stdout.startswith(
        "Subscribers: 1 active in config/subscribers.toml (immediate 0, daily 1, weekly 0), "
        "1 more listed but not mailed (below)"
    )
    assert re.search(r"Unsubscribed:\n  hoa@example.org +since", status.stdout)
    assert "Suppressed:" in status.stdout and "complaint" in status.stdout

    resumed = run_cli(project, "resume", "hoa@example.org")  # lifts the complaint only
    assert "bantin resubscribe hoa@example.org" in resumed.stderr
    state = State("sqlite:///var/bantin.db")
    state.suppressions.suppress("hoa@example.org", "complaint", {}, datetime.now(UTC))
    state.close()

    for answer in ("", "n\n", "không\n"):
        refused = run_cli(project, "resubscribe", "hoa@example.org", stdin=answer)
        assert refused.returncode == 1
        assert "Mail them again only if they asked you to" in refused.stderr
        assert "stays unsubscribed" in refused.stderr
    assert "1 active" in run_cli(project, "status").stdout

    done = run_cli(project, "resubscribe", "HOA@example.org", stdin="y\n")
    assert done.returncode == 0, done.stderr
    assert "subscribed again" in done.stdout
    assert "resubscribed hoa@example.org by the operator" in done.stderr  # the log line
    assert "spam complaint lifted" in done.stderr
    status = run_cli(project, "status").stdout
    assert status.startswith("Subscribers: 2 active")
    assert "Unsubscribed:" not in status and "Suppressed:" not in status
    assert run_cli(project, "resubscribe", "hoa@example.org", "--yes").returncode == 1

    # back from the next article on: what appeared while they were away is not sent
    write("2026/c.md", article("Tin sau khi trở lại", days_ago=1))
    outbox = project / "var" / "outbox"
    before = set(outbox.glob("*.eml"))
    assert bantin(config, "digest") == 0
    sent = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in set(outbox.glob("*.eml")) - before
    ]
    to_hoa = [m for m in sent if "hoa@example.org" in str(m["To"])]
    assert len(to_hoa) == 1
    text = to_hoa[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Tin sau khi trở lại" in text and "Tin khi vắng mặt" not in text


def test_resubscribe_leaves_a_bounce_suppression_to_resume(project: Path, write: Write) -> None:
    configure(project)
    subscribers(project, block("hoa@example.org"))
    state = State("sqlite:///var/bantin.db")
    state.subscribers.unsubscribe("hoa@example.org", datetime.now(UTC))
    state.suppressions.suppress("hoa@example.org", "hard_bounce", {}, datetime.now(UTC))
    state.close()
    done = run_cli(project, "resubscribe", "hoa@example.org", "--yes")
    assert done.returncode == 0
    assert "still suppressed (hard bounce)" in done.stderr and "bantin resume" in done.stderr
    assert "hoa@example.org" in run_cli(project, "status").stdout.split("Suppressed:")[1]


def test_preview_with_nothing_new_shows_the_latest_articles_they_would_receive(
    project: Path, write: Write
) -> None:
    """Right after `make run` nothing is new to anyone: the README's own preview must still
    show what the newsletter looks like."""
    config = configure(project)
    subscribers(
        project,
        '[[subscriber]]\nemail = "hoa@example.org"\nname = "Hoa"\n'
        'categories = ["Lịch tiếp công dân"]\n',
    )
    for n in range(1, 8):
        write(f"2026/lich-{n}.md", article(f"Lịch tiếp số {n}", "Lịch tiếp công dân", 20 - n))
    write("2026/tb.md", article("Thông báo khác", "Thông báo", 1))
    assert bantin(config, "digest") == 0  # everything is seen: nothing is new to her

    html = project / "d.html"
    done = run_cli(project, "preview", "hoa@example.org", "--html", str(html))
    assert done.returncode == 0, done.stderr
    assert "nothing new for hoa@example.org" in done.stderr
    assert "latest 5 article(s) they would receive" in done.stderr
    numbered = re.findall(r"^(\d+)\. (.+)$", done.stdout, flags=re.M)
    assert numbered == [(str(i), f"Lịch tiếp số {8 - i}") for i in range(1, 6)]
    assert "Thông báo khác" not in done.stdout
    assert "Lịch tiếp số 7" in html.read_text(encoding="utf-8")

    two = run_cli(project, "preview", "hoa@example.org", "--latest", "2")
    assert two.returncode == 0
    assert "nothing new" not in two.stderr
    assert re.findall(r"^\d+\. (.+)$", two.stdout, flags=re.M) == [
        "Lịch tiếp số 7",
        "Lịch tiếp số 6",
    ]
    bad = run_cli(project, "preview", "hoa@example.org", "--latest", "0")
    assert bad.returncode == 2 and "from 1 to 1000" in bad.stderr


def test_preview_open_hands_the_html_to_the_browser(project: Path, write: Write) -> None:
    configure(project)
    subscribers(project, block("hoa@example.org", "Hoa"))
    write("2026/a.md", article("Tin để xem"))
    seen = project / "browser-saw"
    browser = project / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {seen}\n', encoding="utf-8")
    browser.chmod(0o755)
    done = subprocess.run(
        [sys.executable, "-m", "service", "preview", "hoa@example.org", "--open"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("BANTIN_")},
            "BROWSER": str(browser),
            "TMPDIR": str(project),
        },
    )
    assert done.returncode == 0, done.stderr
    url = seen.read_text(encoding="utf-8").strip()
    assert url.startswith("file:///") and url.endswith(".html")
    page = Path(url.removeprefix("file://")).read_text(encoding="utf-8")
    assert "Tin để xem" in page and "<html" in page
