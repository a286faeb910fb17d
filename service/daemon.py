"""`bantin run`: build, then serve the output directory (the full service arrives with issue 4)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import logging
from pathlib import Path

from service.build import Builder
from service.settings import Settings
from service.sources import Source

log = logging.getLogger("bantin.daemon")


def run_service(settings: Settings, config_file: Path, *, log_json: bool = False) -> int:
    from service.cli import now

    scan = Source(settings.source.dir, settings.site.zone).scan()
    report = Builder(settings, settings.site.templates_dir).build(scan, now())
    log.info("built %d articles into %s", report.published, settings.feeds.output_dir)
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(settings.feeds.output_dir)
    )
    server = http.server.ThreadingHTTPServer((settings.server.host, settings.server.port), handler)
    log.info("serving on http://%s:%d/", settings.server.host, settings.server.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0
