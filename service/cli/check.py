"""`bantin check`: the config, the templates, every article and the subscribers file, each
problem on one line, as a build, a digest and the subscription form would meet them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from functools import partial

from service import clock
from service.cli.content import known_identities
from service.content.scan import Scan
from service.content.slug import category
from service.content.source import Source
from service.errors import BantinError, TemplateError, printable
from service.mail.compose import Composer
from service.mail.mime import read_dkim_key
from service.mail.notices import SIGNUP_TEMPLATES
from service.mail.subscribers import validate
from service.publish.build import page_problems
from service.publish.pages import PAGE_CONTEXT, PAGE_TEMPLATES, Pages
from service.serve.signup import SIGNUP_PAGES
from service.settings import Settings
from service.templating import Templates

__all__ = ["check_problems", "cmd_check", "site_page_problems"]


def check_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """Every problem `bantin check` reports, and its warnings, one line each."""
    problems: list[str] = []
    warnings: list[str] = []
    site = settings.site
    templates = Templates(site.templates_dir, zone=site.zone, language=site.language)
    page_problems_found = templates.check(PAGE_TEMPLATES)
    if not page_problems_found:
        for name in PAGE_TEMPLATES:
            page_problems_found += templates.unknown_names(name, PAGE_CONTEXT[name])
    problems += [str(p) for p in page_problems_found]
    mail = settings.mail
    composer: Composer | None = None
    try:
        dkim = read_dkim_key(mail.dkim_domain, mail.dkim_selector, mail.dkim_key_file)
        composer = Composer(settings, b"check", dkim)
        email_problems = [str(p) for p in composer.check()]
        problems += email_problems
        if email_problems:
            composer = None
    except BantinError as exc:
        problems.append(str(exc))
    known: dict[str, str] | None = None
    identities: tuple[dict[str, str], dict[str, str]] = ({}, {})
    try:
        identities = known_identities(settings)
    except BantinError as exc:
        problems.append(str(exc))
    try:
        scan = Source(settings.source.dir, settings.site.zone, *identities).scan()
        problems += [f"{settings.source.dir}/{p}" for p in scan.problems]
        problems += [
            f"{settings.source.dir}/{printable(a.source)}: {line}; no event is published from "
            "this article until every row can be read"
            for a in scan.articles
            for line in a.event_problems
        ]
        known = {a.category.slug: a.category.name for a in scan.articles}
        without_id = [a for a in scan.articles if a.id == a.source.rsplit(".", 1)[0]]
        if without_id:
            warnings.append(
                f"{len(without_id)} article(s) have no 'id:' (e.g. {settings.source.dir}/"
                f"{printable(without_id[0].source)}): a file moved or renamed as it is keeps "
                "its identity, but one moved and edited while bantin is stopped becomes a new "
                "article (news again); give 'id:' to those you will reorganise"
            )
        now = clock.now()
        published = scan.published(now)
        if not page_problems_found:  # render what a build would render
            pages = Pages(templates, settings)
            problems += [f"{settings.source.dir}/{p}" for p in page_problems(pages, published)]
            problems += [str(p) for p in site_page_problems(pages, scan, now, settings)]
        if composer is not None:  # and a digest of the newest articles, as a run would
            problems += [str(p) for p in composer.check(published[:5], now)]
    except BantinError as exc:
        problems.append(str(exc))
    if settings.subscribe.enabled:
        problems += [
            f"{p} (subscribe.enabled needs it)"
            for p in templates.check(SIGNUP_PAGES + SIGNUP_TEMPLATES)
        ]
        listed = settings.subscribe.categories or ()
        unknown = [c for c in listed if known is not None and category(c).slug not in known]
        if unknown:
            warnings.append(
                f"subscribe.categories names {', '.join(map(repr, unknown))}, which no article "
                "has yet: the form offers it all the same"
            )
    try:
        _, bad, subscriber_warnings = validate(settings.mail.subscribers_file, known)
        problems += [str(p) for p in bad]
        warnings += subscriber_warnings
    except BantinError as exc:
        problems.append(str(exc))
    return problems, warnings


def site_page_problems(
    pages: Pages, scan: Scan, now: datetime, settings: Settings
) -> list[TemplateError]:
    """What rendering the index, category, categories and 404 pages raises, as a build would
    render them (each failure names its template and line)."""
    limit = settings.feeds.max_items
    sections = scan.recent_by_category(now, limit)
    categories = [category for category, _ in sections]
    renders: list[Callable[[], bytes]] = [
        lambda: pages.index(scan.published(now)[:limit], categories),
        lambda: pages.categories(categories),
        pages.not_found,
        *(partial(pages.category, category, recent) for category, recent in sections[:1]),
    ]
    problems = []
    for render in renders:
        try:
            render()
        except TemplateError as exc:
            problems.append(exc)
    return problems


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """`bantin check`: print every problem and warning in the config, templates, articles and
    subscribers file; 1 if there is any problem (warnings alone pass)."""
    problems, warnings = check_problems(settings)
    for line in warnings:
        print(f"warning: {line}")
    for line in problems:
        print(line)
    if problems:
        print(
            f"bantin check: {len(problems)} problem{'s' if len(problems) > 1 else ''}",
            file=sys.stderr,
        )
        return 1
    print(f"bantin check: {args.config_file} and everything it points to are fine")
    return 0
