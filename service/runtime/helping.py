"""On a standby host: help send the digest runs the leader planned.

Every second the helper looks at the runs in progress; for each one it is not helping yet it
starts this host's senders on it (senders.py), with this host's configuration, articles and
mail server connections. A delivery whose articles this host does not have yet is given back
for another host. A helper stops when the run ends, when its own sending meets a fault of the
mail server, or when the service stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from service import clock
from service.errors import StateError
from service.ledger import State
from service.ledger.claims import ActiveRun
from service.mail.compose_workers import ComposeWorkers, default_processes
from service.mail.outcomes import Outcomes, RunReport
from service.mail.pace import paced_transport
from service.mail.senders import Senders
from service.metrics import Metrics
from service.model import Article, Frequency
from service.runtime.components import Components

__all__ = ["Helper"]

log = logging.getLogger("bantin.service")


class Helper:
    """This host's help with the runs of the leader; idle while this host leads."""

    def __init__(
        self,
        state: State,
        host: str,
        metrics: Metrics,
        *,
        current: Callable[[], Components],
        articles: Callable[[], Mapping[str, Article]],
        leading: Callable[[], bool],
        stopping: asyncio.Event,
    ) -> None:
        self.state = state
        self.host = host
        self.metrics = metrics
        self.current = current
        self.articles = articles
        self.leading = leading
        self.stopping = stopping
        self.active: set[str] = set()  # the runs in progress, as last seen
        self.helping: dict[str, asyncio.Task[RunReport]] = {}

    async def check(self) -> None:
        """Start helping each run in progress that this host does not help yet."""
        try:
            runs = await asyncio.to_thread(self.state.claims.active)
        except StateError as exc:
            log.debug("cannot see the runs in progress: %s", exc)
            return
        self.active = {r.run for r in runs}
        if self.leading() or self.stopping.is_set():
            return
        for run in runs:
            if run.run not in self.helping:
                self.helping[run.run] = asyncio.create_task(self._help(run), name=f"help-{run.run}")
        for token, task in list(self.helping.items()):
            if task.done():
                del self.helping[token]

    async def settled(self) -> None:
        """Wait for the help in progress to end (shutting down or leading: the senders see it
        and give back what they have not begun)."""
        if self.helping:
            await asyncio.gather(*self.helping.values(), return_exceptions=True)

    async def _help(self, run: ActiveRun) -> RunReport:
        parts = self.current()
        frequency: Frequency = run.frequency  # type: ignore[assignment]
        report = RunReport(frequency)
        transport = paced_transport(parts.settings)
        outcomes = Outcomes(
            self.state, report, where=transport.name, clock=clock.now, metrics=self.metrics
        )
        articles = self.articles()
        composers = ComposeWorkers(parts.composer, articles.values(), default_processes())
        senders = Senders(
            self.state,
            parts.composer,
            transport,
            run.run,
            self.host,
            articles,
            outcomes,
            composers,
            clock=clock.now,
            planner=False,
            # a host that comes to lead stops helping at once: its own run's planning gives
            # back every claim this host holds, and a batch sent on here would go out twice
            halted=lambda: self.stopping.is_set() or report.stopped is not None or self.leading(),
        )
        log.info("%s helps send the %s digest run %s", self.host, frequency, run.run[:8])
        try:
            await senders.drain(lambda: run.run in self.active and not self.leading())
        finally:
            await transport.close()
            await asyncio.to_thread(composers.close)
        if report.sent or report.failed or report.stopped:
            log.info("%s (helping %s)", report.summary(), run.run[:8])
        return report
