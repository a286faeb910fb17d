"""The subscription desk: what a submission of the form, a confirmation and a change of
preferences do, in the ledger and by mail. The HTTP side (serve/signup.py) hands it the fields
and the client's address, and shows the page it answers.

Every accepted submission gets the same answer ("look in your mailbox"), whatever the address:
new, pending, subscribed, suppressed, over its limit, or a robot's (the honeypot field). What
differs happens out of sight: a confirmation mail, a "you are subscribed already" mail with the
preferences link, or nothing. Mail is sent in the background, so the answer's timing says
nothing either. Limits are counted in the state, so every host sharing it counts the same:
``ip_limit`` submissions per client per hour (then 429), ``address_limit`` mails per address
per day (then silently nothing), ``hourly_limit`` mails per hour in all (then 503).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from service import clock as wall_clock
from service.clock import Clock
from service.content.slug import offered
from service.errors import BantinError, TemplateError
from service.ledger import State
from service.ledger.throttles import address_key, client_key
from service.mail.compose import Composer
from service.mail.notices import Notice, Notices
from service.mail.signup_form import (
    HONEYPOT,
    Fields,
    choice_errors,
    client_group,
    many,
    mask,
    one,
    read_form,
    stored_categories,
)
from service.mail.tokens import (
    PREFERENCES,
    confirm_url,
    issued_at,
    preferences_url,
    read_confirm_token,
    read_token,
)
from service.mail.transport import Transport, transport_for
from service.model import (
    Category,
    Frequency,
    SignupAnswer,
    SignupForm,
    Subscriber,
    consent_version,
)
from service.settings import Settings
from service.templating import render_consent

__all__ = ["Desk"]

log = logging.getLogger("bantin.signup")

_Mail = tuple[Notice, Subscriber, Mapping[str, str | int]]  # what to send to whom, with what links


class Desk:
    """The subscription form's decisions, shared by every host (the limits live in the state).

    ``settings`` and ``composer`` give the configuration in force, ``categories`` the categories
    the articles have now, ``key`` the key that signs links.
    """

    def __init__(
        self,
        state: State,
        *,
        settings: Callable[[], Settings],
        composer: Callable[[], Composer],
        categories: Callable[[], Sequence[Category]],
        key: Callable[[], bytes],
        transport: Callable[[Settings], Transport] = transport_for,
        clock: Clock = wall_clock.now,
    ) -> None:
        self.state = state
        self.settings = settings
        self.composer = composer
        self.categories = categories
        self.key = key
        self.transport = transport
        self.clock = clock
        self._sending: set[asyncio.Task[None]] = set()

    # -- the form ----------------------------------------------------------------------------

    def offered(self) -> tuple[Category, ...]:
        """The categories the form offers now."""
        return offered(self.settings().subscribe.categories, self.categories())

    def consent(self) -> str:
        """The consent text the form shows now; TemplateError if its template fails."""
        settings = self.settings()
        return render_consent(
            self.composer().templates, site=settings.site, hours=settings.subscribe.confirm_hours
        )

    def blank(self, category: str | None = None) -> SignupAnswer:
        """The empty form; ``category`` (a slug) ticked if the form offers it."""
        if not self.settings().subscribe.enabled:
            return SignupAnswer("closed", 404)
        categories = self.offered()
        chosen = frozenset({category} & {c.slug for c in categories}) if category else frozenset()
        consent = self.consent()
        form = SignupForm(categories, consent, consent_version(consent), chosen)
        return SignupAnswer("form", form=form)

    async def submit(self, fields: Fields, ip: str) -> SignupAnswer:
        """A submission of the form from the client at ``ip``: the page to answer; the mail it
        calls for goes out in the background."""
        answer, mail = await asyncio.to_thread(self._take, fields, ip)
        if mail is not None:
            self._send(*mail)
        return answer

    def _take(self, fields: Fields, ip: str) -> tuple[SignupAnswer, _Mail | None]:
        """The submission's answer, and the mail to send (on a thread: the ledger, templates)."""
        settings = self.settings()
        limits = settings.subscribe
        if not limits.enabled:
            return SignupAnswer("closed", 404), None
        now = self.clock()
        throttles = self.state.throttles
        try:
            seen = throttles.hit(client_key(client_group(ip)), timedelta(hours=1), now)
            if seen > limits.ip_limit:
                if seen == limits.ip_limit + 1:  # once per client and hour
                    log.warning("sign-up form: a client sent over %d forms in an hour", seen - 1)
                return SignupAnswer("limited", 429), None
            consent = self.consent()
            subscriber, form = read_form(fields, self.offered(), consent, limits.categories)
            if form.errors:
                return SignupAnswer(
                    "form", 409 if "consent" in form.errors else 400, form=form
                ), None
            assert subscriber is not None
            sent = SignupAnswer("sent", email=subscriber.email)
            if one(fields, HONEYPOT):
                log.info("sign-up form: a submission with the hidden field filled in was ignored")
                return sent, None
            if throttles.hit("all", timedelta(hours=1), now) > limits.hourly_limit:
                log.warning(
                    "sign-up form: subscribe.hourly_limit (%d mails an hour) reached; "
                    "submissions are refused until the hour has passed",
                    limits.hourly_limit,
                )
                return SignupAnswer("limited", 503), None
            if throttles.hit(address_key(subscriber.key), timedelta(days=1), now) > (
                limits.address_limit
            ):
                log.info("sign-up form: %s had its mails for the day", mask(subscriber.key))
                return sent, None
            standing, since = self.state.signups.request(subscriber, ip, consent, now)
            base, key = settings.site.base_url, self.key()
        except (BantinError, TemplateError) as exc:
            log.error("sign-up form: %s", exc)
            return SignupAnswer("error", 503), None
        if standing == "pending":
            link = confirm_url(base, key, subscriber.key, since)
            return sent, (
                "confirm",
                subscriber,
                {"confirm_url": link, "hours": limits.confirm_hours},
            )
        link = preferences_url(base, key, subscriber.key)
        return sent, ("subscribed", subscriber, {"preferences_url": link})

    # -- confirmation ------------------------------------------------------------------------

    def _confirmation(self, token: str) -> tuple[str, int] | SignupAnswer:
        settings = self.settings()
        if not settings.subscribe.enabled:
            return SignupAnswer("closed", 404)
        found = read_confirm_token(self.key(), token)
        if found is None:
            return SignupAnswer("invalid", 400)
        email, issued = found
        if self.clock() >= issued_at(issued) + timedelta(hours=settings.subscribe.confirm_hours):
            return SignupAnswer("expired", 410, email=email)
        return found

    async def confirmation(self, token: str) -> SignupAnswer:
        """The page a confirmation link opens: what is about to be confirmed, and the button.
        Nothing changes: mail scanners open links too."""
        found = self._confirmation(token)
        if isinstance(found, SignupAnswer):
            return found
        email, issued = found
        try:
            signup = await asyncio.to_thread(self.state.signups.get, email)
        except BantinError as exc:
            log.error("sign-up confirmation: %s", exc)
            return SignupAnswer("error", 503)
        if signup is None:
            return SignupAnswer("expired", 410, email=email)
        if signup.status == "confirmed":
            return SignupAnswer("confirmed", email=signup.address)
        if int(signup.requested_at.timestamp()) != issued:
            return SignupAnswer("expired", 410, email=email)
        return SignupAnswer(
            "confirm",
            email=signup.address,
            frequency=signup.frequency,
            category_names=self._names(signup.categories),
        )

    async def confirm(self, token: str, ip: str) -> SignupAnswer:
        """The confirmation button pressed: the subscriber is subscribed."""
        found = self._confirmation(token)
        if isinstance(found, SignupAnswer):
            return found
        email, issued = found
        try:
            done = await asyncio.to_thread(
                self.state.signups.confirm, email, issued, ip, self.clock()
            )
        except BantinError as exc:
            log.error("sign-up confirmation: %s", exc)
            return SignupAnswer("error", 503)
        if done == "stale":
            return SignupAnswer("expired", 410, email=email)
        if done == "confirmed":
            log.info("sign-up confirmed: %s", mask(email))
        return SignupAnswer("confirmed", email=email)

    # -- preferences -------------------------------------------------------------------------

    async def preferences(self, token: str) -> SignupAnswer:
        """The preferences page of the subscriber the link names."""
        email = read_token(self.key(), token, PREFERENCES)
        if email is None:
            return SignupAnswer("invalid", 400)
        try:
            signup, receives = await asyncio.to_thread(self.state.signups.standing, email)
        except BantinError as exc:
            log.error("preferences: %s", exc)
            return SignupAnswer("error", 503)
        if not receives:
            return SignupAnswer("unsubscribed", email=email)
        if signup is None or signup.status != "confirmed" or signup.in_file:
            return SignupAnswer("office", email=email)
        categories = self.offered()
        # a category the subscriber chose that the form no longer offers stays on their page
        names = {c.slug: c.name for c in self.categories()}
        extra = tuple(
            Category(names.get(slug, slug), slug)
            for slug in sorted((signup.categories or set()) - {c.slug for c in categories})
        )
        form = SignupForm(
            categories + extra,
            "",
            "",
            chosen=signup.categories or frozenset(),
            frequency=signup.frequency,
            email=signup.address,
            name=signup.name or "",
        )
        return SignupAnswer("preferences", form=form, email=signup.address)

    async def change(self, token: str, fields: Fields) -> SignupAnswer:
        """The preferences form sent: save the new choices, or unsubscribe."""
        email = read_token(self.key(), token, PREFERENCES)
        if email is None:
            return SignupAnswer("invalid", 400)
        now = self.clock()
        try:
            if one(fields, "action") == "unsubscribe":
                if await asyncio.to_thread(self.state.subscribers.unsubscribe, email, now):
                    log.info("unsubscribed on the preferences page: %s", mask(email))
                return SignupAnswer("unsubscribed", email=email)
            current = await self.preferences(token)
            if current.page != "preferences" or current.form is None:
                return current
            categories = current.form.categories
            chosen = many(fields, "categories")
            frequency = one(fields, "frequency")
            errors = choice_errors(frequency, chosen, categories)
            if errors:
                form = SignupForm(
                    categories,
                    "",
                    "",
                    chosen=frozenset(chosen),
                    frequency=current.form.frequency,
                    email=current.form.email,
                    errors=errors,
                )
                return SignupAnswer("preferences", 400, form=form, email=current.email)
            allow = self.settings().subscribe.categories
            slugs = stored_categories(chosen, categories, allow is not None)
            freq: Frequency = frequency  # type: ignore[assignment]
            if not await asyncio.to_thread(self.state.signups.change, email, freq, slugs):
                return SignupAnswer("office", email=email)
        except BantinError as exc:
            log.error("preferences: %s", exc)
            return SignupAnswer("error", 503)
        return SignupAnswer(
            "saved", email=current.email, frequency=freq, category_names=self._names(slugs)
        )

    # -- mail ----------------------------------------------------------------------------------

    def _names(self, slugs: frozenset[str] | None) -> tuple[str, ...]:
        if slugs is None:
            return ()
        names = {c.slug: c.name for c in (*self.categories(), *self.offered())}
        return tuple(sorted(names.get(s, s) for s in slugs))

    def _send(self, kind: Notice, to: Subscriber, context: Mapping[str, str | int]) -> None:
        task = asyncio.create_task(self._deliver(kind, to, context), name=f"signup-{kind}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(
        self, kind: Notice, to: Subscriber, context: Mapping[str, str | int]
    ) -> None:
        settings = self.settings()
        notices = Notices(self.composer())
        try:
            data = await asyncio.to_thread(
                notices.build,
                kind,
                to,
                self.clock(),
                confirm_url=str(context.get("confirm_url", "")),
                hours=int(context.get("hours", 0)),
                preferences_url=str(context.get("preferences_url", "")),
            )
        except (TemplateError, ValueError) as exc:  # ValueError: a header refused by mime
            log.error("sign-up mail not composed: %s", exc)
            return
        transport = self.transport(settings)
        try:
            outcome = await transport.send(notices.sender, to.email, data)
        except Exception as exc:  # a task nobody awaits: say it here, or it is lost
            log.error(
                "sign-up mail (%s) to %s not sent by %s: %s; the person can send the form again",
                kind,
                mask(to.key),
                transport.name,
                exc,
            )
            return
        finally:
            await transport.close()
        if outcome.ok:
            log.info("sign-up mail (%s) sent to %s", kind, mask(to.key))
        else:
            reply = re.sub(re.escape(to.email), mask(to.key), outcome.reply, flags=re.IGNORECASE)
            log.error(
                "sign-up mail (%s) to %s not sent by %s: %s %s; the person can send the form again",
                kind,
                mask(to.key),
                transport.name,
                outcome.code or "",
                reply,
            )

    async def settled(self) -> None:
        """Wait for the mails being sent (a test, a stop)."""
        while self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)
