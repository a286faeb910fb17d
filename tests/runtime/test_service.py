"""`bantin run` end to end: the real process, a real SMTP server, real HTTP, real signals.

Each test starts the service on free ports in a fresh project (scan every second), changes
files the way an operator would, and watches the outcome from outside: the served feed, the
mail that arrives, /healthz, the log, `bantin status`. Every wait is bounded.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest
from servicekit import Bantin, Mailbox, free_port, smtp_server, subscribers_toml


def _service(project: Path, smtp_port: int, concurrency: int = 2) -> Bantin:
    bantin = Bantin(project, smtp_port, concurrency=concurrency)
    bantin.publish("Thông báo lịch tiếp công dân tháng 5")  # the back catalogue
    return bantin


@pytest.fixture
def service(project: Path) -> Iterator[tuple[Bantin, Mailbox]]:
    with smtp_server() as (port, mailbox):
        bantin = _service(project, port)
        try:
            yield bantin, mailbox
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()}")  # shown when the test fails


def feed_titles(bantin: Bantin) -> list[str]:
    response = bantin.get("/rss.xml")
    assert response.status_code == 200
    parsed = feedparser.parse(response.content)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    return [entry.title for entry in parsed.entries]


def test_new_article_reaches_the_feed_and_immediate_subscribers_and_edits_apply(
    service: tuple[Bantin, Mailbox],
) -> None:
    bantin, mailbox = service
    bantin.subscribe("hoa@example.org")
    bantin.start()
    assert feed_titles(bantin) == ["Thông báo lịch tiếp công dân tháng 5"]

    first = bantin.get("/rss.xml")
    etag = first.headers["ETag"]
    again = bantin.get("/rss.xml", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""

    title = bantin.publish("Lịch nghỉ Tết Nguyên đán")
    bantin.wait(lambda: title in feed_titles(bantin), 10, "the new article in /rss.xml")
    mails = bantin.wait(lambda: mailbox.to("hoa@example.org"), 10, "hoa's digest")
    assert len(mails) == 1
    assert title in mails[0].text
    assert "tháng 5" not in mails[0].text  # the back catalogue is not news
    changed = bantin.get("/rss.xml", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert bantin.get(
        "/rss.xml", headers={"If-None-Match": changed.headers["ETag"]}
    ).status_code == (304)

    # A subscriber added to the file gets the next article, not the ones before it.
    bantin.subscribe("hoa@example.org", "lan@example.org")
    bantin.wait(
        lambda: (bantin.health() or {}).get("subscribers", {}).get("count") == 2,
        10,
        "the edited subscribers file to be adopted",
    )
    later = bantin.publish("Kết quả tuyển dụng công chức")
    lan = bantin.wait(lambda: mailbox.to("lan@example.org"), 10, "lan's first digest")
    bantin.wait(lambda: len(mailbox.to("hoa@example.org")) == 2, 10, "hoa's second digest")
    assert len(lan) == 1
    assert later in lan[0].text
    assert title not in lan[0].text
    assert later in mailbox.to("hoa@example.org")[1].text


def test_one_click_unsubscribe_stops_the_mail(service: tuple[Bantin, Mailbox]) -> None:
    bantin, mailbox = service
    bantin.subscribe("hoa@example.org", "lan@example.org")
    bantin.start()
    bantin.publish("Lịch nghỉ Tết Nguyên đán")
    mail = bantin.wait(lambda: mailbox.to("hoa@example.org"), 10, "hoa's digest")[0]
    bantin.wait(lambda: mailbox.to("lan@example.org"), 10, "lan's digest")
    header = mail.message["List-Unsubscribe"]
    assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(r"<(.+)>", str(header))
    assert match, header
    url = match.group(1)
    assert url.startswith(bantin.url + "/unsubscribe/")
    path = url.removeprefix(bantin.url)

    # GET (a mail scanner following the link) changes nothing.
    page = bantin.get(path)
    assert page.status_code == 200
    assert "<form" in page.text
    assert "hoa@example.org" not in bantin.cli("status").stdout

    # A forged token is refused and changes nothing.
    token = path.rsplit("/", 1)[1]
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    refused = httpx.post(
        bantin.url + "/unsubscribe/" + forged, data={"List-Unsubscribe": "One-Click"}, timeout=5
    )
    assert 400 <= refused.status_code < 500
    assert "Unsubscribed" not in bantin.cli("status").stdout

    done = httpx.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=5)
    assert done.status_code == 200
    status = bantin.cli("status")
    assert status.returncode == 0, status.stderr
    unsubscribed = status.stdout.split("Unsubscribed:", 1)[1]
    assert "hoa@example.org" in unsubscribed
    assert "lan@example.org" not in unsubscribed

    title = bantin.publish("Kết quả tuyển dụng công chức")
    bantin.wait(lambda: len(mailbox.to("lan@example.org")) == 2, 10, "lan's second digest")
    bantin.wait(
        lambda: (
            "1 sent"
            in (bantin.health() or {}).get("runs", {}).get("digest:immediate", {}).get("detail", "")
        ),
        10,
        "the immediate run that sent one message to end",
    )
    assert title in mailbox.to("lan@example.org")[1].text
    assert len(mailbox.to("hoa@example.org")) == 1


def test_bad_edits_are_refused_and_the_old_configuration_runs_on(
    service: tuple[Bantin, Mailbox],
) -> None:
    bantin, mailbox = service
    bantin.subscribe("hoa@example.org")
    bantin.start()

    broken_subscribers = subscribers_toml("hoa@example.org") + (
        '[[subscriber]]\nemial = "lan@example.org"\n'  # a typo on line 6
    )
    bad_line = broken_subscribers.splitlines().index("[[subscriber]]", 1) + 1
    good_config = bantin.config_text()
    broken_config = good_config.replace('author = "', 'titel = "Sai"\nauthor = "', 1)
    config_line = broken_config.splitlines().index('titel = "Sai"') + 1
    bantin.subscribers_file.write_text(broken_subscribers, encoding="utf-8")
    bantin.write_config(broken_config)

    def refused() -> dict[str, object] | None:
        health = bantin.health() or {}
        subs, config = health.get("subscribers", {}), health.get("config", {})
        return health if subs.get("ok") is False and config.get("ok") is False else None

    health = bantin.wait(refused, 10, "/healthz to show both refusals")
    assert "titel" in str(health["config"])
    assert "emial" in str(health["subscribers"])
    log = bantin.log_text()
    assert f"config/subscribers.toml:{bad_line}: unknown key 'emial'" in log
    assert f"{bantin.config}:{config_line}: unknown key 'site.titel'" in log

    # The old configuration and the last good subscribers file run on.
    title = bantin.publish("Lịch nghỉ Tết Nguyên đán")
    mails = bantin.wait(lambda: mailbox.to("hoa@example.org"), 10, "hoa's digest")
    assert title in mails[0].text
    assert not mailbox.to("lan@example.org")

    # Good edits clear the refusals.
    bantin.subscribe("hoa@example.org", "lan@example.org")
    bantin.write_config(good_config.replace("Cổng thông tin tỉnh", "Cổng thông tin tỉnh mới"))

    def cleared() -> dict[str, object] | None:
        health = bantin.health() or {}
        subs, config = health.get("subscribers", {}), health.get("config", {})
        ok = subs.get("ok") is True and config.get("ok") is True and subs.get("count") == 2
        return health if ok else None

    health = bantin.wait(cleared, 10, "/healthz to clear the refusals")
    assert health["config"]["error"] is None  # type: ignore[index]
    assert health["subscribers"]["error"] is None  # type: ignore[index]

    # A key that needs a restart is named as such; the rest of the edit applies.
    # The HTTP server serves the output directory it started with: a new one would be written
    # but never served, so it waits for a restart like the port.
    other_port = free_port()
    moved = bantin.config_text(port=other_port) + '\n[feeds]\noutput_dir = "public2"\n'
    bantin.write_config(moved)
    bantin.wait(
        lambda: re.search(r"server\.port, feeds\.output_dir changed; .*restart", bantin.log_text()),
        10,
        "the log to name server.port and feeds.output_dir as needing a restart",
    )
    assert bantin.health() is not None  # still on the old port
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{other_port}/healthz", timeout=1)
    served = bantin.publish("Kết quả tuyển dụng công chức")
    bantin.wait(lambda: served in feed_titles(bantin), 10, "the next article in /rss.xml")

    # SIGHUP reloads at once.
    bantin.signal(signal.SIGHUP)
    bantin.wait(lambda: "SIGHUP: reloading" in bantin.log_text(), 5, "the SIGHUP log line")


def test_second_instance_exits_at_once_naming_the_lock(service: tuple[Bantin, Mailbox]) -> None:
    bantin, _ = service
    bantin.subscribe("hoa@example.org")
    bantin.start()
    assert bantin.proc is not None
    for command in (["run"], ["digest", "--frequency", "daily"]):
        # the first instance never lets go: a second one that waited for the lock instead of
        # refusing would still be waiting when this bound runs out
        try:
            second = bantin.cli(*command, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`bantin {' '.join(command)}` waited for the lock instead of refusing")
        assert second.returncode != 0, second
        message = second.stderr
        assert "bantin.db.lock" in message, message
        assert f"pid {bantin.proc.pid}" in message, message
        assert "bantin run" in message, message
    assert bantin.health() is not None  # the first one is unharmed


def test_sigterm_mid_send_exits_cleanly_and_loses_nothing(project: Path) -> None:
    people = [f"nguoi{n:02d}@example.org" for n in range(12)]
    concurrency = 2
    with smtp_server() as (port, mailbox):
        bantin = _service(project, port, concurrency=concurrency)

        def stop_mid_send(before: int) -> None:
            """SIGTERM while messages are held in flight; only those may still go."""
            bantin.wait(lambda: mailbox.started > before, 20, "a message in flight")
            assert bantin.proc is not None
            stops = bantin.log_text().count("SIGTERM: stopping")
            bantin.signal(signal.SIGTERM)
            bantin.wait(
                lambda: bantin.log_text().count("SIGTERM: stopping") > stops,
                20,
                "the service to take the SIGTERM",
            )
            at_signal = mailbox.started
            mailbox.release()  # what was in flight is answered now, and may be recorded
            code = bantin.proc.wait(timeout=30)
            assert code == 0, bantin.log_text()
            assert "did not finish within" not in bantin.log_text()  # not stopped by the grace
            assert mailbox.started - at_signal <= concurrency, "sending went on after SIGTERM"

        try:
            bantin.subscribe(*people)
            bantin.start()
            mailbox.hold()
            before = mailbox.started
            title = bantin.publish("Lịch nghỉ Tết Nguyên đán")
            stop_mid_send(before)
            assert mailbox.count() < len(people), "the test meant to stop the service mid-send"
            assert bantin.log_text().rstrip().endswith("stopped")

            # Stopped again while it resends the pending ones at start-up.
            mailbox.hold()
            before = mailbox.started
            bantin.start(wait=False)
            stop_mid_send(before)
            assert mailbox.count() < len(people), "the test meant to stop the resend midway"

            bantin.start()
            bantin.wait(lambda: all(mailbox.to(p) for p in people), 15, "every subscriber's digest")
            bantin.wait(
                lambda: (bantin.health() or {}).get("pending_deliveries") == 0,
                10,
                "no pending deliveries",
            )
            for person in people:
                got = mailbox.to(person)
                assert 1 <= len(got) <= 2, (person, len(got))
                assert len({m.message_id for m in got}) == 1  # a repeat is the same message
                assert title in got[0].text
            assert mailbox.count() - len(people) <= 2 * concurrency  # only in-flight ones twice
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()}")
