"""Article text: Unicode clean-up, Markdown to sanitised HTML, plain-text summaries.

Everything a reader sees passes through here once, at parse time, so feeds, pages and mail
all carry the same safe text: NFC, no XML-illegal characters, HTML cut down to an allowlist.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

import cmarkgfm
import nh3
from cmarkgfm.cmark import Options

# XML 1.0 forbids these; one of them makes lxml refuse a whole feed. DEL and the C1 controls
# are allowed but discouraged, and feed readers (feedparser among them) turn them into cp1252
# characters ("\x80" shows as "€"): they are never meant in an announcement, so they go too.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
_SPACES = re.compile(r"\s+")
_CHAR_REF = re.compile(r"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));")

_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del",
    "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "i", "img", "ins", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub", "sup",
    "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan", "align"},
    "th": {"colspan", "rowspan", "align", "scope"},
    "ol": {"start"},
    "abbr": {"title"},
}
_SCHEMES = {"http", "https", "mailto", "tel"}

# cmark-gfm (C) rather than markdown-it-py: the same CommonMark + tables, 16x faster, and
# Markdown parsing was most of a cold build. Raw HTML passes ("unsafe") into sanitize_html.
_EXTENSIONS = ["table", "strikethrough", "autolink"]  # nh3 removes what tagfilter would escape
_OPTIONS = Options.CMARK_OPT_UNSAFE | Options.CMARK_OPT_VALIDATE_UTF8


def clean_text(text: str) -> str:
    """NFC, LF line endings, no BOM, no XML-illegal control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    return _ILLEGAL.sub("", unicodedata.normalize("NFC", text))


def one_line(text: str) -> str:
    """A clean single-line value (titles, names): whitespace runs become one space."""
    return _SPACES.sub(" ", clean_text(text)).strip()


# One sanitiser made once: nh3.clean() builds its allowlists anew on every call, a third of
# the cost of sanitising an article (64 -> 45 us a 3 KB article).
_SANITIZER = nh3.Cleaner(
    tags=_TAGS,
    attributes=_ATTRIBUTES,
    url_schemes=_SCHEMES,
    link_rel="noopener noreferrer",
    strip_comments=True,
)
_NO_TAGS = nh3.Cleaner(tags=set())


def sanitize_html(markup: str) -> str:
    """Keep safe markup only: no script, no event handlers, no javascript: URLs."""
    return _SANITIZER.clean(markup)


def markdown_to_html(source: str) -> str:
    """CommonMark with tables, raw HTML allowed but sanitised."""
    source = _CHAR_REF.sub(_legal_reference, source)
    try:
        rendered = cmarkgfm.markdown_to_html_with_extensions(source, _OPTIONS, _EXTENSIONS)
    except UnicodeDecodeError:  # cmark wrote bytes that are not UTF-8: show the text as text
        return paragraphs_to_html([p.strip() for p in source.split("\n\n") if p.strip()])
    return sanitize_html(rendered).strip()


def _legal_reference(match: re.Match[str]) -> str:
    """Drop a character reference to a character XML forbids (``&#xFFFE;``, ``&#1;``)."""
    hexa, decimal = match.groups()
    code = int(hexa, 16) if hexa else int(decimal)
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF or _ILLEGAL.match(chr(code)) or code == 0:
        return ""
    return match.group(0)


def paragraphs_to_html(paragraphs: list[str]) -> str:
    """Plain-text paragraphs as escaped <p> elements."""
    return "\n".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)


# Where a browser breaks the line or the cell, the text gets a space: "<td>a</td><td>b</td>"
# and "a<br>b" read "a b", not "ab".
_BREAKS = re.compile(
    r"<(?:br|hr|/?(?:p|div|li|td|th|tr|h[1-6]|blockquote|pre|dd|dt))\b[^>]*>", re.I
)


def html_to_text(markup: str) -> str:
    """The visible text of sanitised HTML, on one line."""
    return one_line(html.unescape(_NO_TAGS.clean(_BREAKS.sub(" ", markup))))


_BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "tr", "blockquote", "pre", "table",
           "dd", "dt", "figcaption", "br", "hr", "div", "ul", "ol"}  # fmt: skip


class _Paragraphs(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []

    def _end_block(self) -> None:
        line = one_line("".join(self.current)).removesuffix(" |").strip()
        if line:
            self.blocks.append(line)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            self.current.append(f" [{alt}] " if alt else " ")
        elif tag in ("br", "hr"):
            self._end_block()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th"):
            self.current.append(" | ")
        elif tag in _BLOCKS:
            self._end_block()

    def handle_data(self, data: str) -> None:
        self.current.append(data)


def html_to_paragraphs(markup: str) -> str:
    """The visible text of sanitised HTML as plain-text paragraphs (a digest's text part in
    full): blocks and table rows on lines of their own, cells separated by " | ", an image by
    its alt text in brackets."""
    parser = _Paragraphs()
    parser.feed(markup)
    parser.close()
    parser._end_block()
    return "\n\n".join(parser.blocks)


def plain_text(text: str) -> str:
    """A field people read, written as plain text: HTML entities in it ("Tin &quot;khẩn&quot;",
    "A &amp; B", as portals export them) become the characters they stand for, once, so that
    feeds and pages escape them exactly once. Anything else, "<mới>" included, is text."""
    if "&" not in text:
        return one_line(text)
    return one_line(html.unescape(text))


def summarize(markup: str, limit: int = 280) -> str:
    """A plain-text summary: the first paragraph with text, cut at a word under ``limit``."""
    for match in re.finditer(r"<p>(.*?)</p>", markup, flags=re.S):
        text = html_to_text(match.group(1))
        if text:
            return shorten(text, limit)
    return shorten(html_to_text(markup), limit)


def shorten(text: str, limit: int) -> str:
    """``text`` cut at a word to at most ``limit`` characters, the ellipsis included."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.-–")
    return cut[: limit - 1] + "…"  # a word longer than the limit is cut inside it
