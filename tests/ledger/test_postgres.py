"""What broke on PostgreSQL in the first release, each found by two hosts on one database.

A stale in-memory cache of recorded ids and simultaneous registrations hit unique violations;
two hosts creating the tables of a new database raced on pg_type; a missing driver printed the
password. Real processes, a real PostgreSQL server.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest
from pgkit import PostgresServer

from service.errors import StateError
from service.ledger import State
from service.model import Subscriber

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OPEN = """
import sys
from service.ledger import State
State(sys.argv[1]).close()
print("ok")
"""


def test_hosts_starting_together_on_a_new_database_all_open_it(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60) for p in starts]
    assert [p.returncode for p in starts] == [0] * 4, [err.decode() for _, err in results]
    state = State(url)
    try:
        assert state.articles.last_seq() == 0  # one schema, made once
    finally:
        state.close()


def test_two_hosts_recording_and_registering_the_same_things_do_not_collide(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    one, two = State(url), State(url)
    try:
        two.articles.record([("b", "fb", "b.md")], NOW)  # two reads the ids it knows
        one.articles.record([("a", "fa", "a.md")], NOW)  # two's copy is now stale
        two.articles.record([("a", "fa", "a.md"), ("c", "fc", "c.md")], NOW)  # no collision
        assert [i for _, i in one.articles.after(0)] == ["b", "a", "c"]
        people = [Subscriber(f"p{n}@example.org") for n in range(5)]
        one.subscribers.sync(people[:3], NOW)
        found = two.subscribers.sync(people, NOW)  # two had not seen them yet
        assert set(found) == {p.key for p in people}
        assert one.subscribers.sync(people, NOW, record=False).keys() == found.keys()
    finally:
        one.close()
        two.close()


def test_a_missing_driver_is_named_and_the_password_is_not(tmp_path: object) -> None:
    url = "postgresql+pg8000://bantin:mat-khau-bi-mat@db.example.gov.vn:5432/bantin"
    with pytest.raises(StateError) as caught:
        State(url)
    message = str(caught.value)
    assert "mat-khau-bi-mat" not in message and "***" in message
    assert "pip install" in message
