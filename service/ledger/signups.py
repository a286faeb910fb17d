"""Self-service subscribers: who asked through the form (or was imported), what they chose, and
their consent: when, from which address, which text, when they confirmed.

A sign-up is ``pending`` until its confirmation link is used, then ``confirmed``. Confirming
registers the address in the ledger at the newest article (no back catalogue), and is the new
consent that lifts an earlier unsubscription, suspension, suppression or erasure. The operators'
file wins where both name an address: a digest run marks such sign-ups ``in_file``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import Connection, Row

from service.ledger.db import Database
from service.ledger.deliveries import categories_of, categories_text
from service.ledger.keys import Keys
from service.ledger.schema import articles, consents, forgotten, signups, subscribers, suppressions
from service.model import Frequency, Subscriber, consent_version

__all__ = ["KEEP_AFTER", "PAGE", "Signup", "Signups"]

PAGE = 1000  # sign-ups read per query when streaming them
# how long an expired sign-up, or the sign-up of someone who unsubscribed, is kept before it is
# erased (README: what is stored, for how long)
KEEP_AFTER = timedelta(days=30)

Standing = Literal["pending", "subscribed"]
Confirmed = Literal["confirmed", "already", "stale"]
Added = Literal["added", "already", "barred"]


@dataclass(frozen=True, slots=True)
class Signup:
    """One self-service subscriber and their consent record."""

    email: str  # lower-cased
    address: str  # as typed
    name: str | None
    frequency: Frequency
    categories: frozenset[str] | None
    status: str  # pending | confirmed
    source: str  # form | import
    requested_at: datetime
    request_ip: str | None = None
    consent: str | None = None  # the version of the text shown
    legal_basis: str | None = None
    confirmed_at: datetime | None = None
    confirm_ip: str | None = None
    in_file: bool = False
    consent_text: str | None = None  # filled in where asked for (exports)

    @property
    def subscriber(self) -> Subscriber:
        """The sign-up as a subscriber, as a digest run takes it."""
        return Subscriber(self.address, self.name, self.frequency, self.categories)

    def expired(self, now: datetime, hours: int) -> bool:
        """A pending sign-up whose confirmation link has run out."""
        return self.status == "pending" and self.requested_at + timedelta(hours=hours) <= now


def _signup(row: Row[tuple[object, ...]], text: str | None = None) -> Signup:
    return Signup(
        row.email,
        row.address,
        row.name,
        row.frequency,
        categories_of(row.categories),
        row.status,
        row.source,
        row.requested_at,
        row.request_ip,
        row.consent,
        row.legal_basis,
        row.confirmed_at,
        row.confirm_ip,
        bool(row.in_file),
        text,
    )


class Signups:
    """Sign-ups: requested, confirmed, changed, streamed to digest runs, counted, purged."""

    def __init__(self, db: Database, keys: Keys) -> None:
        self.db = db
        self.keys = keys

    def get(self, email: str) -> Signup | None:
        """The sign-up of ``email``, if there is one."""
        with self.db.tx() as conn:
            row = conn.execute(select(signups).where(signups.c.email == email.lower())).first()
        return None if row is None else _signup(row)

    def standing(self, email: str) -> tuple[Signup | None, bool]:
        """The sign-up of ``email`` (if any), and whether the ledger mails the address now."""
        key = email.lower()
        self.keys.salt()  # made first: making it takes a transaction of its own
        with self.db.tx() as conn:
            row = conn.execute(select(signups).where(signups.c.email == key)).first()
            return (None if row is None else _signup(row)), self._receives(conn, key)

    def _receives(self, conn: Connection, key: str) -> bool:
        """Whether the ledger mails ``key`` now: not unsubscribed, suspended, suppressed or
        forgotten."""
        row = conn.execute(
            select(subscribers.c.unsubscribed_at, subscribers.c.suspended_at).where(
                subscribers.c.email == key
            )
        ).first()
        if row is not None and (row.unsubscribed_at or row.suspended_at):
            return False
        if conn.scalar(select(func.count()).where(suppressions.c.email == key)):
            return False
        return not conn.scalar(
            select(func.count()).where(forgotten.c.digest == self.keys.digest(key))
        )

    def request(
        self,
        subscriber: Subscriber,
        ip: str | None,
        consent: str,
        now: datetime,
    ) -> tuple[Standing, datetime]:
        """A submission of the form for ``subscriber``, who agreed to the text ``consent``.

        ``("subscribed", t)`` if the address already has a confirmed sign-up and is mailed:
        nothing changes. Otherwise the sign-up is (again) pending with this request's choices,
        ``("pending", now)``: only a link signed for ``now`` confirms it (earlier links stop
        working).
        """
        key = subscriber.key
        version = consent_version(consent)
        self.keys.salt()  # made first: making it takes a transaction of its own
        with self.db.tx() as conn:
            row = conn.execute(select(signups).where(signups.c.email == key)).first()
            if row is not None and row.status == "confirmed" and self._receives(conn, key):
                return "subscribed", row.requested_at
            conn.execute(
                self.db.insert_new(consents, "version").values(
                    version=version, text=consent, first_used=now
                )
            )
            values = {
                "address": subscriber.email,
                "name": subscriber.name,
                "frequency": subscriber.frequency,
                "categories": categories_text(subscriber.categories),
                "status": "pending",
                "source": "form",
                "requested_at": now,
                "request_ip": ip,
                "consent": version,
                "legal_basis": None,
                "confirmed_at": None,
                "confirm_ip": None,
            }
            if row is None:
                conn.execute(
                    self.db.insert_new(signups, "email").values(email=key, in_file=False, **values)
                )
            else:
                conn.execute(update(signups).where(signups.c.email == key).values(**values))
        return "pending", now

    def confirm(self, email: str, issued: int, ip: str | None, now: datetime) -> Confirmed:
        """Confirm the pending sign-up of ``email`` requested at ``issued`` (whole seconds since
        the epoch, as its link says): ``"confirmed"``; ``"already"`` if it is confirmed and
        mailed; ``"stale"`` if there is no such request (a newer one replaced it, it was
        erased). The expiry of the link is the caller's to check."""
        key = email.lower()
        self.keys.salt()  # made first: making it takes a transaction of its own
        with self.db.tx() as conn:
            row = conn.execute(select(signups).where(signups.c.email == key)).first()
            if row is None:
                return "stale"
            if row.status == "confirmed":
                return "already" if self._receives(conn, key) else "stale"
            if int(row.requested_at.timestamp()) != issued:
                return "stale"
            conn.execute(
                update(signups)
                .where(signups.c.email == key)
                .values(status="confirmed", confirmed_at=now, confirm_ip=ip)
            )
            self._admit(conn, key, row.frequency, now)
        return "confirmed"

    def _admit(self, conn: Connection, key: str, frequency: str, now: datetime) -> None:
        """A new consent for ``key``: it is mailed from the next article on, whatever stopped
        it before (an unsubscription, a suspension, a suppression, an erasure)."""
        top = int(conn.scalar(select(func.coalesce(func.max(articles.c.seq), 0))) or 0)
        row = conn.execute(
            select(
                subscribers.c.cursor, subscribers.c.unsubscribed_at, subscribers.c.suspended_at
            ).where(subscribers.c.email == key)
        ).first()
        if row is None:
            conn.execute(
                self.db.insert_new(subscribers, "email").values(
                    email=key, cursor=top, first_seen=now, frequency=frequency, failures=0
                )
            )
        elif row.unsubscribed_at is not None or row.suspended_at is not None:
            conn.execute(
                update(subscribers)
                .where(subscribers.c.email == key)
                .values(
                    unsubscribed_at=None,
                    suspended_at=None,
                    failures=0,
                    cursor=max(int(row.cursor), top),
                )
            )
        conn.execute(delete(suppressions).where(suppressions.c.email == key))
        conn.execute(delete(forgotten).where(forgotten.c.digest == self.keys.digest(key)))

    def change(self, email: str, frequency: Frequency, categories: frozenset[str] | None) -> bool:
        """A confirmed subscriber's new choices; False if there is no confirmed sign-up."""
        with self.db.tx() as conn:
            done = conn.execute(
                update(signups)
                .where(signups.c.email == email.lower(), signups.c.status == "confirmed")
                .values(frequency=frequency, categories=categories_text(categories))
            )
        return bool(done.rowcount)

    def add(
        self,
        subscriber: Subscriber,
        legal_basis: str,
        now: datetime,
        *,
        requested_at: datetime | None = None,
        request_ip: str | None = None,
        consent: str | None = None,
        confirmed_at: datetime | None = None,
        confirm_ip: str | None = None,
    ) -> Added:
        """An imported, confirmed subscriber with the legal basis the operator stated (and the
        consent record it came with, if any). ``"already"`` if the address has a confirmed
        sign-up; ``"barred"`` if it unsubscribed, was suppressed or forgotten: only the person
        can undo that, by confirming anew."""
        key = subscriber.key
        self.keys.salt()  # made first: making it takes a transaction of its own
        with self.db.tx() as conn:
            row = conn.execute(select(signups.c.status).where(signups.c.email == key)).first()
            if row is not None and row.status == "confirmed":
                return "already"
            if not self._receives(conn, key):
                return "barred"
            version = None
            if consent:
                version = consent_version(consent)
                conn.execute(
                    self.db.insert_new(consents, "version").values(
                        version=version, text=consent, first_used=now
                    )
                )
            values = {
                "address": subscriber.email,
                "name": subscriber.name,
                "frequency": subscriber.frequency,
                "categories": categories_text(subscriber.categories),
                "status": "confirmed",
                "source": "import",
                "requested_at": requested_at or now,
                "request_ip": request_ip,
                "consent": version,
                "legal_basis": legal_basis,
                "confirmed_at": confirmed_at or now,
                "confirm_ip": confirm_ip,
            }
            if row is None:
                conn.execute(signups.insert().values(email=key, in_file=False, **values))
            else:
                conn.execute(update(signups).where(signups.c.email == key).values(**values))
            self._admit(conn, key, subscriber.frequency, now)
        return "added"

    # -- digest runs ---------------------------------------------------------------------

    def confirmed_among(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` (lower-cased) have a confirmed sign-up."""
        with self.db.tx() as conn:
            return set(
                conn.scalars(
                    select(signups.c.email).where(
                        signups.c.email.in_(list(keys)), signups.c.status == "confirmed"
                    )
                )
            )

    def note_in_file(self, keys: set[str]) -> None:
        """The operators' file names exactly these confirmed sign-ups (a whole file was read):
        mark them, and unmark the others."""
        with self.db.tx() as conn:
            marked = set(conn.scalars(select(signups.c.email).where(signups.c.in_file)))
            for value, wanted in ((False, marked - keys), (True, keys - marked)):
                listed = sorted(wanted)
                for start in range(0, len(listed), 500):
                    conn.execute(
                        update(signups)
                        .where(signups.c.email.in_(listed[start : start + 500]))
                        .values(in_file=value)
                    )

    def confirmed(self, page: int = PAGE) -> Iterator[Signup]:
        """Every confirmed sign-up, by address, ``page`` at a time (one short transaction each):
        a million of them never sit in memory at once."""
        yield from self._stream(page, signups.c.status == "confirmed", with_text=False)

    def everyone(self, page: int = PAGE) -> Iterator[Signup]:
        """Every sign-up with the consent text it names, by address, ``page`` at a time."""
        yield from self._stream(page, None, with_text=True)

    def _stream(self, page: int, where: object, *, with_text: bool) -> Iterator[Signup]:
        after = ""
        while True:
            query = select(signups).where(signups.c.email > after)
            if where is not None:
                query = query.where(where)  # type: ignore[arg-type]
            with self.db.tx() as conn:
                rows = conn.execute(query.order_by(signups.c.email).limit(page)).all()
                texts: dict[str, str] = {}
                if with_text:
                    versions = {r.consent for r in rows if r.consent}
                    texts = {
                        str(v): str(t)
                        for v, t in conn.execute(
                            select(consents.c.version, consents.c.text).where(
                                consents.c.version.in_(versions)
                            )
                        )
                    }
            for row in rows:
                yield _signup(row, texts.get(row.consent) if row.consent else None)
            if len(rows) < page:
                return
            after = rows[-1].email

    # -- status and housekeeping ---------------------------------------------------------

    def counts(self, now: datetime, hours: int) -> dict[str, int]:
        """Sign-ups pending (their link still works), confirmed, and expired (never confirmed,
        kept a while before they are erased)."""
        limit = now - timedelta(hours=hours)
        with self.db.tx() as conn:
            pending, expired, confirmed = conn.execute(
                select(
                    func.count().filter(
                        signups.c.status == "pending", signups.c.requested_at > limit
                    ),
                    func.count().filter(
                        signups.c.status == "pending", signups.c.requested_at <= limit
                    ),
                    func.count().filter(signups.c.status == "confirmed"),
                )
            ).one()
        return {"pending": int(pending), "confirmed": int(confirmed), "expired": int(expired)}

    def purge(self, now: datetime, hours: int) -> int:
        """Erase the sign-ups kept long enough: expired ones KEEP_AFTER after their link ran
        out, and those of people who unsubscribed KEEP_AFTER after they did (the ledger keeps
        their unsubscription). How many went."""
        expired = now - timedelta(hours=hours) - KEEP_AFTER
        left = select(subscribers.c.email).where(subscribers.c.unsubscribed_at <= now - KEEP_AFTER)
        with self.db.tx() as conn:
            gone = conn.execute(
                delete(signups).where(
                    or_(
                        (signups.c.status == "pending") & (signups.c.requested_at <= expired),
                        signups.c.email.in_(left.scalar_subquery()),
                    )
                )
            )
            # the texts no sign-up names any more
            conn.execute(
                delete(consents).where(
                    consents.c.version.not_in(
                        select(signups.c.consent)
                        .where(signups.c.consent.is_not(None))
                        .scalar_subquery()
                    )
                )
            )
        return int(gone.rowcount or 0)

    def addresses(self, keys: Iterable[str]) -> dict[str, Signup]:
        """The sign-ups of ``keys`` (lower-cased), by address."""
        wanted = list(keys)
        found: dict[str, Signup] = {}
        with self.db.tx() as conn:
            for start in range(0, len(wanted), 500):
                for row in conn.execute(
                    select(signups).where(signups.c.email.in_(wanted[start : start + 500]))
                ):
                    found[row.email] = _signup(row)
        return found
