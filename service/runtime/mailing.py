"""The digest runs of the service: one at a time, immediate ones beside the scans.

Publishing never waits for mail: the scan job asks for an immediate digest and goes on; if one
is running, it runs once more when it ends. Scheduled (daily, weekly) runs wait their turn.
A stop interrupts the run in progress; what it did not send stays pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from service.errors import BantinError
from service.ledger import State
from service.mail.audience import everyone
from service.mail.compose_workers import default_processes
from service.mail.pace import paced_transport
from service.mail.run import DigestRun, run_digest
from service.mail.subscribers import read_entries
from service.metrics import Metrics
from service.model import Article, Frequency
from service.runtime.components import Components
from service.runtime.health import Health

__all__ = ["Mailer"]

log = logging.getLogger("bantin.service")


class Mailer:
    """Runs digests with the current components over the last good subscribers file and the
    confirmed sign-ups of the form."""

    def __init__(
        self,
        state: State,
        health: Health,
        metrics: Metrics,
        *,
        current: Callable[[], Components],
        subscribers: Path,
        stopping: asyncio.Event,
        host: str | None = None,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.state = state
        self.health = health
        self.metrics = metrics
        self.current = current
        self.subscribers = subscribers  # the last good copy (see reload.py)
        self.stopping = stopping
        self.host = host
        self.before = before  # awaited before a run is planned (this host's help must end)
        self.sending = asyncio.Lock()  # one run at a time: runs share the pending deliveries
        self.current_run: DigestRun | None = None
        self.last_start = time.monotonic()  # when a run last started
        self._immediate: asyncio.Task[None] | None = None  # the immediate digest, when running
        self._again = False  # asked for again while it ran
        self._articles: list[Article] = []

    def immediately(self, published: list[Article]) -> None:
        """Start the immediate digest beside the scans, never in their way; a request while
        one runs makes it run once more when it ends (with the newest articles)."""
        self._articles = published
        if self._immediate is not None and not self._immediate.done():
            self._again = True
            return
        self._immediate = asyncio.create_task(self._immediate_runs(), name="digest:immediate")

    async def settled(self) -> None:
        """Wait until the immediate digests asked for so far have run."""
        while self._immediate is not None and not self._immediate.done():
            await asyncio.shield(self._immediate)

    async def _immediate_runs(self) -> None:
        self._again = True
        while self._again and not self.stopping.is_set():
            self._again = False
            await self.run("immediate", self._articles)

    def interrupt(self, reason: str = "the service is stopping") -> None:
        """The run in progress sends nothing more (not a fault): the service stops, or this
        host no longer leads."""
        if self.current_run is not None:
            self.current_run.interrupt(reason)

    async def run(self, frequency: Frequency, published: list[Article]) -> None:
        """One digest run of ``frequency``, after the one in progress; recorded in health."""
        if self.stopping.is_set():
            return
        async with self.sending:
            # asked again: a stop may have come while this run waited for the previous one
            if self.stopping.is_set() or not self.subscribers.exists():
                return
            if self.before is not None:
                await self.before()
            parts = self.current()
            started = time.monotonic()
            self.health.begin(f"digest:{frequency}")
            self.last_start = started
            run = DigestRun(
                self.state,
                parts.composer,
                paced_transport(parts.settings),
                frequency,
                published,
                everyone(self.state, read_entries(self.subscribers)),
                metrics=self.metrics,
                processes=default_processes(),
                host=self.host,
            )
            self.current_run = run
            try:
                report = await run_digest(run)
            except BantinError as exc:
                self.health.record(
                    f"digest:{frequency}", False, str(exc), time.monotonic() - started
                )
                log.error("digest %s failed: %s", frequency, exc)
                return
            finally:
                self.current_run = None
            seconds = time.monotonic() - started
            self.metrics.run_seconds.labels(job="digest").observe(seconds)
            self.health.record(f"digest:{frequency}", report.ok, report.summary(), seconds)
            # a scheduled run is worth a line even when it had nothing to send
            said = report.sent or report.deferred or report.failed or not report.ok
            if frequency != "immediate" or said:
                log.info("%s", report.summary())
