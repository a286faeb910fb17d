"""Live configuration: the config and subscribers files followed while the service runs.

Both are polled every ``WATCH_INTERVAL`` (one stat each) and re-read on SIGHUP. A good edit
applies at once; a bad one is refused with its file, line and reason (in the log and on
/healthz) while the last good one runs on. The last good subscribers file is copied beside the
state, so a later bad edit never leaves the service without one.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service import clock
from service.errors import BantinError, ConfigError
from service.ledger import State
from service.mail.subscribers import read_entries, validate
from service.model import Subscriber
from service.runtime.health import Health
from service.settings import Settings, load_settings

__all__ = ["RESTART_ONLY", "WATCH_INTERVAL", "Reloader"]

log = logging.getLogger("bantin.service")

WATCH_INTERVAL = 2.0  # seconds between looks at the config and subscribers files
# The HTTP server is bound, and serves the output directory it was given, at start-up: a new
# output_dir would be written but never served. These keep their old value until a restart.
RESTART_ONLY = (
    "server.host",
    "server.port",
    "server.max_connections",
    "server.header_timeout",
    "state.url",
    "feeds.output_dir",
)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _get(settings: Settings, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(settings, section), key)


class Reloader:
    """Follows ``config_file`` and the subscribers file it names for one running service.

    ``current()`` gives the running settings, ``apply(settings)`` makes new ones current, and
    ``known_categories()`` the categories of the last scan (for warnings).
    """

    def __init__(
        self,
        config_file: Path,
        state: State,
        health: Health,
        *,
        current: Callable[[], Settings],
        apply: Callable[[Settings], None],
        known_categories: Callable[[], dict[str, str] | None],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config_file = config_file
        self.state = state
        self.health = health
        self.current = current
        self.apply = apply
        self.known_categories = known_categories
        self.leading = leading  # only the leader registers subscribers in the ledger
        self.snapshot = state.home / "subscribers.last-good.toml"
        self._stamps: dict[Path, tuple[int, int] | None] = {config_file: _stamp(config_file)}
        self._subscribers_lock = asyncio.Lock()

    async def watch(self) -> bool:
        """Reload whichever file changed on disk; True if the configuration was reloaded."""
        reloaded = False
        if _stamp(self.config_file) != self._stamps.get(self.config_file):
            reloaded = await self.reload_config()
        path = self.current().mail.subscribers_file
        if _stamp(path) != self._stamps.get(path):
            await self.reload_subscribers()
        return reloaded

    async def reload_config(self) -> bool:
        """Apply the config file if it is valid; True if it was applied."""
        self._stamps[self.config_file] = _stamp(self.config_file)
        old = self.current()
        try:
            new = load_settings(self.config_file)
            changed_restart = [key for key in RESTART_ONLY if _get(new, key) != _get(old, key)]
            if changed_restart:
                log.warning(
                    "%s: %s changed; that takes effect only after a restart (the rest applies now)",
                    self.config_file,
                    ", ".join(changed_restart),
                )
                kept = {
                    key.split(".")[1]: _get(old, key)
                    for key in RESTART_ONLY
                    if key.startswith("server.")
                }
                server = new.server.model_copy(update=kept)
                feeds = new.feeds.model_copy(update={"output_dir": old.feeds.output_dir})
                new = new.model_copy(update={"server": server, "state": old.state, "feeds": feeds})
            self.apply(new)
        except BantinError as exc:
            self.health.config_refused(str(exc))
            log.error("config edit refused, the previous configuration runs on: %s", exc)
            return False
        self.health.config_applied()
        log.info("%s reloaded", self.config_file)
        if new.mail.subscribers_file != old.mail.subscribers_file:
            await self.reload_subscribers()
        return True

    async def reload_subscribers(self) -> None:
        """Adopt the subscribers file if it is valid; otherwise keep the last good copy.

        Read, checked and registered on a thread: a file of 100,000 subscribers takes seconds,
        and the event loop serves HTTP meanwhile. One reload at a time.
        """
        async with self._subscribers_lock:
            await asyncio.to_thread(self._reload_subscribers)

    def _reload_subscribers(self) -> None:
        path = self.current().mail.subscribers_file
        self._stamps[path] = _stamp(path)
        try:
            count, problems, warnings = validate(path, self.known_categories())
        except ConfigError as exc:
            problems, warnings, count = [exc], [], 0
        for warning in warnings:
            log.warning("%s", warning)
        if problems:
            for problem in problems:
                log.error("subscribers edit refused: %s", problem)
            self.health.subscribers_refused(f"{len(problems)} problem(s), first: {problems[0]}")
            if not self.snapshot.exists():
                log.error("no earlier good subscribers file: no digests are sent until it is fixed")
            return
        self.snapshot.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.snapshot.with_suffix(".tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(self.snapshot)
        if self.leading():
            self.register()
        self.health.subscribers_applied(count)
        log.info("%s: %d subscribers", path, count)

    def register(self) -> None:
        """Record when each subscriber of the last good file was first seen (nothing if there
        is none yet), so they get the news from now on."""
        if not self.snapshot.exists():
            return
        self._register()

    def _register(self) -> None:
        """Record when each subscriber was first seen, so they get the news from now on."""
        chunk: list[Subscriber] = []
        for entry in read_entries(self.snapshot):
            if entry.subscriber is not None:
                chunk.append(entry.subscriber)
            if len(chunk) >= 500:
                self.state.subscribers.sync(chunk, clock.now())
                chunk = []
        if chunk:
            self.state.subscribers.sync(chunk, clock.now())
