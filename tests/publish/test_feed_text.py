"""What readers see of titles and summaries: exactly the text written, escaped once.

Finding 12: titles written with entities (as portals export them) carried them into every
feed, and summaries showed "&amp;" where the author meant "&".
"""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

import feedparser
import pytest

from service.content.parse import parse_markdown
from service.errors import ArticleError
from service.publish.feeds import FeedSpec, feed_files
from service.settings import SiteSettings

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
SITE = SiteSettings(title="Cổng", base_url="https://tinh.example.gov.vn")


@pytest.mark.parametrize(
    ("written", "seen"),
    [
        ("Thông báo &quot;khẩn&quot; &amp; quan trọng", 'Thông báo "khẩn" & quan trọng'),
        ("Lịch tiếp công dân tháng 12 <mới>", "Lịch tiếp công dân tháng 12 <mới>"),
        ("R&D: 5 < 6 &lt;3", "R&D: 5 < 6 <3"),
    ],
)
def test_every_feed_shows_the_title_and_summary_as_written(written: str, seen: str) -> None:
    text = f"---\ntitle: '{written}'\ndate: 2024-05-01\nsummary: '{written}'\n---\nx\n"
    article = parse_markdown(text, "a.md", ZONE)
    assert article.title == seen and article.summary == seen
    files = feed_files(FeedSpec("Cổng", "", [article]), SITE)
    for name in ("rss.xml", "atom.xml"):
        parsed = feedparser.parse(files[name])
        assert parsed.bozo == 0
        [entry] = parsed.entries
        assert entry.title == seen, name
        summary = entry.summary
        if entry.summary_detail.type == "text/html":  # RSS description is HTML: read it as such
            summary = (
                feedparser.parse(
                    f"<rss><channel><item><title>{summary}</title></item></channel></rss>"
                )
                .entries[0]
                .title
            )
        assert summary.replace("&lt;", "<").replace("&amp;", "&") == seen, name
    [item] = json.loads(files["feed.json"])["items"]
    assert item["title"] == seen and item["summary"] == seen


@pytest.mark.parametrize("url", ["https://x.vn/a b", "https://x.vn/a\tb", "https://x.vn/a\u00a0b"])
def test_a_url_with_spaces_is_refused(url: str) -> None:
    with pytest.raises(ArticleError, match="has spaces in it"):
        parse_markdown(f"---\ntitle: T\ndate: 2024-05-01\nurl: '{url}'\n---\nx\n", "a.md", ZONE)
