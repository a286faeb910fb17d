"""What comes back, acted on: bounces suppress, complaints and unsubscribe mail unsubscribe.

One message in (from ``bantin bounce``, a maildir or an IMAP folder), read by ``bounces.parse``,
and for each finding:

- it must name a delivery of ours: by its VERP token, which must carry our signature (a token we
  did not sign is logged and ignored: anyone can send mail to the bounce address), or, when the
  report carries no token, by quoting the Message-ID of a message we sent to the address it
  names. Findings that name no delivery are kept in the log, never acted on;
- a hard bounce suppresses the address at once; a soft bounce is counted, and suppresses when
  ``bounces.soft_bounce_limit`` of them (each for a different message) came within
  ``bounces.soft_bounce_days``; a complaint unsubscribes and suppresses; mail to the ``mailto:``
  List-Unsubscribe address unsubscribes; auto-replies and the unrecognised do nothing.

Everything acted on is recorded with its evidence (``bounces`` and ``suppressions`` tables), and
reading the same message twice changes nothing the second time, so an MTA's retry is harmless.
A ``StateError`` (the database unreachable) propagates: the caller leaves the message where it
is, to be read again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from service.errors import printable
from service.ledger import State
from service.mail import verp
from service.mail.bounces import Finding, parse
from service.settings import Settings

__all__ = ["Handled", "Intake", "Way"]

log = logging.getLogger(__name__)

Way = Literal["pipe", "maildir", "imap"]
Action = Literal["suppressed", "counted", "unsubscribed", "ignored", "forged", "unmatched"]


@dataclass(frozen=True, slots=True)
class Handled:
    """What was done with one finding, and why, in words for the log and the operator."""

    kind: str
    address: str | None  # the address acted on (None when nothing was)
    action: Action
    why: str


class Intake:
    """Applies the bounce policy (see the module) to messages that come back."""

    def __init__(
        self,
        state: State,
        key: bytes,
        settings: Settings,
        clock: Callable[[], datetime],
    ) -> None:
        self.state = state
        self.key = key
        self.bounce_address = settings.mail.bounce_address
        self.soft_limit = settings.bounces.soft_bounce_limit
        self.soft_days = settings.bounces.soft_bounce_days
        self.clock = clock

    def take(self, data: bytes, way: Way) -> list[Handled]:
        """Read one returned message and act on it; one ``Handled`` per finding."""
        done = [self._one(finding, way) for finding in parse(data, self.bounce_address)]
        for handled in done:
            level = logging.WARNING if handled.action == "forged" else logging.INFO
            log.log(level, "%s (%s, by %s): %s", handled.kind, handled.action, way, handled.why)
        return done

    # --- which delivery ---------------------------------------------------------------

    def _one(self, finding: Finding, way: Way) -> Handled:
        kind = finding.kind
        if kind in ("autoreply", "unknown"):
            what = "an auto-reply" if kind == "autoreply" else "not a bounce or a complaint"
            return Handled(kind, None, "ignored", f"{what}; nothing done")
        if finding.token is not None:
            return self._by_token(finding, finding.token, way)
        if finding.message_id is not None:
            return self._by_message_id(finding, finding.message_id, way)
        return Handled(
            kind,
            None,
            "unmatched",
            f"names no message of ours (no signed return address, no Message-ID we sent) "
            f"for {_shown(finding.address)}; nothing done",
        )

    def _by_token(self, finding: Finding, token: str, way: Way) -> Handled:
        purpose: verp.Purpose = "bounce"
        if token.startswith(verp.UNSUBSCRIBE_PREFIX):
            purpose, token = "unsubscribe", token.removeprefix(verp.UNSUBSCRIBE_PREFIX)
        read = verp.read_token(self.key, token, purpose)
        if read is None:
            return Handled(
                finding.kind,
                None,
                "forged",
                f"its return address carries a token bantin did not sign (forged, or signed "
                f"with another server.secret_key): {printable(token[:40])!s}; nothing done",
            )
        address = self.state.deliveries.address_of(read.delivery_id)
        if address is None and finding.address is not None and read.names(finding.address):
            address = finding.address  # the delivery row is gone (forgotten); the tag vouches
        if address is None or not read.names(address):
            return Handled(
                finding.kind,
                None,
                "unmatched",
                f"its token names delivery {read.delivery_id}, which is not in the ledger; "
                "nothing done",
            )
        return self._apply(finding, address, read.delivery_id, way)

    def _by_message_id(self, finding: Finding, message_id: str, way: Way) -> Handled:
        sent = self.state.deliveries.by_message_id(message_id)
        if finding.address is not None:
            sent = [(d, e) for d, e in sent if e == finding.address.lower()]
        if len({e for _, e in sent}) != 1:
            return Handled(
                finding.kind,
                None,
                "unmatched",
                f"quotes Message-ID {printable(message_id[:80])}, which names no message we "
                f"sent to {_shown(finding.address)}; nothing done",
            )
        delivery_id, address = sent[-1]
        return self._apply(finding, address, delivery_id, way)

    # --- the policy -------------------------------------------------------------------

    def _apply(self, finding: Finding, address: str, delivery_id: int, way: Way) -> Handled:
        now = self.clock()
        kind = finding.kind
        if kind not in ("hard", "soft", "complaint", "unsubscribe"):  # parse gives no other here
            return Handled(kind, None, "ignored", "nothing to do")
        evidence = {
            "kind": kind,
            "status": finding.status,
            "diagnostic": finding.diagnostic,
            "delivery": delivery_id,
            "read_as": finding.source,
            "way": way,
            "received": now.isoformat(),
        }
        suppressions = self.state.suppressions
        suppressions.bounce(
            address,
            kind,
            now,
            status=finding.status,
            diagnostic=finding.diagnostic,
            delivery_id=delivery_id,
            way=way,
        )
        said = f" ({finding.status}: {finding.diagnostic})" if finding.status else ""
        if kind == "hard":
            suppressions.suppress(address, "hard_bounce", evidence, now)
            return Handled(kind, address, "suppressed", f"{address} bounced{said}; suppressed")
        if kind == "soft":
            count = suppressions.soft_bounces(address, self.soft_days, now)
            if count >= self.soft_limit:
                evidence["soft_bounces"] = count
                suppressions.suppress(address, "soft_bounces", evidence, now)
                return Handled(
                    kind,
                    address,
                    "suppressed",
                    f"{address}: {count} soft bounces in {self.soft_days} days{said}; suppressed",
                )
            return Handled(
                kind,
                address,
                "counted",
                f"{address}: soft bounce {count} of {self.soft_limit} in {self.soft_days} "
                f"days{said}",
            )
        self.state.subscribers.unsubscribe(address, now)
        if kind == "complaint":
            suppressions.suppress(address, "complaint", evidence, now)
            return Handled(
                kind, address, "unsubscribed", f"{address} marked a digest as spam; unsubscribed"
            )
        return Handled(
            kind, address, "unsubscribed", f"{address} asked by mail to stop; unsubscribed"
        )


def _shown(address: str | None) -> str:
    return printable(address) if address else "an address the report does not give"
