"""Two hosts on one PostgreSQL: one leads, both build and serve, both send, a kill loses nothing.

Two real `bantin run` processes, each with its own folder (config, content, var/, public/), one
PostgreSQL database started by the tests, and one real SMTP server that takes its time over
each message. Every wait is bounded; nothing asserts a duration.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgkit import PostgresServer
from servicekit import Bantin, Mailbox, smtp_server

PEOPLE = [f"nguoi{n:02d}@example.org" for n in range(40)]
REPO = Path(__file__).resolve().parents[2]


def host(root: Path, name: str, smtp_port: int, url: str) -> Bantin:
    shutil.copytree(REPO / "templates", root / "templates")
    (root / "content").mkdir()
    (root / "config").mkdir()
    bantin = Bantin(root, smtp_port, concurrency=2)
    shared = bantin.config_text().replace(  # one public name behind the load balancer
        f'base_url = "http://127.0.0.1:{bantin.port}"', 'base_url = "https://tinh.example.gov.vn"'
    )
    bantin.write_config(
        shared + f'\n[state]\nurl = "{url}"\n\n[cluster]\nhost = "{name}"\nfailover_after = 3\n'
    )
    bantin.subscribe(*PEOPLE)
    return bantin


@pytest.fixture
def hosts(tmp_path: Path, postgres: PostgresServer) -> Iterator[tuple[Bantin, Bantin, Mailbox]]:
    url = postgres.new_database()
    with smtp_server() as (port, mailbox):
        first = host(tmp_path / "a", "may-a", port, url)
        second = host(tmp_path / "b", "may-b", port, url)
        try:
            yield first, second, mailbox
        finally:
            for bantin in (first, second):
                bantin.stop()
                print(f"--- {bantin.root.name} ---\n{bantin.log_text()}")


def cluster(bantin: Bantin) -> dict[str, object]:
    health = bantin.health()
    assert health is not None
    found: dict[str, object] = health["cluster"]
    return found


def test_the_leader_killed_mid_send_is_replaced_and_nobody_misses_the_digest(
    hosts: tuple[Bantin, Bantin, Mailbox],
) -> None:
    first, second, mailbox = hosts
    for bantin in (first, second):
        bantin.publish("Tin cũ")  # the back catalogue: the same file on both hosts
    first.start()
    assert cluster(first)["role"] == "leader"
    second.start()
    assert cluster(second)["role"] == "standby"
    assert cluster(second)["leader"]["host"] == "may-a"  # type: ignore[index]
    refused = second.cli("digest")  # a manual run on any host, while a leader runs
    assert refused.returncode == 2
    assert "host may-a, pid " in refused.stderr and "`bantin run`" in refused.stderr
    status = second.cli("status")
    assert status.returncode == 0 and "Leader: may-a, pid " in status.stdout
    etags = {b.root.name: b.get("/rss.xml").headers["etag"] for b in (first, second)}
    assert etags["a"] == etags["b"]  # byte-identical feeds: one ETag behind a load balancer

    mailbox.hold()  # messages stay in flight until released: the kill comes mid-send
    for bantin in (first, second):
        title = bantin.publish("Lịch tiếp công dân tháng 12")
    for bantin in (first, second):
        bantin.wait(lambda b=bantin: title in b.get("/rss.xml").text, 20, "the new feed")
    assert first.get("/rss.xml").headers["etag"] == second.get("/rss.xml").headers["etag"]
    first.wait(lambda: mailbox.started >= 4, 30, "messages in flight on the hosts")
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    in_flight = mailbox.started
    # a slow relay from now on: the standby is still sending its batches when it comes to lead
    mailbox.data_delay = 0.3
    mailbox.release()

    second.wait(lambda: cluster(second)["role"] == "leader", 20, "the standby to lead")
    second.wait(lambda: all(mailbox.to(p) for p in PEOPLE), 90, "every subscriber's digest")
    for person in PEOPLE:
        got = mailbox.to(person)
        assert 1 <= len(got) <= 2, (person, len(got))
        assert len({m.message_id for m in got}) == 1  # a repeat is the same message
        assert title in got[0].text
    assert mailbox.count() - len(PEOPLE) <= in_flight  # repeats: only what was in flight
    second.wait(
        lambda: (second.health() or {}).get("pending_deliveries") == 0, 30, "nothing pending"
    )


def test_a_database_restart_mid_send_is_waited_for_and_the_run_completes(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """A PostgreSQL restart broke every connection: the raw connection kept for acks was never
    reopened, the senders died, the queue blocked and /healthz said ok. Now the senders wait for
    the database, the leader takes its lock again, and the run completes."""
    url = postgres.new_database()
    with smtp_server() as (port, mailbox):
        bantin = host(tmp_path / "a", "may-a", port, url)
        try:
            bantin.publish("Tin cũ")
            bantin.start()
            mailbox.hold()
            title = bantin.publish("Thông báo trong lúc khởi động lại cơ sở dữ liệu")
            bantin.wait(lambda: mailbox.started >= 2, 30, "messages in flight")
            postgres.restart()  # every connection breaks, the leader lock with them
            mailbox.release()
            bantin.wait(lambda: all(mailbox.to(p) for p in PEOPLE), 90, "every digest")
            assert all(title in mailbox.to(p)[0].text for p in PEOPLE)
            assert mailbox.count() - len(PEOPLE) <= 2  # repeats: only what was in flight

            def healthy_leader() -> bool:
                answer = bantin.get("/healthz")
                return answer.status_code == 200 and answer.json()["cluster"]["role"] == "leader"

            bantin.wait(healthy_leader, 60, "/healthz to say ok, led by this host again")
        finally:
            bantin.stop()
            print(bantin.log_text())
