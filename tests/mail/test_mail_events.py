"""What a digest says about sessions, computed without I/O: the changes since an address got an
article, the label that marks an update, and the SEQUENCE each calendar entry carries."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from service.content.slug import category
from service.mail.events import (
    ADDED,
    CANCELLED,
    DROPPED,
    PLACE,
    TIME,
    changes,
    read_snapshot,
    sequences,
    snapshot,
    tally,
    update_label,
)
from service.model import Article, Event

ICT = timezone(timedelta(hours=7))
START = datetime(2027, 1, 12, 7, 30, tzinfo=ICT)
MORNING = Event("1", "Tiếp công dân", START, START + timedelta(hours=4), "Trụ sở", "Chủ tịch")
AFTERNOON = Event("2", "Tiếp công dân", START + timedelta(days=2, hours=6), None, "Trụ sở")


def article(*events: Event, updated: datetime | None = None) -> Article:
    return Article(
        id="lich-tiep",
        slug="lich-tiep",
        title="Lịch tiếp công dân tháng 01 năm 2027",
        date=datetime(2026, 12, 1, 8, 0, tzinfo=ICT),
        category=category("Lịch tiếp công dân"),
        summary="",
        content_html="",
        source="lich-tiep.md",
        updated=updated,
        events=events,
    )


def test_wording_is_no_change_but_time_place_and_status_are() -> None:
    reworded = replace(MORNING, title="Tiếp công dân định kỳ", host="Phó Chủ tịch")
    assert changes([MORNING, AFTERNOON], [reworded, AFTERNOON]) == []
    moved = replace(
        MORNING, start=START + timedelta(days=1), end=START + timedelta(days=1, hours=4)
    )
    elsewhere = replace(AFTERNOON, location="Hội trường huyện")
    found = changes([MORNING, AFTERNOON], [moved, elsewhere])
    assert [(c.before, c.after, c.what) for c in found] == [
        (MORNING, moved, (TIME,)),
        (AFTERNOON, elsewhere, (PLACE,)),
    ]
    assert update_label(found) == "Cập nhật: thay đổi thời gian và địa điểm"


def test_cancelled_added_and_dropped_sessions_are_named() -> None:
    called_off = replace(MORNING, status="cancelled")
    found = changes([MORNING, AFTERNOON], [called_off])
    assert [(c.event.uid, c.what) for c in found] == [("1", (CANCELLED,)), ("2", (DROPPED,))]
    assert update_label(found) == "Cập nhật: hủy, bỏ buổi"
    found = changes([MORNING], [MORNING, AFTERNOON])
    assert [(c.before, c.after, c.what) for c in found] == [(None, AFTERNOON, (ADDED,))]


def test_sequence_counts_each_significant_revision_of_each_session() -> None:
    moved = replace(MORNING, start=START + timedelta(hours=1))
    reworded = replace(moved, host="Phó Chủ tịch")
    history = [
        ("r1", snapshot([MORNING, AFTERNOON])),
        ("r2", snapshot([moved, AFTERNOON])),
    ]
    assert sequences(history, article(moved, AFTERNOON)) == {"1": 1, "2": 0}
    assert sequences(history, article(reworded, AFTERNOON)) == {"1": 1, "2": 0}
    back = article(MORNING, AFTERNOON)  # moved back: still a new revision for calendars
    assert sequences(history, back) == {"1": 2, "2": 0}
    assert sequences(history, article(moved)) == {"1": 1, "2": 1}  # "2" dropped: cancelled


def test_sequence_never_falls_below_what_the_published_calendars_carry() -> None:
    updated = datetime(2026, 12, 1, 9, 0, tzinfo=ICT)  # an hour after the article's date
    assert sequences([], article(MORNING, updated=updated)) == {"1": 60}


moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC)
)
events = st.builds(
    Event,
    uid=st.text(min_size=1, max_size=8),
    title=st.text(max_size=20),
    start=moments,
    end=st.none() | moments,
    location=st.none() | st.text(max_size=20),
    host=st.none() | st.text(max_size=20),
    status=st.sampled_from(["confirmed", "cancelled"]),
)


@given(st.lists(events, max_size=4))
def test_a_snapshot_reads_back_to_the_same_events(kept: list[Event]) -> None:
    assert read_snapshot(snapshot(kept)) == tuple(kept)


def test_the_tally_names_news_and_updates_apart() -> None:
    assert tally(3, 0) == "3 tin mới"
    assert tally(1, 1) == "1 cập nhật lịch"
    assert tally(3, 1) == "2 tin mới và 1 cập nhật lịch"
