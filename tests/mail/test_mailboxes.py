"""Bounce mailboxes: a Maildir on disk and a real Dovecot IMAP server, fed the bounce samples.

Every sample goes in, comes out once with its bytes intact, parses as it does from its file,
and ends where it belongs: processed (seen) or kept flagged for a person; never deleted or
expunged, and offered again if it was not acknowledged.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dovecot import PASSWORD, USER, Dovecot, running_dovecot
from tlskit import TestCA

from service.errors import ConfigError
from service.mail.bounces import parse
from service.mail.mailboxes import MailboxError, read_imap, read_maildir
from service.settings import BouncesSettings

SAMPLES = sorted((Path(__file__).resolve().parent / "bounces").glob("*.eml"))
BOUNCES = "bounces@laichau.example.gov.vn"
DONE = "bantin-processed"


def maildir(root: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True)
    return root


def deliver(box: Path, name: str, data: bytes) -> None:
    (box / "tmp" / name).write_bytes(data)
    os.replace(box / "tmp" / name, box / "new" / name)


def process(incoming: object) -> str:
    """What `bantin run` will do: parse, then ack; unknown messages are kept for a person."""
    data, ack = incoming  # type: ignore[misc]
    [*findings] = parse(data, BOUNCES)
    recognised = findings[0].kind != "unknown"
    ack(recognised)
    return findings[0].kind


def test_maildir_messages_are_processed_once_and_moved_to_cur_never_deleted(
    tmp_path: Path,
) -> None:
    box = maildir(tmp_path / "Maildir")
    for n, sample in enumerate(SAMPLES):
        deliver(box, f"17957448{n:02d}.M1P1.mail,S={sample.stat().st_size}", sample.read_bytes())
    seen = {}
    for incoming in read_maildir(box):
        seen[incoming.data] = process(incoming)
    assert sorted(seen) == sorted(s.read_bytes() for s in SAMPLES)
    assert os.listdir(box / "new") == []
    cur = sorted(os.listdir(box / "cur"))
    assert len(cur) == len(SAMPLES)
    assert sum(name.endswith(":2,S") for name in cur) == len(SAMPLES) - 1
    [kept] = [name for name in cur if name.endswith(":2,F")]
    assert (box / "cur" / kept).read_bytes() == (Path(SAMPLES[0]).parent / "human.eml").read_bytes()
    assert list(read_maildir(box)) == []  # nothing offered twice


def test_a_maildir_message_not_acked_is_offered_again(tmp_path: Path) -> None:
    box = maildir(tmp_path / "Maildir")
    deliver(box, "1.M1.mail", b"Subject: one\r\n\r\nx\r\n")
    deliver(box, "2.M2.mail", b"Subject: two\r\n\r\nx\r\n")
    reader = read_maildir(box)
    first = next(reader)  # the state was unreachable: never acked
    second = next(reader)
    second.ack()
    second.ack()  # twice is harmless
    assert first.data.startswith(b"Subject: one")
    assert [m.data for m in read_maildir(box)] == [first.data]
    assert sorted(os.listdir(box / "cur")) == ["2.M2.mail:2,S"]


def test_a_path_that_is_no_maildir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a Maildir"):
        list(read_maildir(tmp_path / "missing"))


def settings(server: Dovecot, **changes: object) -> BouncesSettings:
    values: dict[str, object] = {
        "imap_host": "127.0.0.1",
        "imap_port": server.port,
        "imap_tls": "none",
        "imap_username": USER,
        "imap_password": PASSWORD,
        "imap_done_folder": DONE,
    }
    values.update(changes)
    return BouncesSettings.model_validate(values)


def load(server: Dovecot) -> None:
    for sample in SAMPLES:
        server.append("INBOX", sample.read_bytes().replace(b"\n", b"\r\n"))


def test_imap_messages_are_flagged_and_moved_never_expunged() -> None:
    with running_dovecot() as server:
        load(server)
        kinds = [process(m) for m in read_imap(settings(server))]
        assert sorted(kinds) == sorted(parse(s.read_bytes(), BOUNCES)[0].kind for s in SAMPLES)
        assert server.folder("INBOX") == []
        done = server.folder(DONE)
        assert len(done) == len(SAMPLES)  # all kept
        processed = [f for f, _ in done if "\\Seen" in f]
        assert len(processed) == len(SAMPLES) - 1
        assert all("BantinDone" in f for f in processed)
        [(flags, body)] = [(f, b) for f, b in done if "\\Seen" not in f]
        assert "\\Flagged" in flags and b"Cho t\xc3\xb4i h\xe1\xbb\x8fi" in body
        bodies = sorted(b.replace(b"\r\n", b"\n") for _, b in done)
        assert bodies == sorted(s.read_bytes() for s in SAMPLES)
        assert list(read_imap(settings(server))) == []


def test_an_imap_message_not_acked_is_offered_again() -> None:
    with running_dovecot() as server:
        server.append("INBOX", b"Subject: one\r\n\r\nx\r\n")
        server.append("INBOX", b"Subject: two\r\n\r\nx\r\n")
        for incoming in read_imap(settings(server)):
            if b"two" in incoming.data:
                incoming.ack()
        [again] = list(read_imap(settings(server)))
        assert again.data.startswith(b"Subject: one")
        [(flags, _)] = server.folder("INBOX")
        assert "\\Seen" not in flags  # fetched with BODY.PEEK: still unread for a person


def test_a_server_without_move_gets_copy_and_a_keyword() -> None:
    with running_dovecot(capabilities="IMAP4rev1 LITERAL+ SASL-IR IDLE") as server:
        load(server)
        assert sum(1 for m in read_imap(settings(server)) if process(m)) == len(SAMPLES)
        inbox, done = server.folder("INBOX"), server.folder(DONE)
        assert len(inbox) == len(done) == len(SAMPLES)  # copied, nothing removed
        assert all("BantinDone" in f or "BantinFailed" in f for f, _ in inbox)
        assert list(read_imap(settings(server))) == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_imap_over_tls_with_a_trusted_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    ca = TestCA(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.path))
    with running_dovecot(tls=ca) as server:
        server.append("INBOX", (SAMPLES[0]).read_bytes())
        port = server.tls_port if mode == "tls" else server.port
        [incoming] = list(read_imap(settings(server, imap_tls=mode, imap_port=port)))
        assert incoming.data.replace(b"\r\n", b"\n") == SAMPLES[0].read_bytes()


def test_an_untrusted_certificate_or_a_wrong_password_is_refused(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)  # not trusted: SSL_CERT_FILE is not set
    with running_dovecot(tls=ca) as server:
        server.append("INBOX", b"Subject: x\r\n\r\nx\r\n")
        with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED"):
            list(read_imap(settings(server, imap_tls="tls", imap_port=server.tls_port)))
        with pytest.raises(MailboxError, match="imap_username and the password"):
            list(read_imap(settings(server, imap_password="wrong")))
        assert len(server.folder("INBOX")) == 1
