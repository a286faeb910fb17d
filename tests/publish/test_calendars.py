"""Events published: .ics files read back by two parsers, calendars, pages, the JSON Feed."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import icalendar
import pytest
import vobject

from service.content.parse import parse_markdown
from service.content.source import Source
from service.ical import CalendarSpec, calendar_bytes, stateless_sequence
from service.model import Article, Event
from service.publish.build import Builder, BuildReport
from service.settings import Settings

Write = Callable[[str, str], Path]
REPO = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
TABLE_FORM = REPO / "content/2026/11/lich-tiep-cong-dan-thang-12-2026.md"
FRONT_FORM = REPO / "content/2026/11/lich-tiep-cong-dan-thang-1-2027.md"
TABLE_PAGE = "articles/lich-tiep-cong-dan-thang-12-2026/"
FRONT_PAGE = "articles/lich-tiep-cong-dan-thang-1-2027/"


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZONE)


def build(settings: Settings, now: datetime = NOW, builder: Builder | None = None) -> BuildReport:
    builder = builder or Builder(settings, settings.site.templates_dir)
    return builder.build(Source(settings.source.dir, settings.site.zone).scan(), now)


@pytest.fixture
def public(settings: Settings, project: Path) -> Path:
    """The two sample schedules (table and front matter forms) and an article without events."""
    for sample in (TABLE_FORM, FRONT_FORM):
        shutil.copy(sample, project / "content" / sample.name)
    (project / "content" / "tin.md").write_text(
        "---\ntitle: Tin thường\ndate: 2026-11-20\n---\nKhông có lịch.\n", encoding="utf-8"
    )
    build(settings)
    return project / "public"


def with_icalendar(data: bytes) -> list[dict[str, Any]]:
    calendar = icalendar.Calendar.from_ical(data)
    assert calendar["METHOD"] == "PUBLISH"
    zones = [str(tz["TZID"]) for tz in calendar.walk("VTIMEZONE")]
    assert zones == ["Asia/Ho_Chi_Minh"]
    return [
        {
            "uid": str(e["UID"]),
            "summary": str(e["SUMMARY"]),
            "start": e.decoded("DTSTART"),
            "end": e.decoded("DTEND") if "DTEND" in e else None,
            "location": str(e["LOCATION"]) if "LOCATION" in e else None,
            "status": str(e["STATUS"]),
            "sequence": int(e["SEQUENCE"]),
            "stamp": e.decoded("DTSTAMP"),
        }
        for e in calendar.walk("VEVENT")
    ]


def with_vobject(data: bytes) -> list[dict[str, Any]]:
    calendar = vobject.readOne(data.decode("utf-8"))
    assert calendar.method.value == "PUBLISH"
    events = []
    for e in getattr(calendar, "vevent_list", []):
        events.append(
            {
                "uid": e.uid.value,
                "summary": e.summary.value,
                "start": e.dtstart.value,
                "end": e.dtend.value if hasattr(e, "dtend") else None,
                "location": e.location.value if hasattr(e, "location") else None,
                "status": e.status.value,
                "sequence": int(e.sequence.value),
                "stamp": e.dtstamp.value,
            }
        )
    return events


def read_both(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    first, second = with_icalendar(data), with_vobject(data)
    assert first == second
    return first


def test_the_table_form_gives_an_ics_that_two_parsers_read_alike(public: Path) -> None:
    events = read_both(public / TABLE_PAGE / "events.ics")
    assert [(e["start"], e["end"], e["status"]) for e in events] == [
        (at(2026, 12, 15, 7, 30), None, "CONFIRMED"),
        (at(2026, 12, 17, 14), None, "CONFIRMED"),
    ]
    assert all(e["location"].startswith("Trụ sở Tiếp công dân tỉnh") for e in events)
    assert events[0]["start"].tzinfo is not None and events[0]["start"].utcoffset() == timedelta(
        hours=7
    )
    assert len({e["uid"] for e in events}) == 2
    assert all(e["sequence"] == 0 for e in events)
    assert all(e["stamp"] == at(2026, 11, 25, 8) for e in events)  # the article's date


def test_the_front_matter_form_with_a_cancelled_session(public: Path) -> None:
    events = read_both(public / FRONT_PAGE / "events.ics")
    assert [(e["start"], e["end"], e["status"]) for e in events] == [
        (at(2027, 1, 12, 7, 30), at(2027, 1, 12, 11, 30), "CONFIRMED"),
        (at(2027, 1, 14, 14), at(2027, 1, 14, 17), "CONFIRMED"),
        (at(2027, 1, 19, 8), at(2027, 1, 19, 11), "CANCELLED"),
    ]
    assert events[2]["summary"] == "[Đã hủy] Tiếp công dân tại huyện Tam Đường"
    assert events[2]["location"] == "Hội trường UBND huyện Tam Đường"


def test_the_site_and_category_calendars_list_every_session(public: Path) -> None:
    site = read_both(public / "calendar.ics")
    assert [e["start"] for e in site] == [
        at(2026, 12, 15, 7, 30),
        at(2026, 12, 17, 14),
        at(2027, 1, 12, 7, 30),
        at(2027, 1, 14, 14),
        at(2027, 1, 19, 8),
    ]
    own = read_both(public / TABLE_PAGE / "events.ics") + read_both(
        public / FRONT_PAGE / "events.ics"
    )
    assert {e["uid"] for e in site} == {e["uid"] for e in own}  # one UID per event everywhere
    category = read_both(public / "categories/lich-tiep-cong-dan/calendar.ics")
    assert category == site
    empty = public / "categories/tin-tuc/calendar.ics"
    assert read_both(empty) == []  # still a valid calendar: it holds the VTIMEZONE


def test_calendars_keep_their_bytes_and_drop_sessions_a_year_old(
    settings: Settings, public: Path
) -> None:
    before = (public / "calendar.ics").read_bytes()
    assert build(settings, NOW + timedelta(days=3)).written == ()  # a later build, same bytes
    assert (public / "calendar.ics").read_bytes() == before
    build(settings, datetime(2027, 12, 16, tzinfo=UTC))
    starts = [e["start"] for e in read_both(public / "calendar.ics")]
    assert at(2026, 12, 15, 7, 30) not in starts and at(2026, 12, 17, 14) in starts


def test_moving_a_session_with_updated_raises_its_sequence_and_keeps_its_uid(
    settings: Settings, public: Path, project: Path
) -> None:
    builder = Builder(settings, settings.site.templates_dir)
    build(settings, builder=builder)
    first = read_both(public / TABLE_PAGE / "events.ics")
    text = TABLE_FORM.read_text(encoding="utf-8")
    moved = text.replace("07h30, thứ Ba 15/12/2026", "07h30, thứ Tư 16/12/2026").replace(
        "summary:", "updated: 2026-12-01T09:00+07:00\nsummary:"
    )
    (project / "content" / TABLE_FORM.name).write_text(moved, encoding="utf-8")
    report = build(settings, builder=builder)
    assert TABLE_PAGE + "events.ics" in report.written and "calendar.ics" in report.written
    second = read_both(public / TABLE_PAGE / "events.ics")
    assert [e["uid"] for e in second] == [e["uid"] for e in first]
    assert second[0]["start"] == at(2026, 12, 16, 7, 30)
    assert second[0]["sequence"] > first[0]["sequence"]
    assert second[0]["stamp"] > first[0]["stamp"]


def test_the_article_page_has_json_ld_and_google_calendar_links(public: Path) -> None:
    page = (public / FRONT_PAGE / "index.html").read_text(encoding="utf-8")
    [script] = re.findall(r'<script type="application/ld\+json">(.*?)</script>', page, re.S)
    events = json.loads(script)
    assert [e["@type"] for e in events] == ["Event"] * 3
    assert events[0]["startDate"] == "2027-01-12T07:30:00+07:00"
    assert events[0]["location"]["name"].startswith("Trụ sở Tiếp công dân")
    assert events[2]["eventStatus"] == "https://schema.org/EventCancelled"
    links = re.findall(r'href="(https://calendar\.google\.com/[^"]+)"', page)
    assert len(links) == 2  # none for the cancelled session
    query = parse_qs(urlsplit(links[0].replace("&amp;", "&")).query)
    assert query["dates"] == ["20270112T003000Z/20270112T043000Z"]
    assert query["ctz"] == ["Asia/Ho_Chi_Minh"]
    assert "Đã hủy" in page and "07:30–11:30, thứ Ba 12/01/2027" in page
    assert "webcal://tinh.example.gov.vn/categories/lich-tiep-cong-dan/calendar.ics" in page
    plain = (public / "articles/tin/index.html").read_text(encoding="utf-8")
    assert "ld+json" not in plain and "Google Calendar" not in plain


def test_the_index_lists_the_upcoming_sessions(settings: Settings, public: Path) -> None:
    index = (public / "index.html").read_text(encoding="utf-8")
    upcoming = index.split("Sắp diễn ra", 1)[1].split("Tin mới", 1)[0]
    assert upcoming.index("07:30, thứ Ba 15/12/2026") < upcoming.index("12/01/2027")
    assert "webcal://tinh.example.gov.vn/calendar.ics" in upcoming
    build(settings, datetime(2026, 12, 16, tzinfo=UTC))  # the 15th is over
    index = (public / "index.html").read_text(encoding="utf-8")
    assert "15/12/2026" not in index.split("Tin mới", 1)[0]
    assert "17/12/2026" in index.split("Tin mới", 1)[0]


def test_the_json_feed_carries_the_events_in_its_extension(public: Path) -> None:
    feed = json.loads((public / "feed.json").read_text(encoding="utf-8"))
    items = {item["title"]: item for item in feed["items"]}
    assert "_bantin" not in items["Tin thường"]
    events = items["Lịch tiếp công dân tháng 01 năm 2027 của lãnh đạo UBND tỉnh"]["_bantin"][
        "events"
    ]
    assert [e["status"] for e in events] == ["confirmed", "confirmed", "cancelled"]
    assert events[0]["start"] == "2027-01-12T07:30:00+07:00"
    assert events[0]["ics"] == f"https://tinh.example.gov.vn/{FRONT_PAGE}events.ics"
    ics_uids = [e["uid"] for e in read_both(public / FRONT_PAGE / "events.ics")]
    assert [e["uid"] for e in events] == ics_uids


def test_an_article_that_loses_its_events_loses_its_ics(
    settings: Settings, public: Path, project: Path
) -> None:
    builder = Builder(settings, settings.site.templates_dir)
    build(settings, builder=builder)
    path = project / "content" / FRONT_FORM.name
    front, body = path.read_text(encoding="utf-8").split("\n---\n", 1)
    front = front.split("events:\n", 1)[0]  # events: is the last key of the sample
    path.write_text(front + "---\n" + body, encoding="utf-8")
    report = build(settings, builder=builder)
    assert FRONT_PAGE + "events.ics" in report.removed
    assert not (public / FRONT_PAGE / "events.ics").exists()


def test_event_text_cannot_break_out_of_the_json_ld(
    settings: Settings, write: Write, project: Path
) -> None:
    write(
        "xau.md",
        "---\ntitle: Lịch\ndate: 2026-11-20\nevents:\n  - start: 2026-12-15T08:00\n"
        '    location: "</script><script>alert(1)</script> & <b>"\n---\nx\n',
    )
    build(settings)
    page = (project / "public/articles/xau/index.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    inline = [body for attributes, body in scripts if body.strip()]
    assert len(inline) == 1 and len(scripts) == 2  # the JSON-LD, and search.js by its src
    assert json.loads(inline[0])["location"]["name"] == "</script><script>alert(1)</script> & <b>"


def ledger_like(article: Article, event: Event) -> int:
    """What a ledger-backed SEQUENCE could say: its own count, never below the stateless one."""
    return max(stateless_sequence(article, event), 41) + 1


def test_a_sequence_from_elsewhere_reaches_every_calendar_and_the_feed(
    settings: Settings, public: Path
) -> None:
    Builder(settings, settings.site.templates_dir, sequence=ledger_like).build(
        Source(settings.source.dir, settings.site.zone).scan(), NOW
    )
    for path in (
        FRONT_PAGE + "events.ics",
        "calendar.ics",
        "categories/lich-tiep-cong-dan/calendar.ics",
    ):
        assert {e["sequence"] for e in read_both(public / path)} == {42}
    feed = json.loads((public / "feed.json").read_text(encoding="utf-8"))
    sequences = {
        e["sequence"] for i in feed["items"] for e in i.get("_bantin", {}).get("events", [])
    }
    assert sequences == {42}


def test_the_vtimezone_is_the_one_icalendar_would_add() -> None:
    """The zone is made once and copied (making it takes ~10 ms): each calendar still gets the
    VTIMEZONE icalendar's own add_missing_timezones writes, with transitions past its events."""
    article = parse_markdown(FRONT_FORM.read_text(encoding="utf-8"), FRONT_FORM.name, ZONE)
    late = dataclasses.replace(article.events[0], start=at(2041, 3, 1, 8), end=None)
    spec = CalendarSpec("Lịch", "https://example.gov.vn/", ZONE, "https://example.gov.vn")
    for events in ([(article, e) for e in article.events], [(article, late)]):
        for _ in range(2):  # the second time from the copy kept
            data = calendar_bytes(spec, events)
            calendar = icalendar.Calendar.from_ical(data)
            calendar.subcomponents = [c for c in calendar.subcomponents if c.name != "VTIMEZONE"]
            last = max(e.start.year for _, e in events) + 1
            calendar.add_missing_timezones(last_date=date(max(last, 2039), 1, 1))
            assert calendar.to_ical() == data
