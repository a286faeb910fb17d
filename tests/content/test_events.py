"""Events in articles: the front matter's ``events:``, the schedule table, Vietnamese times."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.content.events import WEEKDAYS, parse_when
from service.content.parse import parse_markdown
from service.errors import ArticleError
from service.model import Article

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "content/2026/11/lich-tiep-cong-dan-thang-12-2026.md"
HEAD = "---\ntitle: Lịch tiếp công dân\ndate: 2026-11-25\n"


def at(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE)


def article(text: str, source: str = "lich.md") -> Article:
    return parse_markdown(text, source, ZONE)


def failure(text: str, source: str = "lich.md") -> str:
    with pytest.raises(ArticleError) as caught:
        article(text, source)
    assert caught.value.path == source
    return caught.value.reason


def table(*rows: str, head: str = "| Thời gian | Người tiếp | Địa điểm |") -> str:
    return HEAD + "---\nLịch như sau:\n\n" + head + "\n|---|---|---|\n" + "\n".join(rows) + "\n"


# --- Vietnamese times --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "start", "end"),
    [
        ("07h30, thứ Ba 15/12/2026", at(15, 7, 30), None),
        ("14h00 ngày 17/12/2026", at(17, 14), None),
        ("8 giờ 30 ngày 15/12/2026", at(15, 8, 30), None),
        ("8 giờ 30 phút, ngày 15/12/2026", at(15, 8, 30), None),
        ("15/12/2026 07:30", at(15, 7, 30), None),
        ("Thứ Năm, 17/12/2026, từ 14h00 đến 16h30", at(17, 14), at(17, 16, 30)),
        ("07h30 - 11h30 thứ 3, 15/12/2026", at(15, 7, 30), at(15, 11, 30)),
        ("Chiều thứ Năm 17/12/2026, 2 giờ", at(17, 14), None),
        ("sáng Chủ nhật 20/12/2026 lúc 7h", at(20, 7), None),
    ],
)
def test_schedule_times_are_read(written: str, start: datetime, end: datetime | None) -> None:
    assert parse_when(written, ZONE) == (start, end)


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("07h30, thứ Tư 15/12/2026", "is a thứ Ba, not thứ Tư"),
        ("thứ Ba 15/12/2026", "no time"),
        ("07h30", "no date"),
        ("07h30 15/12", "cannot read"),
        ("07h30 15/12/2026 hoặc 16/12/2026", "cannot read 'hoặc'"),
        ("07h30 15/12/2026, 16/12/2026", "2 dates"),
        ("25h00 15/12/2026", "not a time of day"),
        ("07h30 31/02/2026", "not a date"),
        ("11h00 - 07h30 15/12/2026", "ends before it starts"),
        ("sáng 14h00 15/12/2026", "not in the morning"),
        ("Hoãn", "cannot read"),
    ],
)
def test_schedule_times_that_cannot_be_read_exactly_are_refused(written: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_when(written, ZONE)


@given(
    moment=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2080, 12, 31)),
    style=st.sampled_from(
        ["{h:02d}h{m:02d}, {wd} {d}", "{h}h{m:02d} ngày {d}", "{h} giờ {m} ngày {d}"]
    ),
)
def test_any_written_time_reads_back(moment: datetime, style: str) -> None:
    moment = moment.replace(second=0, microsecond=0)
    written = style.format(
        h=moment.hour, m=moment.minute, wd=WEEKDAYS[moment.weekday()], d=f"{moment:%d/%m/%Y}"
    )
    assert parse_when(written, ZONE) == (moment.replace(tzinfo=ZONE), None)


# --- the schedule table ------------------------------------------------------------------------


def test_the_sample_schedule_table_gives_its_two_sessions() -> None:
    parsed = article(SAMPLE.read_text(encoding="utf-8"), "2026/11/lich.md")
    assert parsed.event_problems == ()
    first, second = parsed.events
    assert (first.uid, first.start, first.end) == ("1", at(15, 7, 30), None)
    assert first.host == "Chủ tịch UBND tỉnh"
    assert first.location == "Trụ sở Tiếp công dân tỉnh, phường Đông Phong"
    assert first.title == parsed.title and first.status == "confirmed"
    assert (second.uid, second.start, second.host) == ("2", at(17, 14), "Phó Chủ tịch UBND tỉnh")


def test_one_row_that_cannot_be_read_gives_no_event_and_names_the_row() -> None:
    parsed = article(
        table(
            "| 07h30, thứ Ba 15/12/2026 | Chủ tịch | Trụ sở |",
            "| 14h00, thứ Tư 17/12/2026 | Phó Chủ tịch | Trụ sở |",
        )
    )
    assert parsed.events == ()
    [problem] = parsed.event_problems
    assert problem.startswith("schedule table row 2 (14h00, thứ Tư 17/12/2026 | Phó Chủ tịch")
    assert "17/12/2026 is a thứ Năm, not thứ Tư" in problem


def test_a_table_without_a_place_column_is_not_a_schedule() -> None:
    parsed = article(
        table("| 07h30 15/12 | Chủ tịch | x |", head="| Thời gian | Người tiếp | Ghi chú |")
    )
    assert parsed.events == () and parsed.event_problems == ()


def test_a_content_column_titles_the_sessions_and_inline_markup_is_text() -> None:
    parsed = article(
        table(
            "| **07h30**, thứ Ba 15/12/2026 | Họp *giao ban* | Phòng họp số 1 |",
            head="| Thời gian | Nội dung | Địa điểm |",
        )
    )
    [event] = parsed.events
    assert (event.title, event.location, event.host) == ("Họp giao ban", "Phòng họp số 1", None)


# --- front matter ------------------------------------------------------------------------------


def test_front_matter_events_win_over_the_table_and_keep_their_uids() -> None:
    parsed = article(
        HEAD
        + "events:\n"
        + "  - start: 15/12/2026 07:30\n    end: '11:30'\n    location: Trụ sở\n"
        + "    host: Chủ tịch UBND tỉnh\n    uid: tiep-15-12\n"
        + "  - title: Tiếp công dân đột xuất\n    start: 14h00, thứ Năm 17/12/2026\n"
        + "    status: cancelled\n"
        + "---\n"
        + "| Thời gian | Địa điểm |\n|---|---|\n| 07h30 ngày 1/12/2026 | Nơi khác |\n"
    )
    first, second = parsed.events
    assert (first.uid, first.start, first.end) == ("tiep-15-12", at(15, 7, 30), at(15, 11, 30))
    assert first.title == "Lịch tiếp công dân"
    assert (second.uid, second.title, second.status) == ("2", "Tiếp công dân đột xuất", "cancelled")
    assert second.cancelled and second.location is None


def test_an_empty_events_list_turns_the_table_off() -> None:
    text = table("| 07h30, thứ Ba 15/12/2026 | Chủ tịch | Trụ sở |").replace(
        "---\nLịch", "events: []\n---\nLịch"
    )
    assert article(text).events == ()


@pytest.mark.parametrize(
    ("events", "says"),
    [
        ("events: 15/12/2026", "'events' must be a list"),
        ("events:\n  - 15/12/2026", "event 1: must be 'key: value' lines"),
        ("events:\n  - location: Trụ sở", "event 1: has no 'start'"),
        ("events:\n  - start: 2026-12-15\n  - start: hôm nay", "event 2: 'start': cannot read"),
        ("events:\n  - start: 2026-12-15T08:00\n    end: 2026-12-15T07:00", "event 1: 'end'"),
        ("events:\n  - start: 2026-12-15\n    locaton: x", "event 1: unknown key 'locaton'"),
        ("events:\n  - start: 2026-12-15\n    status: hoãn", "must be confirmed or cancelled"),
        ("events:\n  - start: 2026-12-15\n    host: [a, b]", "'host' must be text"),
        (
            "events:\n  - start: 2026-12-15\n    uid: a\n  - start: 2026-12-16\n    uid: a",
            "event 2: uid 'a' is used by an earlier event",
        ),
    ],
)
def test_bad_front_matter_events_name_the_file_and_the_event(events: str, says: str) -> None:
    assert says in failure(HEAD + events + "\n---\nx\n")


def test_the_revision_follows_time_place_and_status_not_wording() -> None:
    [event] = article(
        HEAD + "events:\n  - start: 2026-12-15T07:30\n    location: Trụ sở\n---\nx\n"
    ).events
    assert dataclasses.replace(event, title="Khác", host="Phó Chủ tịch").revision == event.revision
    for changed in (
        dataclasses.replace(event, start=event.start + timedelta(days=1)),
        dataclasses.replace(event, end=event.start + timedelta(hours=2)),
        dataclasses.replace(event, location="Hội trường"),
        dataclasses.replace(event, status="cancelled"),
    ):
        assert changed.revision != event.revision
    one = article(HEAD + "events:\n  - start: 2026-12-15T07:30\n---\nx\n")
    moved = article(HEAD + "events:\n  - start: 2026-12-16T07:30\n---\nx\n")
    assert one.event_revision != moved.event_revision
    assert article(HEAD + "---\nx\n").event_revision == ""


def test_event_uids_are_stable_and_distinct() -> None:
    base = "https://tinh.example.gov.vn"
    one = article(HEAD + "events:\n  - start: 2026-12-15\n  - start: 2026-12-16\n---\nx\n")
    again = article(HEAD + "events:\n  - start: 2026-12-15T09:00\n  - start: 2026-12-17\n---\ny\n")
    uids = [one.event_uid(e, base) for e in one.events]
    assert uids == [again.event_uid(e, base) for e in again.events]  # edits keep them
    assert len(set(uids)) == 2 and all(u.endswith("@tinh.example.gov.vn") for u in uids)
    other = article(HEAD + "events:\n  - start: 2026-12-15\n---\nx\n", "khac.md")
    assert other.event_uid(other.events[0], base) != uids[0]
