"""The leader reads what came back: the maildir and the IMAP folder of [bounces], every
``bounces.poll_interval`` seconds, each message through mail.intake.

A message read and dealt with is moved out of the way (maildir: to cur/; IMAP: flagged and moved
to ``imap_done_folder``), never deleted; one that is not a bounce is marked as such and kept.
When the state cannot be reached the message stays where it is and the next poll reads it
again. The mailbox's own failures (IMAP login, a missing folder) make the job fail in /healthz
with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator

from service import clock
from service.errors import BantinError, StateError
from service.ledger import State
from service.mail.intake import Intake, Way
from service.mail.mailboxes import Incoming, MailboxError, read_imap, read_maildir
from service.runtime.components import Components
from service.runtime.health import Health

__all__ = ["BounceReader"]

log = logging.getLogger("bantin.bounces")

JOB = "bounces"
DOUBTFUL = ("forged", "unmatched")  # marked, for a person to look at


class BounceReader:
    """Polls the configured mailboxes; one poll at a time."""

    def __init__(
        self,
        state: State,
        health: Health,
        *,
        current: Callable[[], Components],
        key: Callable[[], bytes],
    ) -> None:
        self.state = state
        self.health = health
        self.current = current
        self.key = key
        self.reading = asyncio.Lock()

    def configured(self) -> bool:
        """Whether [bounces] names a maildir or an IMAP folder to read."""
        bounces = self.current().settings.bounces
        return bounces.maildir is not None or bounces.imap_host is not None

    async def poll(self) -> None:
        """Read every new message of each configured mailbox (on a thread)."""
        if self.reading.locked() or not self.configured():
            return
        async with self.reading:
            self.health.begin(JOB)
            started = time.monotonic()
            try:
                counts = await asyncio.to_thread(self._read_all)
            except (BantinError, MailboxError) as exc:
                self.health.record(JOB, False, str(exc), time.monotonic() - started)
                log.error("bounces not read: %s", exc)
                return
            detail = ", ".join(f"{n} by {way}" for way, n in counts.items()) or "none new"
            self.health.record(JOB, True, f"messages read: {detail}", time.monotonic() - started)

    def _read_all(self) -> dict[Way, int]:
        settings = self.current().settings
        intake = Intake(self.state, self.key(), settings, clock.now)
        counts: dict[Way, int] = {}
        mailboxes: list[tuple[Way, Callable[[], Iterator[Incoming]]]] = []
        if settings.bounces.maildir is not None:
            maildir = settings.bounces.maildir
            mailboxes.append(("maildir", lambda: read_maildir(maildir)))
        if settings.bounces.imap_host is not None:
            mailboxes.append(("imap", lambda: read_imap(settings.bounces)))
        for way, read in mailboxes:
            for message in read():
                try:
                    done = intake.take(message.data, way)
                except StateError:
                    raise  # left where it is; read again at the next poll
                except Exception:  # a message the parser chokes on must not block the rest
                    log.exception("a message in the %s could not be read; kept, marked", way)
                    message.ack(False)
                    continue
                # understood (acted on, or an auto-reply) or kept for a person to look at
                message.ack(not any(h.kind == "unknown" or h.action in DOUBTFUL for h in done))
                counts[way] = counts.get(way, 0) + 1
        return counts
