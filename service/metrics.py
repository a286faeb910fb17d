"""The service's Prometheus metrics, in a registry of their own (one ``Metrics`` per service).

Every label has a small, closed set of values: a label fed from the outside world (a URL, an
SMTP reply) would grow without bound and take the monitoring down with it. Reasons are short
codes (``timeout``, ``refused``, ``smtp_4xx``); anything else is counted as ``other``.
"""

from __future__ import annotations

import re
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # "text/plain; version=0.0.4; charset=utf-8"

Job = Literal["scan", "build", "digest"]
PathKind = Literal["feed", "page", "other"]
JOBS: tuple[Job, ...] = ("scan", "build", "digest")
PATH_KINDS: tuple[PathKind, ...] = ("feed", "page", "other")

_REASON = re.compile(r"[a-z0-9_]{1,32}")
_RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
_SMTP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def reason_label(reason: str) -> str:
    """``reason`` if it is a short code (``[a-z0-9_]{1,32}``), else ``other``."""
    return reason if _REASON.fullmatch(reason) else "other"


class Metrics:
    """The metric objects and the registry that holds them; tests make fresh ones freely."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.articles_published = Gauge(
            "bantin_articles_published", "Articles in the published feeds and pages.", registry=r
        )
        self.digests_sent = Counter(
            "bantin_digests_sent", "Digest messages accepted by the mail transport.", registry=r
        )
        self.digests_deferred = Counter(
            "bantin_digests_deferred",
            "Digest messages deferred for a retry, by reason.",
            ["reason"],
            registry=r,
        )
        self.digests_failed = Counter(
            "bantin_digests_failed",
            "Digest messages refused for good, by reason.",
            ["reason"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "bantin_run_duration_seconds",
            "Duration of scheduled runs, by job.",
            ["job"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.smtp_seconds = Histogram(
            "bantin_smtp_latency_seconds",
            "Time to hand one message to the SMTP server.",
            buckets=_SMTP_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "bantin_http_requests",
            "HTTP requests answered, by kind of path (feed, page, other) and status.",
            ["kind", "status"],
            registry=r,
        )
        self.http_not_modified = Counter(
            "bantin_http_not_modified",
            "HTTP requests answered 304 Not Modified, by kind of path.",
            ["kind"],
            registry=r,
        )
        # Known label values appear at 0 from the start, so rate() works from the first scrape.
        for job in JOBS:
            self.run_seconds.labels(job=job)
        for kind in PATH_KINDS:
            self.http_not_modified.labels(kind=kind)

    def deferred(self, reason: str) -> None:
        """Count one deferred digest message (``reason`` is a short code)."""
        self.digests_deferred.labels(reason=reason_label(reason)).inc()

    def failed(self, reason: str) -> None:
        """Count one digest message refused for good (``reason`` is a short code)."""
        self.digests_failed.labels(reason=reason_label(reason)).inc()

    def request(self, kind: PathKind, status: int) -> None:
        """Count one HTTP answer; a 304 is counted in both request and not-modified series."""
        self.http_requests.labels(kind=kind, status=str(status)).inc()
        if status == 304:
            self.http_not_modified.labels(kind=kind).inc()

    def render(self) -> bytes:
        """All metrics in the Prometheus text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
