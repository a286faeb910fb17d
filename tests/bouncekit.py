"""Bounces for tests: the samples of mail/bounces/ re-signed for deliveries a test made, and a
project's ledger that makes those deliveries as a digest run would."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from service.ledger import State
from service.ledger.deliveries import Claim
from service.mail import verp
from service.mail.intake import Intake
from service.model import Subscriber
from service.settings import Settings, load_settings

SAMPLES = Path(__file__).resolve().parent / "mail" / "bounces"
KEY = b"the intake tests' server key...."
BOUNCES = "bounces@laichau.example.gov.vn"
T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
_TOKEN = re.compile(rb"(bounces\+)(unsub-)?[a-z2-7]{24,36}@", re.IGNORECASE)

# sample: (the address the delivery went to, what is done, the suppression reason, unsubscribed)
POLICY: dict[str, tuple[str, str, str | None, bool]] = {
    "postfix-user-unknown.eml":
        ("tran.thi.lan@mail.example.vn", "suppressed", "hard_bounce", False),
    "postfix-delayed.eml": ("le.van.minh@example.com", "counted", None, False),
    "postfix-mailbox-full.eml": ("mai.anh@example.org", "counted", None, False),
    "exim-text.eml": ("pham.quoc.bao@example.net", "suppressed", "hard_bounce", False),
    "gmail-dsn.eml": ("hoang.thu@example.org", "suppressed", "hard_bounce", False),
    "outlook-ndr.eml": ("vo.thi.mai@contoso.example", "suppressed", "hard_bounce", False),
    "yahoo-text.eml": ("ngo.thi.hanh@yahoo.example", "suppressed", "hard_bounce", False),
    "qmail-text.eml": ("do.thi.ngoc@example.vn", "suppressed", "hard_bounce", False),
    "ses-bounce.eml": ("dinh.cong.son@example.org", "suppressed", "hard_bounce", False),
    "outlook-jmrp-complaint.eml":
        ("dang.van.hung@hotmail.example", "unsubscribed", "complaint", True),
    "yahoo-arf-redacted.eml": ("an.yahoo@yahoo.example", "unsubscribed", "complaint", True),
    "ses-complaint.eml": ("ly.thanh.tam@example.com", "unsubscribed", "complaint", True),
    "unsubscribe-mailto.eml": ("hoa.nguyen@example.org", "unsubscribed", None, True),
    "vacation-rfc3834.eml": ("nam.nguyen@example.gov.vn", "ignored", None, False),
}  # fmt: skip


def resigned(name: str, delivery_id: int, email: str, key: bytes = KEY) -> bytes:
    """The sample with every VERP token replaced by one signed with ``key`` for this delivery."""

    def swap(match: re.Match[bytes]) -> bytes:
        purpose: verp.Purpose = "unsubscribe" if match[2] else "bounce"
        token = verp.make_token(key, delivery_id, email, purpose)
        return match[1] + (match[2] or b"") + token.encode() + b"@"

    return _TOKEN.sub(swap, (SAMPLES / name).read_bytes())


class Ledger:
    """A project's settings and state; ``deliver`` makes a delivery, as a digest run would."""

    def __init__(self, project: Path, *, bounce_address: str | None = BOUNCES) -> None:
        config = project / "config" / "bantin.toml"
        bounce = f'bounce_address = "{bounce_address}"\n' if bounce_address else ""
        config.write_text(
            '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
            f'[mail]\nfrom = "Bản tin <bantin@laichau.example.gov.vn>"\n{bounce}'
            "[bounces]\nsoft_bounce_limit = 3\nsoft_bounce_days = 14\n",
            encoding="utf-8",
        )
        self.settings: Settings = load_settings(config)
        self.state = State(self.settings.state.url)
        self.now = T0
        self.articles = 0

    def intake(self, key: bytes = KEY) -> Intake:
        return Intake(self.state, key, self.settings, lambda: self.now)

    def deliver(self, email: str) -> int:
        """A new pending delivery of one new article to ``email``; its id."""
        self.articles += 1
        article = f"a{self.articles}"
        self.state.subscribers.sync([Subscriber(email)], self.now)
        self.state.articles.record([(article, f"fp-{article}", f"{article}.md")], self.now)
        [made] = self.state.deliveries.claim(
            [Claim(Subscriber(email), "daily", (article,))],
            [email],
            self.articles,
            lambda e, ids: f"<digest.{'.'.join(ids)}.{e}>",
            self.now,
        )
        return made.id

    def suppressed(self) -> dict[str, str]:
        return {s.email: s.reason for s in self.state.suppressions.all()}

    def unsubscribed(self) -> set[str]:
        return {e for e, _ in self.state.subscribers.addresses("unsubscribed")}
