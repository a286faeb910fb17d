"""A moved session through `bantin run`, killed mid-send: every address that got the schedule
gets the update once (at most once more for what was in flight, the same message), nobody
else gets it, and the calendar it carries says the new time."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path

import icalendar
from servicekit import Bantin, smtp_server, write_atomic

SCHEDULE = """\
---
title: Lịch tiếp công dân tháng 01 năm 2027
date: 2026-11-30T15:00:00+07:00
category: Lịch tiếp công dân
id: lich-tiep-2027-01
events:
  - start: {first}
    end: "11:30"
    location: {place}
    uid: sang
  - start: 14/01/2027 14:00
    end: "17:00"
    location: Trụ sở Tiếp công dân tỉnh
    uid: chieu
---
Lãnh đạo UBND tỉnh tiếp công dân định kỳ.
"""
PEOPLE = [f"cong-dan-{n}@example.org" for n in range(8)]
NEWCOMER = "moi-dang-ky@example.org"


def schedule(bantin: Bantin, first: str, place: str) -> None:
    write_atomic(
        bantin.root / "content" / "lich-tiep.md", SCHEDULE.format(first=first, place=place)
    )


def starts(message: icalendar.Calendar) -> list[str]:
    found = [e.decoded("DTSTART") for e in message.walk("VEVENT")]
    assert all(isinstance(start, datetime) for start in found)
    return sorted(start.isoformat() for start in found)


def test_a_moved_session_reaches_each_recipient_once_through_a_kill(project: Path) -> None:
    with smtp_server() as (port, mailbox):
        bantin = Bantin(project, port)
        try:
            bantin.subscribe(*PEOPLE)
            bantin.start()
            schedule(bantin, "12/01/2027 07:30", "Trụ sở Tiếp công dân tỉnh")
            bantin.wait(lambda: all(mailbox.to(p) for p in PEOPLE), 30, "the schedule to all")
            first = mailbox.count()
            bantin.stop()
            # a subscriber who joined after the schedule went out is not sent its update
            bantin.subscribe(*PEOPLE, NEWCOMER)
            bantin.start()

            mailbox.hold()
            schedule(bantin, "13/01/2027 08:00", "Hội trường UBND tỉnh")
            bantin.wait(lambda: mailbox.started > first, 30, "an update in flight")
            assert bantin.proc is not None
            bantin.proc.send_signal(signal.SIGKILL)
            bantin.proc.wait(10)
            in_flight = mailbox.started - first
            mailbox.release()
            assert mailbox.count() - first < len(PEOPLE), "the kill was meant to come mid-send"

            bantin.start()
            updated = lambda: all(len(mailbox.to(p)) >= 2 for p in PEOPLE)  # noqa: E731
            bantin.wait(updated, 30, "the update to every recipient of the schedule")
            bantin.wait(
                lambda: (bantin.health() or {}).get("pending_deliveries") == 0,
                15,
                "nothing pending",
            )
            for person in PEOPLE:
                got = mailbox.to(person)[1:]
                assert 1 <= len(got) <= 2, (person, len(got))
                assert len({m.message_id for m in got}) == 1  # a repeat is the same message
                assert "Cập nhật: thay đổi thời gian và địa điểm" in str(got[0].message["Subject"])
                (part,) = [
                    p for p in got[0].message.walk() if p.get_content_type() == "text/calendar"
                ]
                calendar = icalendar.Calendar.from_ical(part.get_payload(decode=True))
                assert starts(calendar) == [
                    "2027-01-13T08:00:00+07:00",
                    "2027-01-14T14:00:00+07:00",
                ]
            assert mailbox.count() - first - len(PEOPLE) <= in_flight
            assert mailbox.to(NEWCOMER) == []
        finally:
            bantin.stop()
            print(f"--- service log ---\n{bantin.log_text()}")
