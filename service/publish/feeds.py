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
from typing import TYPE_CHECKING

from service.ical import SequenceOf, stateless_sequence
from service.model import Article
from service.publish.archive import archive_feed_path
from service.publish.calendars import feed_events
from service.settings import SiteSettings

if TYPE_CHECKING:  # imported where a feed is written: a build that writes none never loads them
    from feedgen.feed import FeedGenerator
    from lxml import etree

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
    from feedgen.feed import FeedGenerator

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
    links = _history_links(spec, site, "rss")
    if hub:
        links.insert(0, ("hub", hub))
    linked = bool(links) or spec.archive is not None
    root, doc = fg._create_rss()
    channel = root[0]
    for article in spec.articles:
        channel.append(_rss_item(article, site.base_url, cdata=not linked))
    if linked:
        _add_links(channel, links, spec.archive is not None, rss=True)
    return _serialised(doc)


def _atom(spec: FeedSpec, site: SiteSettings, hub: str | None, name: str = "atom.xml") -> bytes:
    fg = _generator(spec, site, name)
    if hub:
        fg.link(href=hub, rel="hub")
    root, doc = fg._create_atom()
    for article in spec.articles:
        root.append(_atom_entry(article, site.base_url))
    links = _history_links(spec, site, "atom")
    if links or spec.archive is not None:
        _add_links(root, links, spec.archive is not None, rss=False)
    return _serialised(doc)


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


# Entries. feedgen makes the feed's own elements (``_create_rss``/``_create_atom``, private:
# hence feedgen pinned at 1.0.0); the entries are made here, element for element as feedgen's
# FeedEntry makes them for the fields bantin sets. Through FeedEntry (its setters' checks, its
# dozens of attributes, an extension object per entry) they were most of the cost of a feed,
# and every article is an entry of four feeds at least (RSS and Atom, the site's and its
# category's). tests/publish/test_feeds.py compares both ways on awkward articles.
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DC_CREATOR = "{http://purl.org/dc/elements/1.1/}creator"


def _rfc2822(moment: datetime) -> str:
    """feedgen's formatRFC2822 (English names, whatever the locale) without its setlocale."""
    day, month = _DAYS[moment.weekday()], _MONTHS[moment.month - 1]
    return f"{day}, {moment:%d} {month} {moment:%Y %H:%M:%S %z}"


def _rss_item(article: Article, base_url: str, cdata: bool) -> etree._Element:
    """An RSS <item>; the content as CDATA, or as escaped text (``cdata=False``) as feeds with
    RFC 5005 links have always had it (they were once parsed back, which drops CDATA)."""
    from lxml import etree

    item = etree.Element("item")
    etree.SubElement(item, "title").text = article.title
    etree.SubElement(item, "link").text = article.link(base_url)
    # Readers render <description> as HTML: the plain summary must be escaped first.
    description = html.escape(article.summary, quote=False)
    content = etree.CDATA(article.content_html) if cdata else article.content_html
    if description:
        etree.SubElement(item, "description").text = description
        etree.SubElement(item, _CONTENT_ENCODED).text = content
    else:  # feedgen's way: without a description the content takes its place
        etree.SubElement(item, "description").text = content
    guid = etree.SubElement(item, "guid")
    guid.text = article.guid(base_url)
    guid.set("isPermaLink", "false")
    etree.SubElement(item, "category").text = article.category.name
    etree.SubElement(item, "pubDate").text = _rfc2822(article.date)
    if article.author:
        etree.SubElement(item, _DC_CREATOR).text = article.author
    return item


def _atom_entry(article: Article, base_url: str) -> etree._Element:
    """An Atom <entry> (unqualified names: feedgen's root carries the namespace)."""
    from lxml import etree

    entry = etree.Element("entry")
    etree.SubElement(entry, "id").text = article.guid(base_url)
    etree.SubElement(entry, "title").text = article.title
    etree.SubElement(entry, "updated").text = article.modified.isoformat()
    if article.author:
        author = etree.SubElement(entry, "author")
        etree.SubElement(author, "name").text = article.author
    content = etree.SubElement(entry, "content")
    if article.content_html:
        content.text = article.content_html
    content.set("type", "html")
    # no rel: feedgen 1.0 drops a link's attributes but href (its issue 135); alternate is
    # what a link without one means
    etree.SubElement(entry, "link", href=article.link(base_url))
    summary = etree.SubElement(entry, "summary")
    if article.summary:
        summary.text = article.summary
    category = etree.SubElement(entry, "category", term=article.category.name)
    category.set("label", article.category.name)
    etree.SubElement(entry, "published").text = article.date.isoformat()
    return entry


def _add_links(
    parent: etree._Element, links: list[tuple[str, str]], archive: bool, rss: bool
) -> None:
    """Add the atom:link elements of ``links`` (feedgen writes only rel=self into RSS) and, for
    an archive document, ``fh:archive``, after the feed's first elements."""
    from lxml import etree

    # feedgen's Atom elements carry no namespace (the root has an xmlns attribute), so neither
    # do the links added there; in RSS they are atom:link
    link = f"{{{_ATOM_NS}}}link" if rss else "link"
    at = 3 if rss else len(parent.findall(link)) + 3
    extra = [etree.Element(link, href=href, rel=rel) for rel, href in links]
    if archive:
        extra.append(etree.Element(f"{{{_HISTORY_NS}}}archive", nsmap={"fh": _HISTORY_NS}))
    for offset, element in enumerate(extra):
        parent.insert(at + offset, element)


def _serialised(doc: etree._ElementTree) -> bytes:
    from lxml import etree

    return bytes(etree.tostring(doc, xml_declaration=True, encoding="UTF-8", pretty_print=True))


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
