"""Article files' text to Articles: Markdown with front matter, and the portal's text layout.

Pure functions: text in, Article out, ArticleError for anything a person must fix. The caller
(sources) does the reading; ``zone`` is the site's time zone for dates written without one.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import yaml

from service.content.events import events_from_front_matter, events_from_table
from service.content.markup import (
    clean_text,
    markdown_to_html,
    one_line,
    paragraphs_to_html,
    plain_text,
    shorten,
    summarize,
)
from service.content.slug import category, make_slug
from service.errors import ArticleError
from service.model import Article

DEFAULT_CATEGORY = "Tin tức"
# Far-off years are typos, and near the ends of datetime's range converting to UTC or to the
# site's zone overflows, which would stop sorting, feeds and pages for every article.
YEARS = range(1900, 9000)


class _StringLoader(yaml.CSafeLoader):
    """YAML that keeps scalars as written: no 0123 -> 83, NO -> False, 1.10 -> 1.1, naive dates."""


_StringLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.CSafeLoader.yaml_implicit_resolvers.items()
}

_FRONT = re.compile(r"\A---[ \t]*\n(.*?)^(?:---|\.\.\.)[ \t]*$\n?", re.S | re.M)
_VN_DATE = re.compile(
    r"(?P<d>\d{1,2})/(?P<m>\d{1,2})/(?P<y>\d{4})"
    r"(?:[ T,]+(?:lúc\s*)?(?P<H>\d{1,2})[:hg](?P<M>\d{2})?(?::(?P<S>\d{2}))?)?"
)
_TRUE = {"true", "yes", "on", "1", "có"}
_FALSE = {"false", "no", "off", "0", "không", ""}


def parse_date(value: str, zone: ZoneInfo) -> datetime:
    """ISO 8601 dates and datetimes, or Vietnamese dd/mm/yyyy [HH:MM]; naive means ``zone``."""
    text = value.strip()
    match = _VN_DATE.fullmatch(text)
    if match:
        day, month, year = int(match["d"]), int(match["m"]), int(match["y"])
        hour, minute, second = int(match["H"] or 0), int(match["M"] or 0), int(match["S"] or 0)
        return _in_range(datetime(year, month, day, hour, minute, second, tzinfo=zone), value)
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), time(), tzinfo=zone)
        else:
            parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date; write 2024-05-31, 2024-05-31T08:00+07:00 or 31/05/2024 08:00"
        ) from None
    return _in_range(parsed if parsed.tzinfo else parsed.replace(tzinfo=zone), value)


def _in_range(value: datetime, written: str) -> datetime:
    if value.year not in YEARS:
        raise ValueError(
            f"{written!r}: the year must be between {YEARS.start} and {YEARS.stop - 1}"
        )
    return value


def parse_markdown(text: str, source: str, zone: ZoneInfo) -> Article:
    """A Markdown file with YAML front matter; ``source`` is its path relative to the root."""
    text = clean_text(text)
    if not text.strip():
        raise ArticleError(source, "the file is empty; write the article or delete the file")
    match = _FRONT.match(text)
    if not match:
        raise ArticleError(
            source,
            "no front matter; start the file with a '---' line, then 'title:' and 'date:', "
            "then another '---'",
        )
    try:
        meta = yaml.load(match.group(1), Loader=_StringLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # the line number an editor shows: the opening '---' is line 1 of the file
        where = f" (line {mark.line + 2})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise ArticleError(source, f"front matter is not valid YAML{where}: {problem}") from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise ArticleError(source, "front matter must be 'key: value' lines")
    body = text[match.end() :]
    content = markdown_to_html(body)
    return _article(meta, source, zone, content)


def parse_portal(text: str, source: str, zone: ZoneInfo) -> Article:
    """The portal's plain-text page: section, date line, title, paragraphs, author, page chrome."""
    text = clean_text(text)
    lines = [line.strip() for line in text.split("\n")]
    filled = [line for line in lines if line]
    if not filled:
        raise ArticleError(source, "the file is empty; write the article or delete the file")
    if len(filled) < 3:
        raise ArticleError(
            source, "a portal page needs a section line, a date line and a title line"
        )
    section, date_line, title = (one_line(x) for x in filled[:3])
    found = _VN_DATE.search(date_line)
    if not found:
        raise ArticleError(
            source,
            f"second line {date_line!r} has no date; write it like 'Thứ hai 26/7/2021'",
        )
    try:
        published = parse_date(found.group(0), zone)
    except ValueError as exc:
        raise ArticleError(source, f"second line: {exc}") from None
    body: list[str] = []
    for line in filled[3:]:
        if _is_chrome(line):
            break
        body.append(one_line(line))
    author = None
    if len(body) >= 2 and _looks_like_name(body[-1]):
        author = body.pop()
    content = paragraphs_to_html(body)
    meta: dict[str, Any] = {"title": title, "category": section, "author": author}
    return _article(meta, source, zone, content, published=published)


def _is_chrome(line: str) -> bool:
    flat = " ".join(line.split()).casefold()
    return flat in ("print send mail", "in gửi mail", "các tin đã đăng", "các tin khác")


def _looks_like_name(line: str) -> bool:
    return (
        len(line) <= 60 and len(line.split()) <= 6 and not line.endswith((".", "!", "?", ":", "…"))
    )


def _article(
    meta: dict[Any, Any],
    source: str,
    zone: ZoneInfo,
    content: str,
    published: datetime | None = None,
) -> Article:
    def text(key: str) -> str | None:
        value = meta.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ArticleError(source, f"'{key}' must be text, not a list or mapping")
        return one_line(value) or None

    def when(key: str) -> datetime | None:
        value = text(key)
        if value is None:
            return None
        try:
            return parse_date(value, zone)
        except ValueError as exc:
            raise ArticleError(source, f"'{key}': {exc}") from None

    def words(key: str) -> str | None:
        """A field people read (title, summary, author, category): plain text, its entities
        decoded (feeds and pages then escape it once, as they must)."""
        value = text(key)
        return plain_text(value) or None if value is not None else None

    title = words("title")
    if not title:
        raise ArticleError(source, "front matter has no 'title'; add one")
    date_value = published or when("date")
    if date_value is None:
        raise ArticleError(source, "front matter has no 'date'; add one, like 'date: 2024-05-31'")
    stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    slug_text = text("slug")
    slug = make_slug(slug_text or stem)
    if not slug:
        raise ArticleError(
            source, f"cannot make a URL slug from {slug_text or stem!r}; add 'slug:'"
        )
    url = text("url")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ArticleError(source, f"'url' {url!r} must be an absolute http(s) URL")
        if any(c.isspace() or not c.isprintable() for c in url):
            raise ArticleError(
                source,
                f"'url' {url!r} has spaces in it; write a space as %20 "
                "(copy the link from the browser's address bar)",
            )
    summary = words("summary")
    event_problems: tuple[str, ...] = ()
    if "events" in meta:
        events = events_from_front_matter(meta["events"] or [], source, zone, title, parse_date)
    else:
        events, event_problems = events_from_table(content, title, zone)
    return Article(
        id=text("id") or source.rsplit(".", 1)[0],
        slug=slug,
        title=title,
        date=date_value,
        updated=when("updated"),
        category=category(words("category") or DEFAULT_CATEGORY),
        author=words("author"),
        summary=shorten(summary, 600) if summary else summarize(content),
        content_html=content,
        url=url,
        draft=_flag(meta.get("draft"), source),
        tags=_tags(meta.get("tags"), source),
        source=source,
        events=events,
        event_problems=event_problems,
    )


def _flag(value: Any, source: str) -> bool:
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ArticleError(source, f"'draft' must be true or false, not {value!r}")


def _tags(value: Any, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ArticleError(source, "'tags' must be a list of words, like [covid, y tế]")
    return tuple(t for t in (one_line(i) for i in items) if t)
