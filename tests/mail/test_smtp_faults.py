"""A refusal that concerns every message is never blamed on the subscribers.

The critical finding: a wrong SMTP password (535), a refused sender, "relaying denied" to every
recipient, or content refused after DATA was recorded as each subscriber's permanent failure;
after three runs every subscriber was suspended, every run exited 0, and once the password was
fixed nothing went out. Here a real SMTP server scripts each class of reply; `bantin digest`
runs three times against the fault, then once after the operator fixes it, and each subscriber
must get the digest exactly once, with nobody suspended or failed on the way. A connection
that drops and a server that is down lose nothing either.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from smtpserver import Server, free_port, refusing_server, running_server

from service import cli
from service.cli import mail as cli_mail
from service.ledger import State
from service.mail.replies import classify
from service.mail.run import DigestRun

PEOPLE = [f"nguoi{n}@example.org" for n in range(6)]
SECRET = "mat-khau-dung"


@dataclass
class Site:
    project: Path
    server: Server
    monkeypatch: pytest.MonkeyPatch
    stack: ExitStack

    @property
    def config(self) -> Path:
        return self.project / "config" / "bantin.toml"

    def configure(self, *, port: int | None = None, security: str = "none") -> None:
        self.config.write_text(
            '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
            '[mail]\ntransport = "smtp"\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {port or self.server.port}\n'
            f'security = "{security}"\nusername = "bantin"\ntimeout = 5\nconcurrency = 2\n',
            encoding="utf-8",
        )

    def password(self, value: str) -> None:
        self.monkeypatch.setenv("BANTIN_SMTP__PASSWORD", value)

    def publish(self, name: str, title: str) -> None:
        (self.project / "content" / f"{name}.md").write_text(
            f"---\ntitle: {title}\ndate: 2024-05-01\n---\nNội dung.\n", encoding="utf-8"
        )

    def digest(self, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        code = cli.main(["--config", str(self.config), "digest", "--frequency", "daily"])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    def state(self) -> State:
        return State("sqlite:///var/bantin.db")


@dataclass(frozen=True)
class Fault:
    name: str
    apply: Callable[[Site], None]
    undo: Callable[[Site], None]
    advice: str  # what the stop reason must point the operator to


def _relay_denied(site: Site) -> None:
    for person in PEOPLE:
        site.server.script(person, f"554 5.7.1 <{person}>: Relay access denied")


def _policy_for_everyone(site: Site) -> None:
    for person in PEOPLE:
        site.server.script(person, "550 5.7.1 Service unavailable; client host blocked")


def _full_for_everyone(site: Site) -> None:
    for person in PEOPLE:
        site.server.script(person, "452 4.3.1 Insufficient system storage")


def _refusing(greeting: str) -> Callable[[Site], None]:
    def apply(site: Site) -> None:
        site.configure(port=site.stack.enter_context(refusing_server(greeting)))

    return apply


def _set(attribute: str, value: str | None) -> Callable[[Site], None]:
    return lambda site: setattr(site.server.recorder, attribute, value)


FAULTS = [
    Fault("wrong password", lambda s: s.password("sai-mat-khau"), lambda s: s.password(SECRET),
          "smtp.username"),
    Fault("sender refused", _set("mail_reply", "553 5.7.1 <bantin@tinh.example.gov.vn>: "
          "Sender address rejected: not owned by user"), _set("mail_reply", None), "mail.from"),
    Fault("relaying denied to every recipient", _relay_denied, lambda s: s.server.clear(),
          "will not relay"),
    Fault("the same policy refusal to every recipient", _policy_for_everyone,
          lambda s: s.server.clear(), "same refusal"),
    Fault("452 to every recipient", _full_for_everyone, lambda s: s.server.clear(),
          "same refusal"),
    Fault("content refused after DATA", _set("data_reply", "554 5.7.1 Message rejected as spam"),
          _set("data_reply", None), "content"),
    Fault("554 on connect", _refusing("554 5.3.2 No SMTP service here"),
          lambda s: s.configure(), "smtp.host"),
    Fault("421 on connect", _refusing("421 4.3.2 Service shutting down"),
          lambda s: s.configure(), "smtp.host"),
    Fault("nothing listens", lambda s: s.configure(port=free_port()), lambda s: s.configure(),
          "smtp.host"),
    Fault("no STARTTLS", lambda s: s.configure(security="starttls"), lambda s: s.configure(),
          "smtp.security"),
]  # fmt: skip


# every class of fault, with a server that offers PIPELINING (the pipelined transport sends
# MAIL, RCPT and DATA in one write: each refusal arrives mid-pipeline) and with one that does
# not (aiosmtplib, one command at a time)
@pytest.fixture(params=[True, False], ids=["pipelined", "one-at-a-time"])
def site(
    project: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Site]:
    pipelining: bool = request.param
    with ExitStack() as stack, running_server(password=SECRET, pipelining=pipelining) as server:
        site = Site(project, server, monkeypatch, stack)
        site.configure()
        site.password(SECRET)
        (project / "config" / "subscribers.toml").write_text(
            "".join(f'[[subscriber]]\nemail = "{p}"\n' for p in PEOPLE), encoding="utf-8"
        )
        yield site


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_server_wide_fault_stops_the_run_blames_nobody_and_loses_nothing(
    site: Site, fault: Fault, capsys: pytest.CaptureFixture[str]
) -> None:
    site.publish("cu", "Tin cũ")
    assert site.digest(capsys)[0] == 0  # the subscribers are seen: no back catalogue
    site.publish("moi", "Tin mới")
    fault.apply(site)
    for _ in range(3):
        code, output = site.digest(capsys)
        assert code == 1, output
        assert "stopped early" in output and fault.advice in output, output
        assert "sai-mat-khau" not in output
    state = site.state()
    try:
        counts = state.counts()
        assert (counts["failed"], counts["suspended"], counts["sent"]) == (0, 0, 0)
        assert counts["pending"] == len(PEOPLE)
        [run] = [r for r in state.runs.all() if r.kind == "digest:daily"]
        assert not run.ok and fault.advice in run.detail
    finally:
        state.close()
    assert cli.main(["--config", str(site.config), "status"]) == 0
    status = capsys.readouterr().out
    assert "FAILED" in status and fault.advice in status

    fault.undo(site)
    code, output = site.digest(capsys)
    assert code == 0, output
    assert sorted(site.server.recipients()) == PEOPLE  # each exactly once
    assert site.digest(capsys)[0] == 0 and len(site.server.recipients()) == len(PEOPLE)


def test_refusals_of_single_recipients_still_count_against_them(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """Undo nothing that was right: a dead mailbox fails; a policy refusal of one fails."""
    dead, blocked = PEOPLE[0], PEOPLE[3]
    site.server.script(dead, f"550 5.1.1 <{dead}>: Recipient address rejected: User unknown")
    site.server.script(blocked, "550 5.7.1 Recipient blocked by policy")
    site.publish("cu", "Tin cũ")
    assert site.digest(capsys)[0] == 0
    site.publish("moi", "Tin mới")
    code, output = site.digest(capsys)
    assert code == 0, output
    assert sorted(site.server.recipients()) == sorted(set(PEOPLE) - {dead, blocked})
    state = site.state()
    try:
        assert state.counts()["failed"] == 2
        assert {p.email for p in state.deliveries.problems()} == {dead, blocked}
    finally:
        state.close()


def test_many_dead_mailboxes_in_a_row_are_theirs_not_the_servers(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """The breaker is for policy refusals: 5.1.1 always names the recipient."""
    for person in PEOPLE:
        site.server.script(person, f"550 5.1.1 <{person}>: User unknown")
    site.publish("cu", "Tin cũ")
    assert site.digest(capsys)[0] == 0
    site.publish("moi", "Tin mới")
    code, output = site.digest(capsys)
    assert code == 0, output
    state = site.state()
    try:
        assert state.counts()["failed"] == len(PEOPLE)
    finally:
        state.close()


# --- a connection that drops, a server that is down ----------------------------------------


def test_a_dropped_connection_is_retried_and_does_not_block_the_others(
    site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the real command, with its retry within the run after 10 ms rather than 2 s
    monkeypatch.setattr(cli_mail, "DigestRun", functools.partial(DigestRun, retry_delays=(0.01,)))
    site.publish("cu", "Tin cũ")
    assert site.digest(capsys)[0] == 0
    site.server.script(PEOPLE[1], "drop", times=1)  # 421 and the connection closed
    site.server.script(PEOPLE[3], "421 4.7.0 too busy, closing", times=1)
    site.publish("moi", "Tin mới")
    code, output = site.digest(capsys)
    assert code == 0, output
    assert output.startswith("bantin digest daily: 6 sent, 0 deferred, 0 failed"), output
    assert sorted(site.server.recipients()) == PEOPLE
    assert (site.server.attempts[PEOPLE[1]], site.server.attempts[PEOPLE[3]]) == (2, 2)


def test_a_server_that_is_down_loses_nothing_and_the_next_run_sends_each_once(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    many = [f"s{n:02d}@example.org" for n in range(25)]  # more than the send queue holds
    (site.project / "config" / "subscribers.toml").write_text(
        "".join(f'[[subscriber]]\nemail = "{p}"\n' for p in many), encoding="utf-8"
    )
    site.publish("cu", "Tin cũ")
    assert site.digest(capsys)[0] == 0
    port = free_port()
    site.configure(port=port)
    site.publish("moi", "Tin mới")
    code, output = site.digest(capsys)
    assert code == 1 and "pending" in output, output
    state = site.state()
    try:
        assert (state.counts()["pending"], state.counts()["failed"]) == (25, 0)
    finally:
        state.close()
    with running_server(port=port, password=SECRET, pipelining=site.server.pipelining) as back:
        code, output = site.digest(capsys)
        assert code == 0, output
        assert output.startswith("bantin digest daily: 25 sent, 0 deferred"), output
        assert sorted(back.recipients()) == many
        assert site.digest(capsys)[0] == 0
    assert len(back.received) == 25


@pytest.mark.parametrize(
    ("stage", "code", "text", "scope", "permanent"),
    [
        ("rcpt", 550, "5.1.1 <a@b.c>: User unknown", "recipient", True),
        ("rcpt", 552, "5.2.2 Mailbox full", "recipient", True),
        ("rcpt", 450, "4.2.0 Greylisted", "recipient", False),
        ("rcpt", 550, "User unknown", "recipient", True),  # no enhanced code: suspect
        ("rcpt", 554, "5.7.1 <a@b.c>: Relay access denied", "server", True),
        ("rcpt", 530, "5.7.0 Authentication required", "server", True),
        ("rcpt", 553, "5.1.8 <x@y>: Sender address rejected: Domain not found", "server", True),
        ("rcpt", 421, "4.7.0 closing", "message", False),
        ("data", 554, "5.7.1 content rejected", "server", True),
        ("data", 552, "5.2.2 Over quota", "recipient", True),
        ("data", 451, "4.3.0 try later", "recipient", False),
        ("mail", 550, "5.7.1 sender rejected", "server", True),
        ("auth", 535, "5.7.8 bad credentials", "server", True),
        ("connect", None, "Connection refused", "server", False),
        ("network", None, "Connection lost", "message", False),
    ],
)
def test_each_reply_is_judged_by_whom_it_concerns(
    stage: str, code: int | None, text: str, scope: str, permanent: bool
) -> None:
    verdict = classify(stage, code, text)  # type: ignore[arg-type]
    assert (verdict.scope, verdict.permanent) == (scope, permanent)
