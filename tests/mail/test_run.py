"""Who gets what, and what survives failures: DigestRun over the ledger and a transport.

Every run goes through the real pieces (subscribers file, SQLite ledger, Composer) to an
in-memory transport that scripts refusals per recipient, like the SMTP test server does: what
a refusal means to the ledger is decided here, what an SMTP server's reply becomes is tested in
test_transport.py, and faults of a real server in test_smtp_faults.py. Time is driven by the
``clock`` given to DigestRun, never by sleeping.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from smtpserver import Received

from service import cli
from service.content.slug import category
from service.ledger import State
from service.mail.compose import Composer
from service.mail.mime import message_id
from service.mail.run import DigestRun, RunReport, run_digest
from service.mail.subscribers import read_entries
from service.mail.transport import MemoryTransport, Outcome
from service.model import Article, Frequency
from service.settings import Settings, load_settings

T0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
KEY = b"unsubscribe key for delivery tests"


def article(
    ident: str,
    title: str | None = None,
    *,
    date: datetime = T0 - timedelta(days=1),
    section: str = "Thông báo",
) -> Article:
    return Article(
        id=ident,
        slug=ident.replace("/", "-"),
        title=title or f"Tin {ident}",
        date=date,
        category=category(section),
        summary=f"Tóm tắt {ident}.",
        content_html=f"<p>{ident}</p>",
        source=f"{ident}.md",
    )


def subscriber(email: str, frequency: str = "daily", categories: str = "", name: str = "") -> str:
    lines = [f'[[subscriber]]\nemail = "{email}"\nfrequency = "{frequency}"\n']
    if name:
        lines.append(f'name = "{name}"\n')
    if categories:
        lines.append(f"categories = {categories}\n")
    return "".join(lines)


class Mailroom(MemoryTransport):
    """The in-memory transport with refusals scripted per recipient, read like the SMTP server.

    mail.script("busy@example.org", "450 4.2.1 try later", times=2)  # None: always
    """

    def __init__(self) -> None:
        super().__init__(self._reply, concurrency=2)
        self.attempts: Counter[str] = Counter()
        self._script: dict[str, list[Outcome]] = {}
        self._always: dict[str, Outcome] = {}

    def script(self, address: str, reply: str, times: int | None = None) -> None:
        code, _, text = reply.partition(" ")
        outcome = Outcome(False, int(code), text, "rcpt")
        if times is None:
            self._always[address] = outcome
        else:
            self._script.setdefault(address, []).extend([outcome] * times)

    def clear(self) -> None:
        self._script.clear()
        self._always.clear()

    def _reply(self, recipient: str) -> Outcome | None:
        self.attempts[recipient] += 1
        queued = self._script.get(recipient)
        return queued.pop(0) if queued else self._always.get(recipient)

    @property
    def received(self) -> list[Received]:
        return [Received(sent.recipient, sent.data) for sent in self.sent]

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if r.recipient == address]

    def recipients(self) -> list[str]:
        return [sent.recipient for sent in self.sent]


class Harness:
    """A project and its ledger; ``run`` is one DigestRun over ``mail``, like `bantin digest`."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.config = project / "config" / "bantin.toml"
        self.config.write_text(
            '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
            '[mail]\nfrom = "Bản tin tỉnh <bantin@tinh.example.gov.vn>"\n',
            encoding="utf-8",
        )
        self.settings: Settings = load_settings(self.config)
        self.state = State(self.settings.state.url)
        self.composer = Composer(self.settings, KEY)
        self.mail = Mailroom()

    def subscribers(self, *blocks: str) -> None:
        self.settings.mail.subscribers_file.write_text("\n".join(blocks), encoding="utf-8")

    def run(
        self,
        published: Sequence[Article],
        *,
        at: datetime = T0,
        frequency: Frequency = "daily",
        retry_delays: Sequence[float] = (0.01,),
        dry_run: bool = False,
        clock: Callable[[], datetime] | None = None,
    ) -> RunReport:
        visible = [a for a in published if a.is_published(at)]
        known = {a.category.slug: a.category.name for a in visible}
        run = DigestRun(
            self.state,
            self.composer,
            self.mail,
            frequency,
            visible,
            read_entries(self.settings.mail.subscribers_file, known),
            dry_run=dry_run,
            retry_delays=retry_delays,
            clock=clock or (lambda: at),
        )
        return asyncio.run(run_digest(run))


@pytest.fixture
def harness(project: Path) -> Iterator[Harness]:
    h = Harness(project)
    yield h
    h.state.close()


@pytest.fixture
def mail(harness: Harness) -> Mailroom:
    return harness.mail


def titles(mail: Mailroom, address: str) -> list[list[str]]:
    """For each message ``address`` received, the article titles in its text part."""
    result = []
    for received in mail.to(address):
        text = received.message.get_body(("plain",))
        assert text is not None
        body = text.get_content().replace("\r\n", "\n")
        result.append(
            sorted(line.split(". ", 1)[1] for line in body.splitlines() if ". Tin " in line)
        )
    return result


# -- who gets what ------------------------------------------------------------------------


def test_new_subscribers_get_no_back_catalogue_and_news_reaches_them_once(
    harness: Harness, mail: Mailroom
) -> None:
    harness.subscribers(
        subscriber("all@example.org"),
        subscriber("lich@example.org", categories='["Lịch tiếp công dân"]'),
        subscriber("slug@example.org", categories='["thong-bao"]'),
    )
    old = [article("old-1"), article("old-2", section="Lịch tiếp công dân")]
    report = harness.run(old)
    assert (report.sent, report.subscribers) == (0, 3)
    assert mail.received == []

    news = [*old, article("new-1", section="Lịch tiếp công dân"), article("new-2")]
    report = harness.run(news, at=T0 + timedelta(hours=1))
    assert report.sent == 3
    assert titles(mail, "all@example.org") == [["Tin new-1", "Tin new-2"]]
    assert titles(mail, "lich@example.org") == [["Tin new-1"]]
    assert titles(mail, "slug@example.org") == [["Tin new-2"]]

    # a rerun, then an edited article (same id, new title): nothing is news
    assert harness.run(news, at=T0 + timedelta(hours=2)).sent == 0
    edited = [*old, article("new-1", "Tin new-1 (sửa lại)"), article("new-2")]
    assert harness.run(edited, at=T0 + timedelta(hours=3)).sent == 0
    assert len(mail.received) == 3

    # backdated a year but first seen today: news today
    backdated = [*edited, article("backdated", date=T0 - timedelta(days=365))]
    assert harness.run(backdated, at=T0 + timedelta(hours=4)).sent == 2
    assert titles(mail, "all@example.org")[-1] == ["Tin backdated"]
    assert titles(mail, "slug@example.org")[-1] == ["Tin backdated"]
    assert len(mail.to("lich@example.org")) == 1


def test_a_future_dated_article_is_news_when_its_date_comes(
    harness: Harness, mail: Mailroom
) -> None:
    harness.subscribers(subscriber("hoa@example.org"))
    future = article("future", date=T0 + timedelta(days=2))
    everything = [article("old"), future]
    assert harness.run(everything, at=T0).sent == 0
    assert harness.run(everything, at=T0 + timedelta(days=1)).sent == 0
    assert harness.run(everything, at=T0 + timedelta(days=2, hours=1)).sent == 1
    assert titles(mail, "hoa@example.org") == [["Tin future"]]
    assert harness.run(everything, at=T0 + timedelta(days=3)).sent == 0


def test_frequencies_are_separate_and_an_article_reaches_a_subscriber_once_across_them(
    harness: Harness, mail: Mailroom
) -> None:
    daily, weekly, switch = "daily@example.org", "weekly@example.org", "switch@example.org"
    harness.subscribers(
        subscriber(daily), subscriber(weekly, "weekly"), subscriber(switch, "weekly")
    )
    articles = [article("a0")]
    harness.run(articles)
    harness.run(articles, frequency="weekly")

    articles.append(article("a1"))
    assert harness.run(articles, at=T0 + timedelta(days=1)).sent == 1  # the daily one only
    articles.append(article("a2"))
    assert harness.run(articles, at=T0 + timedelta(days=2)).sent == 1
    assert titles(mail, daily) == [["Tin a1"], ["Tin a2"]]
    assert mail.to(weekly) == [] and mail.to(switch) == []

    # switch moves from weekly to daily before its weekly digest: it must still get a1 and a2
    harness.subscribers(subscriber(daily), subscriber(weekly, "weekly"), subscriber(switch))
    articles.append(article("a3"))
    assert harness.run(articles, at=T0 + timedelta(days=3)).sent == 2
    assert titles(mail, switch) == [["Tin a1", "Tin a2", "Tin a3"]]
    assert titles(mail, daily)[-1] == ["Tin a3"]

    # ... and back to weekly, beside the one who was weekly all along: nothing twice
    harness.subscribers(
        subscriber(daily), subscriber(weekly, "weekly"), subscriber(switch, "weekly")
    )
    assert harness.run(articles, at=T0 + timedelta(days=4), frequency="weekly").sent == 1
    assert titles(mail, weekly) == [["Tin a1", "Tin a2", "Tin a3"]]
    assert mail.to(switch) and len(mail.to(switch)) == 1
    for address in (daily, weekly, switch):
        seen = [t for message in titles(mail, address) for t in message]
        assert len(seen) == len(set(seen)), f"{address} got an article twice: {seen}"


def test_empty_digests_are_never_sent_and_unsubscribed_addresses_get_nothing(
    harness: Harness, mail: Mailroom
) -> None:
    harness.subscribers(
        subscriber("picky@example.org", categories='["Lịch tiếp công dân"]'),
        subscriber("left@example.org"),
        subscriber("stays@example.org"),
    )
    harness.run([article("old")])
    assert harness.state.subscribers.unsubscribe("LEFT@example.org", T0)
    report = harness.run([article("old"), article("new")], at=T0 + timedelta(hours=1))
    assert report.sent == 1
    assert mail.recipients() == ["stays@example.org"]
    assert harness.state.counts()["pending"] == 0
    assert harness.state.counts()["unsubscribed"] == 1


# -- failures -------------------------------------------------------------------------------


def test_a_4xx_is_retried_in_the_run_then_left_pending_and_resent_with_the_same_message_id(
    harness: Harness, mail: Mailroom
) -> None:
    harness.subscribers(
        subscriber("busy@example.org"),
        subscriber("blip@example.org"),
        subscriber("fine@example.org"),
    )
    harness.run([article("old")])
    mail.script("busy@example.org", "450 4.2.1 mailbox busy, try later", times=2)
    mail.script("blip@example.org", "451 4.3.0 local problem", times=1)
    news = [article("old"), article("new")]
    report = harness.run(news, at=T0 + timedelta(hours=1), retry_delays=(0.01,))
    assert (report.sent, report.deferred, report.failed) == (2, 1, 0)
    assert mail.attempts["busy@example.org"] == 2  # the first try and one retry
    assert mail.attempts["blip@example.org"] == 2  # retried within the run, then sent
    assert len(mail.to("blip@example.org")) == 1
    [pending] = harness.state.deliveries.pending()
    assert pending.email == "busy@example.org" and pending.attempts == 2
    [problem] = harness.state.deliveries.problems()
    assert (problem.status, problem.code) == ("pending", 450)
    assert problem.reply is not None and "mailbox busy" in problem.reply

    # the name given since in the file is the one the waiting message is sent with
    harness.subscribers(
        subscriber("busy@example.org", name="Nguyễn Văn Bận"),
        subscriber("blip@example.org"),
        subscriber("fine@example.org"),
    )
    report = harness.run(news, at=T0 + timedelta(hours=2))
    assert (report.sent, report.deferred) == (1, 0)
    [resent] = mail.to("busy@example.org")
    assert resent.message["To"] == "Nguyễn Văn Bận <busy@example.org>"
    assert resent.message_id == pending.message_id
    assert resent.message_id == message_id("busy@example.org", ["new"], "tinh.example.gov.vn")
    assert harness.state.deliveries.pending() == []
    assert sorted(mail.recipients()) == [
        "blip@example.org",
        "busy@example.org",
        "fine@example.org",
    ]


def test_a_5xx_is_recorded_not_retried_and_three_in_a_row_suspend_until_resumed(
    harness: Harness, mail: Mailroom, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = "gone@example.org"
    harness.subscribers(subscriber(gone), subscriber("fine@example.org"))
    mail.script(gone, "550 5.1.1 no such user here")
    articles = [article("a0")]
    harness.run(articles)
    for day in (1, 2, 3):
        articles.append(article(f"a{day}"))
        report = harness.run(articles, at=T0 + timedelta(days=day), retry_delays=(0.01, 0.01))
        assert (report.sent, report.failed, report.deferred) == (1, 1, 0)
        assert mail.attempts[gone] == day  # never retried
        assert report.suspended == ([gone] if day == 3 else [])
    assert mail.to(gone) == []
    assert len(mail.to("fine@example.org")) == 3
    problems = harness.state.deliveries.problems()
    assert [(p.status, p.code) for p in problems] == [("failed", 550)] * 3
    assert all(p.reply == "5.1.1 no such user here" for p in problems)
    assert harness.state.subscribers.addresses("suspended")[0][0] == gone

    # suspended: not even tried
    articles.append(article("a4"))
    assert harness.run(articles, at=T0 + timedelta(days=4)).sent == 1
    assert mail.attempts[gone] == 3

    # the operator resumes it; the mailbox exists again
    assert cli.main(["--config", str(harness.config), "resume", gone]) == 0
    assert "no longer suspended" in capsys.readouterr().out
    assert cli.main(["--config", str(harness.config), "resume", gone]) == 1
    assert harness.state.subscribers.addresses("suspended") == []
    mail.clear()
    articles.append(article("a5"))
    assert harness.run(articles, at=T0 + timedelta(days=5)).sent == 2
    [back] = mail.to(gone)
    assert "Tin a5" in titles(mail, gone)[0]
    assert back.message["To"].addresses[0].addr_spec == gone


def test_dry_run_counts_what_a_real_run_sends_and_records_nothing(
    harness: Harness, mail: Mailroom
) -> None:
    harness.subscribers(subscriber("a@example.org"), subscriber("b@example.org", "weekly"))
    articles = [article("a0")]
    before = harness.state.counts()
    first = harness.run(articles, dry_run=True)
    assert harness.state.articles.last_seq() == 0 and harness.state.counts() == before
    assert first.sent == harness.run(articles).sent == 0  # first run: no back catalogue
    articles.append(article("a1"))
    dry = harness.run(articles, at=T0 + timedelta(hours=1), dry_run=True)
    assert mail.received == [] and harness.state.articles.last_seq() == 1
    assert dry.sent == harness.run(articles, at=T0 + timedelta(hours=1)).sent == 1


def test_invalid_entries_are_never_mailed_and_waiting_mail_follows_the_file(
    harness: Harness, mail: Mailroom
) -> None:
    harness.subscribers(
        subscriber("a@example.org"),
        subscriber("b@example.org"),
        subscriber("c@example.org"),
        subscriber("d@example.org"),
    )
    harness.run([article("old")])
    for address in ("a@example.org", "b@example.org", "c@example.org", "d@example.org"):
        mail.script(address, "450 4.2.1 later", times=2)
    articles = [article("old"), article("new")]
    report = harness.run(articles, at=T0 + timedelta(hours=1))
    assert (report.sent, report.deferred) == (0, 4)
    assert len(harness.state.deliveries.pending()) == 4

    # b's entry breaks (a line break in the name), c unsubscribes: neither is mailed, and the
    # file has a problem, so d's pending mail waits although d left the file
    harness.subscribers(
        subscriber("a@example.org"),
        subscriber("b@example.org", name="B\\nBcc: x@example.org"),
        subscriber("c@example.org"),
    )
    harness.state.subscribers.unsubscribe("c@example.org", T0)
    # the unsubscription itself cancels what waited for c: no host sends it, in no run
    assert "c@example.org" not in {d.email for d in harness.state.deliveries.pending()}
    report = harness.run(articles, at=T0 + timedelta(hours=2))
    assert (report.sent, report.invalid, report.cancelled) == (1, 1, 0)
    assert mail.recipients() == ["a@example.org"]
    assert sorted(d.email for d in harness.state.deliveries.pending()) == [
        "b@example.org",
        "d@example.org",
    ]

    # the file is fixed without d: d's mail is cancelled, b's goes out
    harness.subscribers(subscriber("a@example.org"), subscriber("b@example.org"))
    report = harness.run(articles, at=T0 + timedelta(hours=3))
    assert (report.sent, report.cancelled) == (1, 1)
    assert mail.recipients() == ["a@example.org", "b@example.org"]
    assert harness.state.deliveries.pending() == []
    assert harness.state.counts()["cancelled"] == 2


# -- composing ----------------------------------------------------------------------------


def test_a_batch_is_composed_at_one_moment_so_its_digests_share_one_render(
    harness: Harness, mail: Mailroom
) -> None:
    """With a clock that moves between calls, as the real one does, the digests of one batch
    still share one render: a moment per message made each digest a render of its own, and
    another whole one to check it."""
    people = [subscriber(f"nguoi{n}@example.org") for n in range(24)]
    harness.subscribers(*people)
    harness.run([article("old")])
    at = T0 + timedelta(hours=1)
    ticks = itertools.count()
    report = harness.run(
        [article("old"), article("new-1"), article("new-2")],
        at=at,
        clock=lambda: at + timedelta(milliseconds=next(ticks)),
    )
    assert report.sent == 24 and len(mail.received) == 24
    shared = harness.composer.shared
    assert shared.hits == 24
    # two senders take 8, 8, then the 8 left: a render (and its check) per batch at most
    assert 1 <= shared.made <= 3
    assert titles(mail, "nguoi23@example.org") == [["Tin new-1", "Tin new-2"]]
