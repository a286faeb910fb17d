"""Article text: clean-up, sanitising, Markdown, and the plain-text summaries.

Everything a reader sees passes through markup.py once, so a hole here is a hole in every feed,
page and email. The sanitiser is also checked against the stdlib's HTML parser on generated
mixtures of hostile fragments: whatever nh3 is given, what comes out parses to allowed tags
and attributes only.
"""

from __future__ import annotations

import unicodedata
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.content.markup import (
    clean_text,
    html_to_text,
    markdown_to_html,
    one_line,
    paragraphs_to_html,
    sanitize_html,
    shorten,
    summarize,
)

# --- clean_text and one_line ----------------------------------------------------------------


def test_clean_text_normalises_line_endings_and_drops_the_bom() -> None:
    assert clean_text("\ufeffdòng một\r\ndòng hai\rdòng ba\n") == "dòng một\ndòng hai\ndòng ba\n"
    assert clean_text("giữa\ufeffchừng") == "giữa\ufeffchừng"  # only a leading BOM is one


def test_clean_text_composes_decomposed_vietnamese() -> None:
    decomposed = unicodedata.normalize("NFD", "Ủy ban nhân dân tỉnh")
    assert decomposed != "Ủy ban nhân dân tỉnh"
    assert clean_text(decomposed) == "Ủy ban nhân dân tỉnh"


@pytest.mark.parametrize("bad", ["\x00", "\x08", "\x0b", "\x0c", "\x1f", "\x7f", "\x85", "\x9f"])
def test_clean_text_removes_characters_xml_forbids_or_readers_garble(bad: str) -> None:
    assert clean_text(f"a{bad}b") == "ab"


def test_clean_text_keeps_tabs_newlines_and_ordinary_text() -> None:
    text = "Cột\tgiá trị\n€ 100 — “trích dẫn”"
    assert clean_text(text) == text
    assert clean_text("x\ufffey\uffffz") == "xyz"


@given(st.text())
def test_clean_text_is_idempotent_and_leaves_nothing_illegal(text: str) -> None:
    cleaned = clean_text(text)
    assert clean_text(cleaned) == cleaned
    assert "\r" not in cleaned
    assert not any(
        (ord(c) < 0x20 and c not in "\t\n") or 0x7F <= ord(c) <= 0x9F or c in "\ufffe\uffff"
        for c in cleaned
    )


def test_one_line_collapses_whitespace_and_cleans() -> None:
    assert one_line("  Lịch \n\t tiếp\u00a0 công\x00 dân  ") == "Lịch tiếp công dân"
    assert one_line("\n\n") == ""


@given(st.text())
def test_one_line_has_no_line_breaks_or_double_spaces(text: str) -> None:
    line = one_line(text)
    assert "\n" not in line and "  " not in line
    assert line == line.strip()


# --- sanitize_html ----------------------------------------------------------------------------

ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "rel"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "ol": {"start"},
    "abbr": {"title"},
}
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del",
    "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub", "sup",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip


class Tags(HTMLParser):
    """Every start tag with its attributes, values unescaped as a browser would read them."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(markup)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def assert_safe(markup: str) -> None:
    for tag, attrs in Tags(markup).tags:
        assert tag in ALLOWED_TAGS, (tag, markup)
        assert set(attrs) <= ALLOWED_ATTRIBUTES.get(tag, set()), (tag, attrs, markup)
        for name in ("href", "src"):
            url = (attrs.get(name) or "").strip()
            scheme = urlsplit(url).scheme.lower() if ":" in url else ""
            assert scheme in ("", "http", "https", "mailto", "tel"), (url, markup)


def test_scripts_styles_and_frames_are_removed_with_their_content() -> None:
    cleaned = sanitize_html(
        "<p>Trước<script>alert('x')</script><style>p{color:red}</style>"
        '<iframe src="https://e.example"></iframe><object data="x"></object>Sau</p>'
    )
    assert cleaned == "<p>TrướcSau</p>"


def test_event_handlers_and_styles_are_removed_from_kept_tags() -> None:
    cleaned = sanitize_html(
        '<p onclick="steal()" style="x">Xin <b onmouseover="x">chào</b>'
        '<img src="https://a.vn/anh.png" alt="Ảnh" onerror="alert(1)"></p>'
    )
    assert cleaned == '<p>Xin <b>chào</b><img src="https://a.vn/anh.png" alt="Ảnh"></p>'


@pytest.mark.parametrize(
    "href",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java&#x09;script:alert(1)",
        "&#106;avascript:alert(1)",
        "vbscript:msgbox(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
    ],
)
def test_dangerous_urls_lose_their_href(href: str) -> None:
    cleaned = sanitize_html(f'<a href="{href}">bấm</a>')
    assert cleaned == '<a rel="noopener noreferrer">bấm</a>'


@pytest.mark.parametrize(
    "href", ["https://tinh.example.gov.vn/x?a=1&amp;b=2", "http://a.vn", "mailto:a@b.vn", "/tin"]
)
def test_safe_urls_are_kept_with_noopener(href: str) -> None:
    assert sanitize_html(f'<a href="{href}" target="_blank">x</a>') == (
        f'<a href="{href}" rel="noopener noreferrer">x</a>'
    )


def test_allowed_structure_is_kept() -> None:
    markup = (
        '<h2>Lịch</h2><table><thead><tr><th scope="col">Ngày</th></tr></thead>'
        '<tbody><tr><td colspan="2" align="center">1/12</td></tr></tbody></table>'
        '<ol start="3"><li><em>a</em> <strong>b</strong> <code>c</code></li></ol>'
        '<blockquote><abbr title="Ủy ban nhân dân">UBND</abbr></blockquote>'
    )
    assert sanitize_html(markup) == markup


def test_comments_are_dropped() -> None:
    assert sanitize_html("<p>a<!-- <script>x</script> -->b</p>") == "<p>ab</p>"


FRAGMENTS = [
    "<script>alert(1)</script>", "<script", "</script>", "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">', '<a href="JAVASCRIPT:x">', "<a href=java&#115;cript:x>",
    "<svg onload=alert(1)>", "<iframe src=//e.example>", "<style>*{}</style>", "<p",
    ">", '"', "'", "=", " onclick=alert(1) ", "<b>", "</b>", "chữ", "&lt;", "&#0;", "<!--",
    "-->", "<math><mi xlink:href=javascript:x>", "<form action=javascript:x>", "<input",
    "<td style=x colspan=2>", "<a title='a\" onmouseover=x'>", "<base href=//e>", "<meta",
]  # fmt: skip


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join))
def test_whatever_goes_in_only_allowed_markup_comes_out(markup: str) -> None:
    cleaned = sanitize_html(markup)
    assert_safe(cleaned)
    assert sanitize_html(cleaned) == cleaned


# --- markdown_to_html ---------------------------------------------------------------------------


def test_markdown_tables_become_html_tables() -> None:
    html = markdown_to_html(
        "| Ngày | Giờ | Người tiếp |\n|---|:-:|--:|\n| 1/12 | 8:00 | Chủ tịch |\n"
    )
    assert [(tag, attrs) for tag, attrs in Tags(html).tags] == [
        ("table", {}),
        ("thead", {}),
        ("tr", {}),
        ("th", {}),
        ("th", {"align": "center"}),
        ("th", {"align": "right"}),
        ("tbody", {}),
        ("tr", {}),
        ("td", {}),
        ("td", {"align": "center"}),
        ("td", {"align": "right"}),
    ]
    assert "<td>1/12</td>" in html and "<th>Ngày</th>" in html


def test_markdown_basics_links_and_strikethrough() -> None:
    html = markdown_to_html("# Tiêu đề\n\nĐoạn **đậm** và ~~xoá~~, xem https://a.vn.\n")
    assert html == (
        "<h1>Tiêu đề</h1>\n<p>Đoạn <strong>đậm</strong> và <del>xoá</del>, xem "
        '<a href="https://a.vn" rel="noopener noreferrer">https://a.vn</a>.</p>'
    )


def test_raw_html_in_markdown_is_sanitised() -> None:
    html = markdown_to_html(
        'Chữ <span onclick="x()">ở giữa</span>.\n\n<script>alert(1)</script>\n\n'
        '[bấm](javascript:alert(1)) <a href="javascript:alert(2)">nữa</a>\n'
    )
    assert "script" not in html and "onclick" not in html and "javascript" not in html
    assert "<span>ở giữa</span>" in html
    assert_safe(html)


def test_code_is_escaped_not_interpreted() -> None:
    html = markdown_to_html("```\n<script>alert(1)</script>\n```\n")
    assert html == "<pre><code>&lt;script&gt;alert(1)&lt;/script&gt;\n</code></pre>"


def test_references_to_illegal_characters_are_dropped_and_legal_ones_kept() -> None:
    html = markdown_to_html("a&#1;b&#xFFFE;c&#55296;d&#99999999;e&#x41;f&#0;g")
    assert html == "<p>abcdeAfg</p>"


def test_paragraphs_to_html_escapes() -> None:
    assert paragraphs_to_html(["a < b & c", "<b>x</b>"]) == (
        "<p>a &lt; b &amp; c</p>\n<p>&lt;b&gt;x&lt;/b&gt;</p>"
    )


# --- plain text: html_to_text, summarize, shorten --------------------------------------------


def test_html_to_text_is_the_visible_text_on_one_line() -> None:
    assert html_to_text("<p>Ủy ban &amp; <b>nhân</b>\n  dân</p>") == "Ủy ban & nhân dân"
    assert html_to_text("<p>&lt;tỉnh&gt; &quot;A&quot;</p>") == '<tỉnh> "A"'
    assert html_to_text("<script>x</script>chữ") == "chữ"


def test_summary_is_the_first_paragraph_with_text() -> None:
    markup = "<h1>Tiêu đề</h1>\n<p> </p>\n<p>Một <b>câu</b> tóm tắt.</p>\n<p>Câu hai.</p>"
    assert summarize(markup) == "Một câu tóm tắt."


def test_summary_without_paragraphs_uses_all_the_text() -> None:
    assert summarize(markdown_to_html("- một\n- hai\n")) == "một hai"
    assert summarize("") == ""


def test_a_long_summary_is_cut_at_a_word() -> None:
    paragraph = "Ủy ban nhân dân tỉnh thông báo lịch tiếp công dân định kỳ, " * 10
    summary = summarize(f"<p>{paragraph}</p>", limit=100)
    assert summary.endswith("…") and len(summary) <= 100
    assert paragraph.startswith(summary[:-1])
    assert paragraph[len(summary) - 1] in " ,"  # the cut fell between words


def test_shorten() -> None:
    assert shorten("ngắn", 10) == "ngắn"
    assert shorten("x" * 10, 10) == "x" * 10
    assert shorten("Ủy ban nhân dân tỉnh thông báo, lịch tiếp", 22) == "Ủy ban nhân dân tỉnh…"
    assert shorten("thông báo, lịch tiếp", 12) == "thông báo…"  # no dangling comma
    assert shorten("một hai. ba", 9) == "một hai…"


@given(
    st.lists(st.text(alphabet="aăâbcdđêơưỦ.,;", min_size=1, max_size=12), min_size=1).map(" ".join),
    st.integers(min_value=2, max_value=80),
)
def test_shorten_never_exceeds_the_limit_when_it_can_cut_at_a_space(text: str, limit: int) -> None:
    result = shorten(text, limit)
    if len(text) <= limit:
        assert result == text
    elif " " in text[1:limit]:
        assert len(result) <= limit and result.endswith("…")
        assert text.startswith(result[:-1])


def test_shorten_cuts_inside_a_word_longer_than_the_limit() -> None:
    assert shorten("x" * 300, 280) == "x" * 279 + "…"


def test_cells_and_line_breaks_keep_their_words_apart() -> None:
    assert html_to_text("<table><tr><td>Sáng</td><td>Chiều</td></tr></table>") == "Sáng Chiều"
    assert html_to_text("Dòng một<br>dòng hai<p>Đoạn</p><p>khác</p>") == (
        "Dòng một dòng hai Đoạn khác"
    )
