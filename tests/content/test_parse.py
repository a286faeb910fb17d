"""Article text to Articles: dates, YAML traps, bad input, the portal layout, Unicode clean-up."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.content.markup import clean_text
from service.content.parse import parse_date, parse_markdown, parse_portal
from service.content.slug import category
from service.errors import ArticleError
from service.model import Article

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
ICT = timezone(timedelta(hours=7))
SAMPLE = Path("/work/shared/samples/portal-article.txt")
REPO = Path(__file__).resolve().parents[2]


def md(front: str, body: str = "Nội dung.") -> str:
    return f"---\n{front}\n---\n{body}\n"


def parse(front: str, body: str = "Nội dung.", source: str = "2024/bai-viet.md") -> Article:
    return parse_markdown(md(front, body), source, ZONE)


def reason(text: str, source: str = "x.md") -> str:
    with pytest.raises(ArticleError) as caught:
        parse_markdown(text, source, ZONE)
    assert caught.value.path == source
    assert str(caught.value).startswith(f"{source}: ")
    return caught.value.reason


# --- dates ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("2024-05-31", datetime(2024, 5, 31, tzinfo=ICT)),
        ("2024-05-31T08:00", datetime(2024, 5, 31, 8, tzinfo=ICT)),
        ("2024-05-31 08:00:30", datetime(2024, 5, 31, 8, 0, 30, tzinfo=ICT)),
        ("2024-05-31T08:00+07:00", datetime(2024, 5, 31, 8, tzinfo=ICT)),
        ("2024-05-31T01:00Z", datetime(2024, 5, 31, 8, tzinfo=ICT)),
        ("2024-05-31T08:00:00-05:00", datetime(2024, 5, 31, 13, tzinfo=UTC)),
        ("31/05/2024", datetime(2024, 5, 31, tzinfo=ICT)),
        ("1/6/2024", datetime(2024, 6, 1, tzinfo=ICT)),
        ("31/05/2024 08:00", datetime(2024, 5, 31, 8, tzinfo=ICT)),
        ("31/05/2024 8:05", datetime(2024, 5, 31, 8, 5, tzinfo=ICT)),
        ("  26/7/2021  ", datetime(2021, 7, 26, tzinfo=ICT)),
    ],
)
def test_parse_date_accepts_every_documented_form(written: str, expected: datetime) -> None:
    parsed = parse_date(written, ZONE)
    assert parsed.tzinfo is not None
    assert parsed == expected


def test_naive_dates_are_in_the_site_zone_not_utc() -> None:
    parsed = parse_date("2024-05-31T08:00", ZONE)
    assert parsed.utcoffset() == timedelta(hours=7)
    assert parsed.astimezone(UTC).hour == 1
    other = parse_date("2024-05-31T08:00", ZoneInfo("Europe/Paris"))
    assert other.astimezone(UTC).hour == 6


@pytest.mark.parametrize(
    "written",
    ["", "hôm qua", "31/02/2024", "2024-13-01", "32/01/2024", "31/05/2024 25:00", "2024/05/31",
     "0001-01-01T00:00+14:00", "9999-12-31T23:59-12:00", "31/12/0001"],
)  # fmt: skip
def test_parse_date_refuses_with_a_value_error(written: str) -> None:
    with pytest.raises(ValueError):
        parse_date(written, ZONE)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_date_on_any_text_returns_aware_or_raises_value_error(text: str) -> None:
    try:
        parsed = parse_date(text, ZONE)
    except ValueError:
        return
    assert parsed.tzinfo is not None
    parsed.astimezone(UTC)  # must not overflow: feeds and sorting convert to UTC
    parsed.astimezone(ZONE)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(8999, 12, 30)),
    st.sampled_from(["iso", "iso-offset", "vn", "vn-time", "date"]),
)
def test_parse_date_round_trips_every_form(moment: datetime, form: str) -> None:
    moment = moment.replace(second=0, microsecond=0)
    if form == "iso":
        written, expected = moment.isoformat(), moment.replace(tzinfo=ZONE)
    elif form == "iso-offset":
        written, expected = moment.replace(tzinfo=UTC).isoformat(), moment.replace(tzinfo=UTC)
    elif form == "vn":
        written = f"{moment.day}/{moment.month}/{moment.year:04d}"
        expected = datetime(moment.year, moment.month, moment.day, tzinfo=ZONE)
    elif form == "vn-time":
        written = f"{moment.day:02d}/{moment.month:02d}/{moment.year:04d} {moment:%H:%M}"
        expected = moment.replace(tzinfo=ZONE)
    else:
        written = moment.date().isoformat()
        expected = datetime(moment.year, moment.month, moment.day, tzinfo=ZONE)
    assert parse_date(written, ZONE) == expected


def test_front_matter_dates_in_each_form() -> None:
    for written in ("2024-05-31", "2024-05-31T08:00:00+07:00", "31/05/2024", "31/05/2024 08:00"):
        article = parse(f"title: Bài\ndate: {written}")
        assert article.date.date().isoformat() == "2024-05-31"
        assert article.date.utcoffset() == timedelta(hours=7)
    updated = parse("title: Bài\ndate: 2024-05-31\nupdated: 01/06/2024 09:15")
    assert updated.updated == datetime(2024, 6, 1, 9, 15, tzinfo=ICT)
    assert updated.modified == updated.updated


# --- YAML 1.1 traps and front matter values -----------------------------------------------------


def test_yaml_scalars_stay_as_written() -> None:
    article = parse(
        "title: 0123\ndate: 2024-05-31\nauthor: NO\nsummary: 1.10\ncategory: yes\n"
        "tags: [NO, 1.10, 0x1F, ~x]"
    )
    assert article.title == "0123"
    assert article.author == "NO"
    assert article.summary == "1.10"
    assert article.category.name == "yes"
    assert article.tags == ("NO", "1.10", "0x1F", "~x")
    assert article.date == datetime(2024, 5, 31, tzinfo=ICT)  # not a naive YAML date


def test_yaml_numbers_and_sexagesimal_stay_text() -> None:
    article = parse("title: 1:30\ndate: 2024-05-31\nid: 1e3\nslug: 010")
    assert article.title == "1:30"
    assert article.id == "1e3"
    assert article.slug == "010"


_SCALAR = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufeff"),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() and s == s.strip())


@settings(max_examples=200, deadline=None)
@given(_SCALAR)
def test_any_quoted_title_round_trips(title: str) -> None:
    escaped = title.replace("\\", "\\\\").replace('"', '\\"')
    article = parse(f'title: "{escaped}"\ndate: 2024-05-31')
    assert article.title == " ".join(unicodedata.normalize("NFC", title).split())


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_front_matter_with_any_value_is_an_article_or_an_article_error(value: str) -> None:
    text = f"---\ntitle: {value}\ndate: {value}\ntags: {value}\ndraft: {value}\n---\nx\n"
    try:
        article = parse_markdown(text, "h.md", ZONE)
    except ArticleError as exc:
        assert exc.path == "h.md"
        assert exc.reason
        return
    assert article.title
    assert article.date.tzinfo is not None
    for field in (article.title, article.summary, article.content_html, *article.tags):
        assert field == clean_text(field)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("---\ndate: 2024-05-31\n---\nx", "title"),
        ("---\ntitle: ''\ndate: 2024-05-31\n---\nx", "title"),
        ("---\ntitle: ~\ndate: 2024-05-31\n---\nx", "title"),
        ("---\ntitle: Bài\n---\nx", "date"),
        ("---\ntitle: Bài\ndate: hôm qua\n---\nx", "date"),
        ("---\ntitle: Bài\ndate: 31/02/2024\n---\nx", "date"),
        ("---\ntitle: Bài\ndate: 2024-05-31\nupdated: sau\n---\nx", "updated"),
        ("---\ntitle: [Bài\ndate: 2024-05-31\n---\nx", "YAML"),
        ("---\ntitle: Bài\n  date: : :\n---\nx", "YAML"),
        ("---\n- a\n- b\n---\nx", "key: value"),
        ("---\ntitle: [a, b]\ndate: 2024-05-31\n---\nx", "title"),
        ("---\ntitle: {a: b}\ndate: 2024-05-31\n---\nx", "title"),
        ("---\ntitle: Bài\ndate: 2024-05-31\ndraft: maybe\n---\nx", "draft"),
        ("---\ntitle: Bài\ndate: 2024-05-31\ntags: {a: b}\n---\nx", "tags"),
        ("---\ntitle: Bài\ndate: 2024-05-31\nurl: javascript:alert(1)\n---\nx", "url"),
        ("---\ntitle: Bài\ndate: 2024-05-31\nurl: /relative\n---\nx", "url"),
        ("---\ntitle: Bài\ndate: 2024-05-31\nslug: '!!!'\n---\nx", "slug"),
        ("---\ntitle: !!python/object:os.system x\ndate: 2024-05-31\n---\nx", "YAML"),
        ("", "empty"),
        ("  \n\n\t\n", "empty"),
        ("\ufeff", "empty"),
        ("title: Bài\ndate: 2024-05-31\n\nx", "front matter"),
        ("---\ntitle: Bài\ndate: 2024-05-31\nno closing line\n", "front matter"),
    ],
)
def test_bad_articles_are_article_errors_naming_the_problem(text: str, needle: str) -> None:
    assert needle.lower() in reason(text).lower()


def test_broken_yaml_names_the_line() -> None:
    assert "(line 3)" in reason("---\ntitle: Bài\ndate: a: b\n---\nx")


def test_yaml_billion_laughs_is_refused_without_expanding() -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    assert "tags" in reason(f"---\n{laughs}title: Bài\ndate: 2024-05-31\ntags: *i\n---\nx\n")


def test_yaml_billion_laughs_tags_are_refused() -> None:
    text = "---\na: &a [x, x]\nb: &b [*a, *a]\ntitle: Bài\ndate: 2024-05-31\ntags: *b\n---\nx\n"
    assert "tags" in reason(text)


@pytest.mark.parametrize(
    ("value", "draft"),
    [("true", True), ("yes", True), ("on", True), ("có", True), ("True", True),
     ("false", False), ("no", False), ("NO", False), ("off", False), ("không", False)],
)  # fmt: skip
def test_draft_flags(value: str, draft: bool) -> None:
    assert parse(f"title: Bài\ndate: 2024-05-31\ndraft: {value}").draft is draft


def test_draft_missing_is_not_a_draft() -> None:
    assert parse("title: Bài\ndate: 2024-05-31").draft is False


def test_tags_as_list_or_comma_text() -> None:
    assert parse("title: B\ndate: 2024-05-31\ntags: [covid, y tế]").tags == ("covid", "y tế")
    assert parse("title: B\ndate: 2024-05-31\ntags: covid, y tế,").tags == ("covid", "y tế")
    assert parse("title: B\ndate: 2024-05-31\ntags:\n  - a\n  - ' b '").tags == ("a", "b")


def test_identity_and_slug_from_the_path_or_front_matter() -> None:
    plain = parse("title: B\ndate: 2024-05-31", source="2024/05/Lịch tiếp công dân.md")
    assert plain.id == "2024/05/Lịch tiếp công dân"
    assert plain.slug == "lich-tiep-cong-dan"
    assert plain.source == "2024/05/Lịch tiếp công dân.md"
    own = parse(
        "title: B\ndate: 2024-05-31\nid: thong-bao-42\nslug: Đường Điện Biên",
        source="2024/x.md",
    )
    assert own.id == "thong-bao-42"
    assert own.slug == "duong-dien-bien"


def test_slug_cannot_escape_the_output_directory() -> None:
    article = parse("title: B\ndate: 2024-05-31\nslug: ../../etc/passwd")
    assert "/" not in article.slug
    assert ".." not in article.slug


def test_long_slugs_and_categories_fit_a_file_name() -> None:
    article = parse(f"title: B\ndate: 2024-05-31\nslug: {'đường ' * 200}\ncategory: {'x' * 400}")
    assert 0 < len(article.slug.encode()) <= 100
    assert article.slug.startswith("duong-duong")
    assert 0 < len(article.category.slug.encode()) <= 100


def test_vietnamese_slugify() -> None:
    assert category("Lịch tiếp công dân").slug == "lich-tiep-cong-dan"
    assert category("Đảng ủy, đoàn thể").slug == "dang-uy-doan-the"
    assert category("đ").slug == "d"
    assert category("Tin tức").slug == "tin-tuc"
    assert category("!!!").slug == "khac"


def test_category_default_and_author_optional() -> None:
    article = parse("title: B\ndate: 2024-05-31")
    assert article.category.name == "Tin tức"
    assert article.category.slug == "tin-tuc"
    assert article.author is None
    assert article.url is None


def test_summary_from_the_first_paragraph_when_missing() -> None:
    article = parse("title: B\ndate: 2024-05-31", "# Heading\n\nFirst *para* &amp; text.\n\nTwo.")
    assert article.summary == "First para & text."
    long = parse("title: B\ndate: 2024-05-31", "từ " * 500)
    assert len(long.summary) <= 281
    assert long.summary.endswith("…")


# --- Unicode ---------------------------------------------------------------------------------


def test_nfd_input_becomes_nfc_everywhere() -> None:
    title = unicodedata.normalize("NFD", "Lịch tiếp công dân")
    body = unicodedata.normalize("NFD", "Nội dung tiếng Việt")
    article = parse(f"title: {title}\ndate: 2024-05-31\ncategory: {title}", body)
    assert title != "Lịch tiếp công dân"  # the input really is decomposed
    assert article.title == "Lịch tiếp công dân"
    assert article.category.name == "Lịch tiếp công dân"
    assert article.category.slug == "lich-tiep-cong-dan"
    assert "Nội dung tiếng Việt" in article.content_html
    for field in (article.title, article.summary, article.content_html):
        assert unicodedata.is_normalized("NFC", field)


def test_xml_illegal_characters_are_removed() -> None:
    dirty = "A\x00B\x01C\x08D\x0bE\x0cF\x1fG\ufffeH\uffffI"
    article = parse(
        f'title: "{dirty.encode("unicode_escape").decode()}"\ndate: 2024-05-31\n'
        f"author: Nga\x07\nsummary: Tóm\x1b tắt",
        "Thân\x00 bài\x0c. &#xFFFE; &#x1;",
    )
    assert article.title == "ABCDEFGHI"
    assert article.author == "Nga"
    assert article.summary == "Tóm tắt"
    for field in (article.title, article.summary, article.content_html):
        assert not any(c in field for c in "\x00\x01\x07\x08\x0b\x0c\x1b\x1f\ufffe\uffff")


def test_bom_and_crlf_are_fine() -> None:
    text = "\ufeff---\r\ntitle: Bài\r\ndate: 2024-05-31\r\n---\r\nMột\r\n\r\nHai\r\n"
    article = parse_markdown(text, "x.md", ZONE)
    assert article.title == "Bài"
    assert "\r" not in article.content_html
    assert article.content_html == "<p>Một</p>\n<p>Hai</p>"


# --- sanitising ------------------------------------------------------------------------------


def test_body_html_is_sanitised() -> None:
    article = parse(
        "title: B\ndate: 2024-05-31",
        "<script>alert(1)</script>\n\n<img src=x.png onerror=alert(1)>\n\n"
        "[md](javascript:alert(1)) <a href='JaVaScRiPt:alert(2)'>raw</a> "
        "<a href='java&#x09;script:alert(3)'>tab</a> <a href=\"https://ok.vn\" onclick=x>ok</a>"
        "\n\n<iframe src=https://evil></iframe><style>p{}</style><p style='x'>s</p>"
        "\n\n| a | b |\n|---|---|\n| 1 | **2** |\n",
    )
    html = article.content_html
    for bad in ("<script", "alert(1)</script", "onerror", "onclick", 'href="javascript',
                "<iframe", "<style", "style="):  # fmt: skip
        assert bad.lower() not in html.lower()
    assert "<table>" in html
    assert "<td><strong>2</strong></td>" in html
    assert '<img src="x.png">' in html
    assert 'href="https://ok.vn"' in html


# --- the portal layout -----------------------------------------------------------------------


def test_portal_sample() -> None:
    article = parse_portal(SAMPLE.read_text(encoding="utf-8"), "2021/vp.txt", ZONE)
    assert article.category.name == "Tin tức sự kiện"
    assert article.category.slug == "tin-tuc-su-kien"
    assert article.date == datetime(2021, 7, 26, tzinfo=ICT)
    assert article.title == (
        "Văn phòng UBND tỉnh: Đáp ứng yêu cầu ngày càng cao trong tình hình mới"
    )
    assert article.author == "Nguyễn Nga"
    assert article.id == "2021/vp"
    assert article.slug == "vp"
    body = article.content_html
    assert body.startswith("<p>Phát huy truyền thống đoàn kết")
    assert "Cờ thi đua năm 2018" in body
    assert "tình hình mới.</p>" in body
    for chrome in ("print", "send mail", "Các tin đã đăng", "Bluezone", "Nguyễn Nga"):
        assert chrome not in body
    assert article.summary.startswith("Phát huy truyền thống")
    assert "<p></p>" not in body


def test_portal_sample_in_content_is_the_same_article() -> None:
    copy = REPO / "content/2021/van-phong-ubnd-tinh-dap-ung-yeu-cau.txt"
    article = parse_portal(copy.read_text(encoding="utf-8"), "x.txt", ZONE)
    assert article.author == "Nguyễn Nga"
    assert article.category.name == "Tin tức sự kiện"


def test_portal_escapes_markup_in_plain_text() -> None:
    text = (
        "Thông báo\nThứ hai 26/7/2021\nTiêu đề <b>x</b>\n\nĐoạn <script>alert(1)</script> & hết.\n"
    )
    article = parse_portal(text, "p.txt", ZONE)
    assert article.title == "Tiêu đề <b>x</b>"  # plain text: escaped where it enters HTML
    assert "<script>" not in article.content_html
    assert "&lt;script&gt;" in article.content_html
    assert "&amp; hết." in article.content_html


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("\n  \n", "empty"),
        ("Tin tức\nThứ hai 26/7/2021\n", "title"),
        ("Tin tức\nThứ hai\nTiêu đề\nThân bài.\n", "date"),
        ("Tin tức\nThứ hai 31/2/2021\nTiêu đề\nThân bài.\n", "second line"),
    ],
)
def test_bad_portal_pages(text: str, needle: str) -> None:
    with pytest.raises(ArticleError) as caught:
        parse_portal(text, "p.txt", ZONE)
    assert caught.value.path == "p.txt"
    assert needle in caught.value.reason


def test_portal_nfd_and_crlf() -> None:
    text = unicodedata.normalize("NFD", "Tin tức\r\nChủ nhật 1/8/2021\r\nTiêu đề\r\nMột.\r\n")
    article = parse_portal(text, "p.txt", ZONE)
    assert article.category.name == "Tin tức"
    assert article.title == "Tiêu đề"
    assert article.content_html == "<p>Một.</p>"
    assert article.date == datetime(2021, 8, 1, tzinfo=ICT)


def test_c1_controls_and_del_are_removed() -> None:
    # feedparser shows "\x80" as "€": a mis-decoded cp1252 byte, never meant in the text
    article = parse('title: "A\\x80B\\x9fC\\x7fD"\ndate: 2024-05-31', "x\x85y\x9b")
    assert article.title == "ABCD"
    assert article.content_html == "<p>xy</p>"


def test_a_misspelt_title_is_named_with_the_key_that_was_meant() -> None:
    got = reason(md("tittle: Thông báo\ndate: 2024-05-31"))
    assert "'tittle' is not a front-matter key; did you mean 'title'?" in got
    assert "has no 'title'" not in got  # one problem, said once, with its fix


def test_every_problem_of_an_article_is_reported_at_once() -> None:
    got = reason(md("date: 31/02/2024\ndraft: maybe\ntags: {a: 1}\nurl: ftp://x\nsumary: x"))
    for part in (
        "has no 'title'",
        "'date'",
        "'draft' must be true or false",
        "'tags' must be a list",
        "'url' 'ftp://x' must be an absolute",
        "did you mean 'summary'?",
    ):
        assert part in got, got
    assert "has no 'date'" not in got  # the date is there, only wrong


def test_keys_of_the_office_own_are_left_alone() -> None:
    assert parse("title: T\ndate: 2024-05-31\nnguoi_duyet: Trưởng phòng").title == "T"
