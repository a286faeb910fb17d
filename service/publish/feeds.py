"""Articles to RSS 2.0, Atom 1.0 and JSON Feed 1.1 bytes (the only feedgen user).

Deterministic: the feed-level date comes from the newest entry, never the clock, so an
unchanged feed has the same bytes (and ETag) on every build. Each entry has one guid (a UUID
derived from the article's id) in all three formats, kept when the article is edited.

RFC 5005 (archived feeds): a feed whose older entries are in archive documents links the
newest one as ``prev-archive``; an archive document (``archive=N``) is marked ``fh:archive``,
links the subscription feed as ``current`` and the archive before it as ``prev-archive``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from feedgen.feed import FeedGenerator
from lxml import etree

from service.ical import SequenceOf, stateless_sequence
from service.model import Article
from service.publish.archive import archive_feed_path
from service.publish.calendars import feed_events
from service.settings import SiteSettings

__all__ = ["FeedSpec", "feed_files"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ATOM_NS = "http://www.w3.org/2005/Atom"
_HISTORY_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005
_CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """One feed: its title, where it lives under the output directory, and its entries."""

    title: str
    prefix: str  # "" for the site feed, "categories/<slug>/" for a category
    articles: Sequence[Article]  # newest first, already cut to max_items
    prev_archive: int | None = None  # the number of the newest archive document before this
    archive: int | None = None  # this is archive document N, not the subscription feed
    sequence: SequenceOf = stateless_sequence  # of the events in the JSON Feed extension


def feed_files(spec: FeedSpec, site: SiteSettings, hub: str | None = None) -> dict[str, bytes]:
    """The feed files of ``spec``, keyed by path under the output directory: RSS, Atom and
    JSON Feed, or for an archive document its RSS and Atom archives."""
    if spec.archive is not None:
        rss = archive_feed_path(spec.prefix, "rss", spec.archive)
        atom = archive_feed_path(spec.prefix, "atom", spec.archive)
        return {
            rss: _rss(spec, site, None, rss.removeprefix(spec.prefix)),
            atom: _atom(spec, site, None, atom.removeprefix(spec.prefix)),
        }
    return {
        spec.prefix + "rss.xml": _rss(spec, site, hub),
        spec.prefix + "atom.xml": _atom(spec, site, hub),
        spec.prefix + "feed.json": _json(spec, site, hub),
    }


def _updated(spec: FeedSpec) -> datetime:
    return max((a.modified for a in spec.articles), default=EPOCH)


def _generator(spec: FeedSpec, site: SiteSettings, self_name: str) -> FeedGenerator:
    home = f"{site.base_url}/{spec.prefix}"
    fg = FeedGenerator()
    fg.id(home)
    fg.title(spec.title)
    fg.description(site.description or spec.title)
    fg.language(site.language)
    fg.generator("bantin")
    fg.author({"name": site.author or site.title})
    # RSS <channel><link> is the last link added: self first, the page last.
    fg.link(href=f"{home}{self_name}", rel="self")
    fg.link(href=home, rel="alternate")
    updated = _updated(spec)
    fg.updated(updated)
    fg.lastBuildDate(updated)
    return fg


def _rss(spec: FeedSpec, site: SiteSettings, hub: str | None, name: str = "rss.xml") -> bytes:
    fg = _generator(spec, site, name)
    fg.load_extension("dc")  # names go in dc:creator: RSS <author> must be an email address
    for article in spec.articles:
        fe = fg.add_entry(order="append")
        _common(fe, article, site)
        fe.guid(article.guid(site.base_url), permalink=False)
        # Readers render <description> as HTML: the plain summary must be escaped first.
        fe.description(html.escape(article.summary, quote=False))
        fe.content(article.content_html, type="CDATA")
        if article.author:
            fe.dc.dc_creator(article.author)
    links = _history_links(spec, site, "rss")
    if hub:
        links.insert(0, ("hub", hub))
    if links or spec.archive is not None:
        return _with_links(fg, links, spec.archive is not None, rss=True)
    data: bytes = fg.rss_str(pretty=True)
    return data


def _history_links(spec: FeedSpec, site: SiteSettings, kind: str) -> list[tuple[str, str]]:
    """RFC 5005 links of ``spec``: current (for an archive) and prev-archive."""
    home = f"{site.base_url}/{spec.prefix}"
    links = []
    if spec.archive is not None:
        links.append(("current", f"{home}{kind}.xml"))
    previous = spec.archive - 1 if spec.archive is not None else spec.prev_archive
    if previous:
        links.append(
            ("prev-archive", site.base_url + "/" + archive_feed_path(spec.prefix, kind, previous))
        )
    return links


def _with_links(fg: FeedGenerator, links: list[tuple[str, str]], archive: bool, rss: bool) -> bytes:
    """The feed with atom:link elements (feedgen writes only rel=self into RSS) and
    ``fh:archive`` added.

    They go into feedgen's own element tree (``_create_rss``/``_create_atom``: private, hence
    feedgen pinned at 1.0.0) before it is serialised: serialising, parsing back and
    serialising again cost 3 ms a feed, a quarter of the feeds' time in a cold build. The
    bytes are those the round trip wrote, which turned RSS ``content:encoded`` CDATA into
    escaped text (lxml's parser drops CDATA sections): so does this."""
    root, _ = fg._create_rss() if rss else fg._create_atom()
    parent = root.find("channel") if rss else root
    assert parent is not None
    # feedgen's Atom elements carry no namespace (the root has an xmlns attribute), so neither
    # do the links added there; in RSS they are atom:link
    link = f"{{{_ATOM_NS}}}link" if rss else "link"
    at = 3 if rss else len(parent.findall(link)) + 3
    extra = [etree.Element(link, href=href, rel=rel) for rel, href in links]
    if archive:
        extra.append(etree.Element(f"{{{_HISTORY_NS}}}archive", nsmap={"fh": _HISTORY_NS}))
    for offset, element in enumerate(extra):
        parent.insert(at + offset, element)
    if rss:
        for content in parent.iter(_CONTENT_ENCODED):
            content.text = content.text  # the same text, no longer CDATA: escaped
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _atom(spec: FeedSpec, site: SiteSettings, hub: str | None, name: str = "atom.xml") -> bytes:
    fg = _generator(spec, site, name)
    if hub:
        fg.link(href=hub, rel="hub")
    for article in spec.articles:
        fe = fg.add_entry(order="append")
        _common(fe, article, site)
        fe.id(article.guid(site.base_url))
        fe.summary(article.summary)
        fe.content(article.content_html, type="html")
        if article.author:
            fe.author({"name": article.author})
    links = _history_links(spec, site, "atom")
    if links or spec.archive is not None:
        return _with_links(fg, links, spec.archive is not None, rss=False)
    data: bytes = fg.atom_str(pretty=True)
    return data


def _common(fe: object, article: Article, site: SiteSettings) -> None:
    entry: FeedEntryLike = fe  # type: ignore[assignment]
    entry.title(article.title)
    entry.link(href=article.link(site.base_url))
    entry.published(article.date)
    entry.updated(article.modified)
    entry.category(term=article.category.name, label=article.category.name)


class FeedEntryLike:
    """The slice of feedgen's FeedEntry that _common uses (feedgen ships no type hints)."""

    def title(self, value: str) -> None:
        """Set the entry's title."""
        ...

    def link(self, *, href: str) -> None:
        """Add a link to the entry."""
        ...

    def published(self, value: datetime) -> None:
        """Set when the entry was first published."""
        ...

    def updated(self, value: datetime) -> None:
        """Set when the entry last changed."""
        ...

    def category(self, *, term: str, label: str) -> None:
        """Add a category to the entry."""
        ...


def _json(spec: FeedSpec, site: SiteSettings, hub: str | None) -> bytes:
    home = f"{site.base_url}/{spec.prefix}"
    feed: dict[str, object] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": spec.title,
        "home_page_url": home,
        "feed_url": f"{home}feed.json",
        "description": site.description or spec.title,
        "language": site.language,
        "authors": [{"name": site.author or site.title}],
    }
    if hub:
        feed["hubs"] = [{"type": "WebSub", "url": hub}]
    items = []
    for article in spec.articles:
        item: dict[str, object] = {
            "id": article.guid(site.base_url),
            "url": article.link(site.base_url),
            "title": article.title,
            "content_html": article.content_html,
            "summary": article.summary,
            "date_published": article.date.isoformat(),
            "date_modified": article.modified.isoformat(),
            "tags": [article.category.name, *article.tags],
        }
        if article.author:
            item["authors"] = [{"name": article.author}]
        if article.events:  # a JSON Feed extension: keys that start with "_"
            item["_bantin"] = {"events": feed_events(article, site, spec.sequence)}
        items.append(item)
    feed["items"] = items
    return (json.dumps(feed, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
