"""`bantin build`: the articles to the feeds and pages, once.

It is also how a site restarts (after a deploy, a crash, a reboot), so it imports only what a
build needs: not the mail stack (see cli/__init__), and not even SQLAlchemy when the articles'
identities can be read straight from a current SQLite state (ledger/snapshot.py).
"""

from __future__ import annotations

import argparse
import sys
import time

from service import clock
from service.content.source import Source
from service.ledger.snapshot import sqlite_identities
from service.publish.build import Builder
from service.settings import Settings

__all__ = ["cmd_build", "known_identities"]


def known_identities(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """What the ledger knows of recorded articles' files, so moved files keep their identity:
    straight from a current SQLite state when it can (ledger/snapshot.py), else through the
    ledger, which upgrades or creates the database first."""
    known = sqlite_identities(settings.state.url)
    if known is not None:
        return known
    from service.ledger.articles import Articles  # SQLAlchemy: only when it is needed
    from service.ledger.db import Database

    db = Database(settings.state.url)
    try:
        return Articles(db).identities()
    finally:
        db.close()


def cmd_build(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin build [--search]`: scan the articles and write the feeds and pages once; with
    ``--search``, then index them for the search box.

    Skipped articles are listed on stderr and do not fail it. ConfigError if the output
    directory cannot be written, TemplateError if a template fails, SearchIndexError if
    Pagefind fails.
    """
    started = time.monotonic()
    identities = known_identities(settings)
    source = Source(
        settings.source.dir, settings.site.zone, *identities, index=settings.state.scan_index
    )
    scan = source.scan()
    for problem in scan.problems:
        print(f"skipped {settings.source.dir}/{problem}", file=sys.stderr)
    builder = Builder(settings, settings.site.templates_dir, index=settings.state.build_index)
    report = builder.build(scan, clock.now())
    for problem in report.problems:
        print(f"skipped {settings.source.dir}/{problem}", file=sys.stderr)
    skipped = len(scan.problems) + len(report.problems)
    print(
        f"bantin build: {report.published} articles published, {skipped} skipped, "
        f"{len(report.written)} files written, {len(report.removed)} removed, "
        f"{report.files} files in {settings.feeds.output_dir}/ ({time.monotonic() - started:.2f} s)"
    )
    if getattr(args, "search", False):
        from service.publish.search import SEARCH_DIR, index_site

        indexed = index_site(settings.feeds.output_dir, memory_mib=settings.search.memory_limit)
        print(
            f"bantin build: search index of {indexed.pages} pages, {indexed.bytes / 1e6:.1f} MB "
            f"in {settings.feeds.output_dir}/{SEARCH_DIR}/ ({indexed.seconds:.2f} s)"
        )
    return 0
