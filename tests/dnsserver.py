"""A real DNS server on 127.0.0.1 (dnslib's), answering from records a test gives it.

    with running_dns({"tinh.example.gov.vn": ['TXT "v=spf1 ip4:203.0.113.5 -all"',
                                              "MX 10 mail.tinh.example.gov.vn."]}) as ns:
        bantin doctor --nameserver {ns}            # ns is "127.0.0.1:PORT"

A name with records answers those of the asked type (none: NOERROR, empty); an unknown name
answers NXDOMAIN; a name holding "servfail." answers SERVFAIL (a broken server). Use txt() for
TXT values: longer than 255 bytes, they are split into strings as DNS requires.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dnslib import QTYPE, RCODE, RR
from dnslib.server import BaseResolver, DNSLogger, DNSServer


def txt(value: str) -> str:
    """A TXT rdata for ``value``: quoted strings of at most 255 bytes."""
    parts = [value[i : i + 250] for i in range(0, len(value), 250)] or [""]
    return "TXT " + " ".join(f'"{p}"' for p in parts)


class Zone(BaseResolver):  # type: ignore[misc]
    def __init__(self, records: Mapping[str, Sequence[str]]) -> None:
        self.records: dict[str, list[Any]] = {}
        for name, rdatas in records.items():
            fqdn = name.rstrip(".").lower() + "."
            self.records[fqdn] = [rr for r in rdatas for rr in RR.fromZone(f"{fqdn} 60 IN {r}")]
        self.asked: list[tuple[str, str]] = []

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).lower()
        kind = QTYPE[request.q.qtype]
        self.asked.append((name, kind))
        if "servfail." in name:
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if name not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rr in self.records[name]:
            if QTYPE[rr.rtype] == kind:
                reply.add_answer(rr)
        return reply


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def running_dns(records: Mapping[str, Sequence[str]]) -> Iterator[str]:
    zone = Zone(records)
    port = _free_udp_port()
    quiet = DNSLogger(log="-request,-reply,-truncated,-error", logf=lambda text: None)
    server = DNSServer(zone, address="127.0.0.1", port=port, logger=quiet)
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
        server.server.server_close()
