"""The transports on their own: SMTP against a real aiosmtpd server, files, memory.

Each SMTP failure must come back as an Outcome naming the stage of the session it happened at,
because the stage is what decides whom a refusal concerns (replies.classify): a wrong password
is the server's matter, a 550 at RCPT the recipient's.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from smtpserver import Server, free_port, refusing_server, running_server

from service.content.slug import category
from service.ledger import State
from service.mail.compose import Composer
from service.mail.run import DigestRun, run_digest
from service.mail.subscribers import read_entries
from service.mail.transport import (
    FileTransport,
    MemoryTransport,
    Outcome,
    SmtpTransport,
    transport_for,
)
from service.model import Article
from service.settings import SmtpSettings, load_settings

REPO = Path(__file__).resolve().parents[2]
SENDER = "bantin@tinh.example.gov.vn"
PASSWORD = "mat-khau-dung"
NASTY = (
    "From: =?utf-8?b?QuG6o24gdGlu?= <bantin@tinh.example.gov.vn>\r\n"
    "To: hoa@example.org\r\n"
    "Subject: =?utf-8?b?TOG7i2NoIHRp4bq/cCBjw7RuZyBkw6Ju?=\r\n"
    "Message-ID: <x@tinh.example.gov.vn>\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    ".a line that starts with a dot\r\n"
    "..two dots\r\n"
    ".\r\n"
    "Ủy ban nhân dân tỉnh thông báo lịch tiếp công dân.\r\n" + "x" * 990 + "\r\n"
    "\r\n"
).encode()


def smtp(port: int, **changes: object) -> SmtpTransport:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "timeout": 5,
        **changes,
    }
    return SmtpTransport(SmtpSettings.model_validate(values))


def send_all(transport: SmtpTransport, *recipients: str, data: bytes = NASTY) -> list[Outcome]:
    """Send one message to each recipient in turn, then close the transport."""

    async def go() -> list[Outcome]:
        try:
            return [await transport.send(SENDER, r, data) for r in recipients]
        finally:
            await transport.close()

    return asyncio.run(go())


@pytest.fixture(params=[True, False], ids=["pipelined", "one-at-a-time"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server that offers PIPELINING (the pipelined transport), and one that does not."""
    with running_server(pipelining=request.param) as running:
        yield running


# --- SMTP: what each failure is reported as -------------------------------------------------


def test_a_wrong_password_fails_at_auth() -> None:
    with running_server(password=PASSWORD) as server:
        wrong = smtp(server.port, username="bantin", password=SecretStr("sai"))
        right = smtp(server.port, username="bantin", password=SecretStr(PASSWORD))
        [refused] = send_all(wrong, "hoa@example.org")
        [accepted] = send_all(right, "hoa@example.org")
        assert (refused.ok, refused.stage, refused.code) == (False, "auth", 535)
        assert refused.verdict.scope == "server"
        assert accepted.ok and server.recipients() == ["hoa@example.org"]


def test_starttls_is_required_not_opportunistic(server: Server) -> None:
    [outcome] = send_all(smtp(server.port, security="starttls"), "hoa@example.org")
    assert (outcome.ok, outcome.stage, outcome.code) == (False, "tls", None)
    assert "STARTTLS" in outcome.reply
    assert server.received == []  # nothing went out in clear text


@pytest.mark.parametrize("greeting", ["554 5.3.2 No SMTP service here", "421 4.3.2 Shutting down"])
def test_a_refused_greeting_fails_at_connect(greeting: str) -> None:
    with refusing_server(greeting) as port:
        [outcome] = send_all(smtp(port), "hoa@example.org")
    assert (outcome.ok, outcome.stage, outcome.code) == (False, "connect", int(greeting[:3]))
    assert outcome.reply == greeting[4:]


def test_a_closed_port_fails_at_connect() -> None:
    port = free_port()
    [outcome] = send_all(smtp(port), "hoa@example.org")
    assert (outcome.ok, outcome.stage, outcome.code) == (False, "connect", None)
    assert str(port) in outcome.reply
    assert outcome.reason == "network"


def test_a_refused_sender_fails_at_mail(server: Server) -> None:
    server.recorder.mail_reply = "553 5.7.1 Sender address rejected"
    [outcome] = send_all(smtp(server.port), "hoa@example.org")
    assert (outcome.ok, outcome.stage, outcome.code) == (False, "mail", 553)
    assert outcome.reply == "5.7.1 Sender address rejected"


def test_a_refused_recipient_fails_at_rcpt_and_the_connection_goes_on(server: Server) -> None:
    server.script("gone@example.org", "550 5.1.1 <gone@example.org>: User unknown")
    outcomes = send_all(smtp(server.port), "gone@example.org", "hoa@example.org")
    assert [(o.ok, o.stage, o.code) for o in outcomes] == [
        (False, "rcpt", 550),
        (True, "data", 250),
    ]
    assert outcomes[0].reply == "5.1.1 <gone@example.org>: User unknown"
    assert outcomes[0].permanent and outcomes[0].reason == "smtp_5xx"
    assert len(server.connections) == 1  # the refusal did not cost the connection


def test_refused_content_fails_at_data(server: Server) -> None:
    server.recorder.data_reply = "554 5.7.1 Message rejected as spam"
    [outcome] = send_all(smtp(server.port), "hoa@example.org")
    assert (outcome.ok, outcome.stage, outcome.code) == (False, "data", 554)
    assert outcome.reply == "5.7.1 Message rejected as spam"


def test_a_temporary_refusal_keeps_its_code(server: Server) -> None:
    server.script("busy@example.org", "450 4.2.1 try later", times=1)
    first, second = send_all(smtp(server.port), "busy@example.org", "busy@example.org")
    assert (first.ok, first.stage, first.code, first.permanent) == (False, "rcpt", 450, False)
    assert second.ok


# --- SMTP: what is sent, and over how many connections -------------------------------------


@pytest.mark.parametrize(
    "data",
    [NASTY, (REPO / "tests" / "golden" / "digest.eml").read_bytes()],
    ids=["dots-and-8bit", "golden-digest"],
)
def test_an_accepted_message_arrives_byte_for_byte(server: Server, data: bytes) -> None:
    [outcome] = send_all(smtp(server.port), "hoa@example.org", data=data)
    assert outcome.ok and outcome.code == 250 and outcome.stage == "data"
    assert outcome.reply == "2.0.0 accepted"
    [received] = server.received
    assert received.data == data


def test_one_connection_carries_message_after_message_and_close_quits(server: Server) -> None:
    transport = smtp(server.port)
    recipients = [f"nguoi{n}@example.org" for n in range(5)]

    async def go() -> None:
        for recipient in recipients:
            assert (await transport.send(SENDER, recipient, NASTY)).ok
        assert server.quits == []  # kept open between messages
        await transport.close()

    asyncio.run(go())
    assert server.recipients() == recipients
    assert len(server.connections) == 1
    assert {r.peer for r in server.received} == set(server.connections)
    assert server.quits == server.connections


def test_concurrent_senders_each_get_a_connection_and_keep_it(server: Server) -> None:
    transport = smtp(server.port, concurrency=3)

    async def round_of(n: int) -> list[Outcome]:
        return list(
            await asyncio.gather(
                *(transport.send(SENDER, f"r{n}-{i}@example.org", NASTY) for i in range(3))
            )
        )

    async def go() -> None:
        for n in range(3):
            assert all(o.ok for o in await round_of(n))
        await transport.close()

    asyncio.run(go())
    assert len(server.received) == 9
    assert len(server.connections) == 3  # opened by the first round, reused by the others
    assert sorted(server.quits) == sorted(server.connections)


def test_a_connection_the_server_closed_is_replaced(server: Server) -> None:
    server.script("drop@example.org", "drop", times=1)
    outcomes = send_all(smtp(server.port), "hoa@example.org", "drop@example.org", "lan@example.org")
    assert [(o.ok, o.stage, o.code) for o in outcomes] == [
        (True, "data", 250),
        (False, "rcpt", 421),
        (True, "data", 250),
    ]
    assert outcomes[1].verdict.scope == "message"  # retried, blamed on no one
    assert len(server.connections) == 2
    assert server.received[0].peer != server.received[1].peer


@pytest.mark.parametrize("kind", ["smtp", "file"])
def test_transport_for_follows_mail_transport(project: Path, kind: str) -> None:
    config = project / "config" / "bantin.toml"
    config.write_text(
        '[site]\ntitle = "t"\nbase_url = "https://tinh.example.gov.vn"\n'
        f'[mail]\ntransport = "{kind}"\noutbox_dir = "hop-thu"\n'
        '[smtp]\nhost = "smtp.example.org"\nport = 2525\n',
        encoding="utf-8",
    )
    chosen = transport_for(load_settings(config))
    if kind == "smtp":
        assert isinstance(chosen, SmtpTransport)
        assert (chosen.name, chosen.concurrency) == ("mail server smtp.example.org:2525", 4)
    else:
        assert isinstance(chosen, FileTransport)
        assert chosen.directory == Path("hop-thu")


# --- files and memory -------------------------------------------------------------------------


def test_the_file_transport_writes_one_eml_per_message(tmp_path: Path) -> None:
    outbox = tmp_path / "var" / "outbox"  # created on first use
    transport = FileTransport(outbox)
    recipients = ["hoa@example.org", "hoa@example.org", "../../../etc/x@example.org"]

    async def go() -> list[Outcome]:
        return [
            await transport.send(SENDER, r, NASTY.replace(b"x@tinh", f"{n}@tinh".encode()))
            for n, r in enumerate(recipients)
        ]

    outcomes = asyncio.run(go())
    assert all(o.ok and o.code == 250 for o in outcomes)
    files = sorted(outbox.iterdir(), key=lambda f: f.name.rsplit("-", 2)[1])
    assert [f.parent for f in files] == [outbox] * 3  # no name escapes the outbox
    assert [f.suffix for f in files] == [".eml"] * 3
    assert not [f for f in outbox.iterdir() if f.name.startswith(".tmp-")]
    assert [f.read_bytes() for f in files] == [
        NASTY.replace(b"x@tinh", f"{n}@tinh".encode()) for n in range(3)
    ]
    assert [o.reply.removeprefix("written to ") for o in outcomes] == [f.name for f in files]
    assert files[0].name.endswith("-hoa@example.org.eml")
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Lịch tiếp công dân"


def test_a_reader_of_the_outbox_never_sees_half_a_message(tmp_path: Path) -> None:
    """Mail programs and scripts read the outbox while bantin writes to it."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    transport = FileTransport(outbox)
    messages = [NASTY + bytes([65 + n % 26]) * 512 * 1024 + b"\r\n" for n in range(40)]
    sizes = {len(m) for m in messages}
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for path in outbox.glob("*.eml"):
                seen.append(len(path.read_bytes()))

    reader = threading.Thread(target=read)
    reader.start()
    try:

        async def go() -> None:
            for message in messages:
                assert (await transport.send(SENDER, "hoa@example.org", message)).ok

        asyncio.run(go())
    finally:
        done.set()
        reader.join(10)
    assert seen and set(seen) <= sizes  # whole messages only, never a part
    assert sorted(f.read_bytes() for f in outbox.glob("*.eml")) == sorted(messages)


def test_a_digest_run_through_the_file_transport_writes_one_eml_per_message(
    project: Path,
) -> None:
    """The outbox `make run` fills: what a run would send, one readable file per message."""
    settings = load_settings(project / "config" / "bantin.toml")  # transport "file" by default
    addresses = [f"f{n}@example.org" for n in range(3)]
    settings.mail.subscribers_file.write_text(
        "".join(
            f'[[subscriber]]\nemail = "{a}"\nname = "Người {n}"\n' for n, a in enumerate(addresses)
        ),
        encoding="utf-8",
    )
    state = State(settings.state.url)
    composer = Composer(settings, b"unsubscribe key for file transport tests")
    t0 = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)

    def run(ids: list[str], at: datetime) -> int:
        published = [
            Article(i, i, f"Tin {i}", t0 - timedelta(days=1), category("Thông báo"), "", "", i)
            for i in ids
        ]
        entries = read_entries(settings.mail.subscribers_file)
        digest = DigestRun(
            state, composer, transport_for(settings), "daily", published, entries, clock=lambda: at
        )
        return asyncio.run(run_digest(digest)).sent

    try:
        assert run(["old"], t0) == 0  # no back catalogue
        assert run(["old", "new"], t0 + timedelta(hours=1)) == 3
    finally:
        state.close()
    outbox = project / "var" / "outbox"
    files = sorted(outbox.glob("*.eml"))
    assert len(files) == 3
    assert not list(outbox.glob(".tmp-*"))
    messages = [
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files
    ]
    assert sorted(m["To"].addresses[0].addr_spec for m in messages) == addresses


def test_the_memory_transport_keeps_messages_and_plays_refusals() -> None:
    refusal = Outcome(False, 550, "5.1.1 no such user", "rcpt")
    transport = MemoryTransport(lambda r: refusal if r.startswith("gone") else None, 3)

    async def go() -> list[Outcome]:
        outcomes = [
            await transport.send(SENDER, "hoa@example.org", b"one"),
            await transport.send(SENDER, "gone@example.org", b"two"),
            await transport.send(SENDER, "lan@example.org", b"three"),
        ]
        await transport.close()
        return outcomes

    outcomes = asyncio.run(go())
    assert [o.ok for o in outcomes] == [True, False, True]
    assert outcomes[1] is refusal
    assert [(s.sender, s.recipient, s.data) for s in transport.sent] == [
        (SENDER, "hoa@example.org", b"one"),
        (SENDER, "lan@example.org", b"three"),
    ]
    assert transport.concurrency == 3


def test_an_outbox_that_cannot_be_made_is_an_outcome_not_an_exception(tmp_path: Path) -> None:
    """A file where the outbox should be: each send says so, and the run can stop cleanly
    (an exception here killed a sender task and hung the run)."""
    blocked = tmp_path / "outbox"
    blocked.write_text("a file, not a folder", encoding="utf-8")
    transport = FileTransport(blocked / "inner")
    outcome = asyncio.run(transport.send("a@b.vn", "c@d.vn", b"Subject: x\r\n\r\nx\r\n"))
    assert not outcome.ok and outcome.verdict.scope == "server"
    assert "mail.outbox_dir" in outcome.reply
