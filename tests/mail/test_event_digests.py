"""Sessions in digests, through real files, a real ledger and a real SMTP server: the calendar
part reads back alike in two parsers, and a moved session reaches those who got the old time,
once, marked as an update with the next SEQUENCE; a change of wording reaches nobody."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import icalendar
import pytest
import vobject
from smtpserver import Received, Recorder, running_server

from service.content.source import Source
from service.ledger import State
from service.mail.compose import Composer
from service.mail.run import DigestRun, run_digest
from service.mail.subscribers import read_entries
from service.mail.transport import transport_for
from service.model import Article
from service.settings import Settings, load_settings

KEY = b"the event digest tests' key....."
T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # 08:00 in Hà Nội; the sessions are in January

SCHEDULE = """\
---
title: Lịch tiếp công dân tháng 01 năm 2027
date: 30/11/2026 15:00
category: Lịch tiếp công dân
id: lich-tiep-2027-01
summary: Lãnh đạo UBND tỉnh tiếp công dân ngày 12 và 14 tháng 01 năm 2027.
events:
  - start: {first}
    end: "11:30"
    location: {place}
    host: {host}
    uid: sang-12
  - start: 14/01/2027 14:00
    end: "17:00"
    location: Trụ sở Tiếp công dân tỉnh
    uid: chieu-14
---
Lãnh đạo UBND tỉnh tiếp công dân định kỳ.
"""
NOTICE = """\
---
title: Thông báo nghỉ Tết
date: 30/11/2026 16:00
category: Thông báo
---
Nghỉ Tết.
"""
EVERYONE, SCHEDULES, NOTICES, LATE = (
    "hoa@example.org",
    "lan@example.org",
    "nam@example.org",
    "moi@example.org",
)


@dataclass
class Office:
    project: Path
    settings: Settings
    state: State
    mailbox: Recorder

    def schedule(
        self,
        first: str = "12/01/2027 07:30",
        place: str = "Trụ sở Tiếp công dân tỉnh",
        host: str = "Chủ tịch UBND tỉnh",
    ) -> None:
        path = self.project / "content" / "lich-tiep.md"
        path.write_text(SCHEDULE.format(first=first, place=place, host=host), encoding="utf-8")

    def subscribers(self, *lines: tuple[str, str | None]) -> None:
        blocks = []
        for email, only in lines:
            block = f'[[subscriber]]\nemail = "{email}"\nfrequency = "daily"\n'
            if only:
                block += f'categories = ["{only}"]\n'
            blocks.append(block)
        self.settings.mail.subscribers_file.write_text("\n".join(blocks), encoding="utf-8")

    def published(self) -> list[Article]:
        source = Source(self.settings.source.dir, self.settings.site.zone)
        return source.scan().published(T0)

    def digest(self) -> None:
        published = self.published()
        known = {a.category.slug: a.category.name for a in published}
        run = DigestRun(
            self.state,
            Composer(self.settings, KEY),
            transport_for(self.settings),
            "daily",
            published,
            read_entries(self.settings.mail.subscribers_file, known),
            clock=lambda: T0,
            retry_delays=(),
        )
        report = asyncio.run(run_digest(run))
        assert report.ok, report.summary()


@pytest.fixture
def office(project: Path) -> Iterator[Office]:
    with running_server() as server:
        config = project / "config" / "bantin.toml"
        config.write_text(
            '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
            '[mail]\ntransport = "smtp"\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {server.port}\nsecurity = "none"\n',
            encoding="utf-8",
        )
        settings = load_settings(config)
        state = State(settings.state.url, create=True)
        try:
            yield Office(project, settings, state, server.recorder)
        finally:
            state.close()


def calendar_of(mail: Received) -> bytes:
    [part] = [p for p in mail.message.walk() if p.get_content_type() == "text/calendar"]
    assert part.get_param("method") == "PUBLISH"
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    return data


def sessions(data: bytes) -> dict[str, tuple[datetime, int, str]]:
    """UID -> (start, SEQUENCE, status) as icalendar reads the calendar; vobject must agree."""
    first = {
        str(e["UID"]): (e.decoded("DTSTART"), int(e["SEQUENCE"]), str(e.get("STATUS", "")))
        for e in icalendar.Calendar.from_ical(data).walk("VEVENT")
    }
    second = {
        e.uid.value: (e.dtstart.value, int(e.sequence.value), getattr(e, "status", None))
        for e in vobject.readOne(data.decode("utf-8")).vevent_list
    }
    assert {u: (s, n) for u, (s, n, _) in first.items()} == {
        u: (s, n) for u, (s, n, _) in second.items()
    }
    return first


def by_uid_suffix(found: dict[str, tuple[datetime, int, str]]) -> dict[int, tuple[datetime, int]]:
    """The sessions in the order of their start: 0 the morning, 1 the afternoon."""
    ordered = sorted(found.values())
    return {n: (start, sequence) for n, (start, sequence, _) in enumerate(ordered)}


@pytest.fixture
def sent_once(office: Office) -> Office:
    """Three subscribers registered before the schedule and the notice were published, then
    the first digest: everyone got what is theirs."""
    office.subscribers((EVERYONE, None), (SCHEDULES, "lich-tiep-cong-dan"), (NOTICES, "thong-bao"))
    office.digest()  # registers them, with nothing published yet
    office.schedule()
    (office.project / "content" / "thong-bao.md").write_text(NOTICE, encoding="utf-8")
    office.digest()
    return office


def test_the_first_digest_carries_the_sessions_as_a_calendar(sent_once: Office) -> None:
    mailbox = sent_once.mailbox
    assert sorted(m.recipient for m in mailbox.received) == [EVERYONE, SCHEDULES, NOTICES]
    [mail] = mailbox.to(SCHEDULES)
    assert "07:30–11:30, thứ Ba 12/01/2027" in mail.text
    assert "Trụ sở Tiếp công dân tỉnh" in mail.text
    found = sessions(calendar_of(mail))
    assert len(found) == 2 and all(n == 0 for _, n, _ in found.values())
    assert by_uid_suffix(found)[0][0] == datetime.fromisoformat("2027-01-12T07:30:00+07:00")
    [notice] = mailbox.to(NOTICES)
    assert [p for p in notice.message.walk() if p.get_content_type() == "text/calendar"] == []


def test_a_change_of_wording_is_not_news(sent_once: Office) -> None:
    before = len(sent_once.mailbox.received)
    sent_once.schedule(host="Phó Chủ tịch UBND tỉnh Hà Văn Nam")
    sent_once.digest()
    assert len(sent_once.mailbox.received) == before


def test_a_moved_session_is_sent_again_to_those_who_got_it_and_to_nobody_else(
    sent_once: Office,
) -> None:
    office = sent_once
    office.subscribers(
        (EVERYONE, None),
        (SCHEDULES, "lich-tiep-cong-dan"),
        (NOTICES, "thong-bao"),
        (LATE, None),  # joined after the first digest: no back catalogue, no update
    )
    office.digest()
    before = len(office.mailbox.received)
    office.schedule(first="13/01/2027 08:00", place="Hội trường UBND tỉnh")
    office.digest()
    updates = office.mailbox.received[before:]
    assert sorted(m.recipient for m in updates) == [EVERYONE, SCHEDULES]
    for mail in updates:
        subject = str(mail.message["Subject"])
        assert "Cập nhật: thay đổi thời gian và địa điểm" in subject, subject
        assert "Lịch tiếp công dân tháng 01 năm 2027" in subject
        text = mail.text
        lines = [line.strip() for line in text.splitlines()]
        assert "Trước: 07:30–11:30, thứ Ba 12/01/2027, Trụ sở Tiếp công dân tỉnh" in lines
        assert "Nay: 08:00–11:30, thứ Tư 13/01/2027, Hội trường UBND tỉnh" in lines
        assert "Cổng thông tin tỉnh có 1 cập nhật lịch:" in lines
        found = by_uid_suffix(sessions(calendar_of(mail)))
        assert found[0] == (datetime.fromisoformat("2027-01-13T08:00:00+07:00"), 1)
        assert found[1][1] == 0  # the afternoon did not change
    # once: the next runs send nothing more
    office.digest()
    office.schedule(first="13/01/2027 08:00", place="Hội trường UBND tỉnh", host="Bí thư")
    office.digest()
    assert len(office.mailbox.received) == before + 2
    # moved again: the update says what they were sent last, at SEQUENCE 2
    office.schedule(first="15/01/2027 08:00", place="Hội trường UBND tỉnh")
    office.digest()
    again = office.mailbox.received[before + 2 :]
    assert sorted(m.recipient for m in again) == [EVERYONE, SCHEDULES]
    assert "Trước: 08:00–11:30, thứ Tư 13/01/2027" in again[0].text
    starts = {start: n for start, n, _ in sessions(calendar_of(again[0])).values()}
    assert starts[datetime.fromisoformat("2027-01-15T08:00:00+07:00")] == 2
