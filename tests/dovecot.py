"""A real Dovecot IMAP server on 127.0.0.1, configured in a temporary folder, for one test.

    with running_dovecot(tls=ca) as imap:   # ca: a tlskit.TestCA, or None for plain IMAP
        imap.port, imap.tls_port, imap.user, imap.password
        imap.append("INBOX", data)          # put a message in a folder
        imap.folder("bantin-processed")     # [(flags, bytes), ...] of what a folder holds

Dovecot comes from Debian's dovecot-imapd (.ci/run installs it). It runs as this user (root
here) and keeps mail as nobody, in a folder of its own under /tmp (its sockets need a short
path, and its login processes a folder they can reach). ``capabilities`` replaces what the
server announces (e.g. without MOVE, to test the COPY path).
"""

from __future__ import annotations

import contextlib
import imaplib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from smtpserver import free_port
from tlskit import TestCA

USER = "bounces"
PASSWORD = "mat-khau-hop-thu-bounces"
NOBODY = 65534


@dataclass
class Dovecot:
    port: int
    tls_port: int
    home: Path
    user: str = USER
    password: str = PASSWORD

    def client(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(self.user, self.password)
        return client

    def append(self, folder: str, data: bytes) -> None:
        client = self.client()
        try:
            client.create(f'"{folder}"')
            status, detail = client.append(f'"{folder}"', None, None, data)
            assert status == "OK", detail
        finally:
            client.logout()

    def folder(self, name: str) -> list[tuple[set[str], bytes]]:
        """The messages of ``name``: their flags and bytes (nothing changed by reading)."""
        client = self.client()
        try:
            status, _ = client.select(f'"{name}"', readonly=True)
            if status != "OK":
                return []
            _, found = client.uid("SEARCH", "ALL")
            messages = []
            for uid in found[0].split():
                _, data = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
                head, body = data[0]
                flags = re.search(rb"FLAGS \(([^)]*)\)", head)
                assert flags is not None
                messages.append((set(flags.group(1).decode().split()), body))
            return messages
        finally:
            client.logout()


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(500):  # bounded: up to ~10 s for a start that takes ~0.1 s
        if process.poll() is not None:
            raise RuntimeError(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.02)  # a pause that ends early if dovecot dies
    raise RuntimeError(f"dovecot did not listen on {port}: {log.read_text()}")


@contextmanager
def running_dovecot(
    tls: TestCA | None = None, capabilities: str | None = None
) -> Iterator[Dovecot]:
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    assert os.path.exists(binary), "dovecot is missing: .ci/run installs dovecot-imapd"
    root = Path(tempfile.mkdtemp(prefix="dc", dir="/tmp"))
    root.chmod(0o755)
    (root / "mail").mkdir()
    (root / "home").mkdir()
    os.chown(root / "mail", NOBODY, NOBODY)
    os.chown(root / "home", NOBODY, NOBODY)
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    port, tls_port = free_port(), free_port()
    ssl = "no"
    if tls is not None:
        cert, key = tls.issue("127.0.0.1")
        ssl = f"yes\nssl_cert = <{cert}\nssl_key = <{key}"
    extra = f"imap_capability = {capabilities}\n" if capabilities else ""
    log = root / "dovecot.log"
    (root / "dovecot.conf").write_text(
        f"""protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {log}
info_log_path = {log}
ssl = {ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
{extra}passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={NOBODY} gid={NOBODY} home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port if tls else 0}
    ssl = yes
  }}
}}
"""
    )
    process = subprocess.Popen(
        [binary, "-F", "-c", str(root / "dovecot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, process, log)
        yield Dovecot(port, tls_port, root)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)
