"""The pipelined SMTP connection (RFC 2920) answers every reply as aiosmtplib's path does.

Each case scripts one reply (or a dropped connection) at one stage of one message, on a real
aiosmtpd server that offers PIPELINING and on one that does not (then aiosmtplib sends one
command at a time), and sends the same four messages through each: one before, the one hit,
one after, and the hit one again. Every Outcome (accepted or not, code, reply, stage, verdict)
and what the server received must be the same on both paths: the pipelined transport is only
faster, never different.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from smtpserver import Server, running_server

from service.mail.transport import Outcome, SmtpTransport
from service.settings import SmtpSettings

SENDER = "bantin@tinh.example.gov.vn"
DATA = (
    b"From: bantin@tinh.example.gov.vn\r\nSubject: thu\r\nMessage-ID: <m@x>\r\n\r\n"
    b".dong bat dau bang dau cham\r\nNoi dung.\r\n"
)
REPLIES = [
    "421 4.3.2 Service shutting down",
    "450 4.2.1 Mailbox busy, try later",
    "451 4.3.0 Local error in processing",
    "452 4.3.1 Insufficient system storage",
    "550 5.1.1 <{who}>: Recipient address rejected: User unknown",
    "552 5.3.4 Message size exceeds fixed limit",
    "554 5.7.1 <{who}>: Relay access denied",
    "drop",  # 421, then the connection is closed
    "drop-now",  # 421, and closed before the replies to the commands pipelined after it
    "hangup",  # the connection is closed without a reply, mid-pipeline
]
STAGES = ["mail", "rcpt", "data", "message"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[bool, Server]]:
    with running_server(pipelining=True) as pipelined, running_server(pipelining=False) as plain:
        yield {True: pipelined, False: plain}


def transport(server: Server) -> SmtpTransport:
    settings = {"host": "127.0.0.1", "port": server.port, "security": "none", "timeout": 5}
    return SmtpTransport(SmtpSettings.model_validate(settings))


@dataclass(frozen=True)
class Seen:
    """What one path gave for one case, without what cannot be equal (seconds, socket text)."""

    outcomes: list[tuple[bool, int | None, str, str, object]]
    received: list[str]
    pipelined: int


def _seen(outcome: Outcome) -> tuple[bool, int | None, str, str, object]:
    # with no reply the text is the client's own account of the broken socket
    reply = outcome.reply if outcome.code is not None else ""
    return outcome.ok, outcome.code, reply, outcome.stage, outcome.verdict


def play(server: Server, case: str, stage: str, reply: str) -> Seen:
    before, hit, after = (f"{case}-{n}@example.org" for n in ("truoc", "trung", "sau"))
    hit_sender = f"{case}-gui@tinh.example.gov.vn"
    scripted = hit_sender if stage == "mail" else hit
    server.script(scripted, reply.format(who=scripted), times=1, stage=stage)
    smtp = transport(server)

    async def go() -> list[Outcome]:
        try:
            return [
                await smtp.send(SENDER, before, DATA),
                await smtp.send(hit_sender, hit, DATA),
                await smtp.send(SENDER, after, DATA),
                await smtp.send(hit_sender, hit, DATA),  # the script is spent: accepted now
            ]
        finally:
            await smtp.close()

    outcomes = asyncio.run(go())
    received = [r.recipient for r in server.received if r.recipient.startswith(f"{case}-")]
    return Seen([_seen(o) for o in outcomes], received, smtp.pipelined)


@pytest.mark.parametrize("reply", REPLIES, ids=[r.split()[0] for r in REPLIES])
@pytest.mark.parametrize("stage", STAGES)
def test_every_reply_at_every_stage_maps_as_aiosmtplib_maps_it(
    servers: dict[bool, Server], stage: str, reply: str
) -> None:
    case = f"{stage}{reply.split()[0]}"
    pipelined = play(servers[True], case, stage, reply)
    one_at_a_time = play(servers[False], case, stage, reply)
    assert pipelined.pipelined >= 1 and one_at_a_time.pipelined == 0  # both paths were taken
    assert pipelined.outcomes == one_at_a_time.outcomes
    assert pipelined.received == one_at_a_time.received
    # and what both say is right: the messages around the hit one are untouched by it
    _, code, _, failed_at, _ = pipelined.outcomes[1]
    assert [o[0] for o in pipelined.outcomes] == [True, False, True, True]
    assert pipelined.received == [f"{case}-{n}@example.org" for n in ("truoc", "sau", "trung")]
    if reply == "hangup":
        assert (code, failed_at) == (None, "network")
    else:
        assert code == (421 if reply.startswith("drop") else int(reply.split()[0]))
        assert failed_at == ("data" if stage == "message" else stage)


def test_an_outcome_waits_for_its_own_reply_and_the_next_message_waits_for_it(
    servers: dict[bool, Server],
) -> None:
    server = servers[True]
    smtp = transport(server)
    first, second = "cho-1@example.org", "cho-2@example.org"

    async def go() -> tuple[bool, int, list[Outcome]]:
        server.hold()
        try:
            sending = asyncio.create_task(smtp.send(SENDER, first, DATA))
            while not server.to(first):
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)
            # the server has the data but has not said 250: no outcome yet, and nothing of
            # the next message went out (the caller sends it only once it has the outcome)
            done_early = sending.done()
            attempts = server.attempts.get(second, 0)
        finally:
            server.release()
        outcomes = [await sending, await smtp.send(SENDER, second, DATA)]
        await smtp.close()
        return done_early, attempts, outcomes

    done_early, attempts, outcomes = asyncio.run(go())
    assert not done_early and attempts == 0
    assert [o.ok for o in outcomes] == [True, True]
    assert smtp.pipelined == 1  # both over one pipelined session


def test_a_send_cancelled_before_its_reply_never_lends_that_reply_to_the_next(
    servers: dict[bool, Server],
) -> None:
    """A sender cancelled while its message waits for the 250 leaves that 250 to come on the
    socket: the next message on the same session would read it as its own. The session is
    closed instead, and the next message, refused, is reported refused."""
    server = servers[True]
    smtp = transport(server)
    first, refused = "huy-1@example.org", "huy-2@example.org"
    server.script(refused, "550 5.1.1 <huy-2@example.org>: User unknown", times=1)

    async def go() -> Outcome:
        server.hold()
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(smtp.send(SENDER, first, DATA), timeout=0.3)
        finally:
            server.release()
        await asyncio.sleep(0.1)  # the 250 of the first is on its way back
        try:
            return await smtp.send(SENDER, refused, DATA)
        finally:
            await smtp.close()

    outcome = asyncio.run(go())
    assert (outcome.ok, outcome.code, outcome.stage) == (False, 550, "rcpt")
    assert smtp.pipelined == 2  # a new session for the second message


BODIES = {
    "crlf": DATA,
    "lf": DATA.replace(b"\r\n", b"\n"),
    "cr": DATA.replace(b"\r\n", b"\r"),
    "mixed": b"Subject: x\r\n\r\nmot\ndong\r\rba\r\n.\n..hai cham\n",
    "no-final-newline": b"Subject: x\r\n\r\n.cuoi",
    "dot-after-lf": b"Subject: x\n\n.\n.a\n",
}


@pytest.mark.parametrize("name", BODIES)
def test_line_endings_and_leading_dots_arrive_as_aiosmtplib_sends_them(
    servers: dict[bool, Server], name: str
) -> None:
    data = BODIES[name]
    got: dict[bool, bytes] = {}
    for pipelining, server in servers.items():
        recipient = f"dong-{name}-{pipelining}@example.org"
        smtp = transport(server)

        async def go(smtp: SmtpTransport = smtp, recipient: str = recipient) -> Outcome:
            try:
                return await smtp.send(SENDER, recipient, data)
            finally:
                await smtp.close()

        assert asyncio.run(go()).ok
        assert (smtp.pipelined >= 1) == pipelining
        got[pipelining] = next(r.data for r in server.received if r.recipient == recipient)
    assert got[True] == got[False]
    # the lines are the sender's lines, whatever their endings, and no dot was lost or added
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").rstrip(b"\n").split(b"\n")
    assert got[True].replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n") == lines
