"""`bantin doctor`'s DNS checks: SPF, DKIM, DMARC and MX, through dnspython.

Each check returns a ``Check``: ok, warn or fail, what was found, and the exact fix (the record
to publish). The resolver is given (``--nameserver`` makes one that asks a chosen server).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.resolver

__all__ = ["Check", "check_dkim", "check_dmarc", "check_mx", "check_spf", "resolver", "spf"]

Level = Literal["ok", "warn", "fail"]
SpfResult = Literal["pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"]
_LOOKUPS = 10  # RFC 7208 4.6.4: DNS-querying terms per evaluation


@dataclass(frozen=True, slots=True)
class Check:
    """One finding of `bantin doctor`: its level, what was found, and what to change."""

    name: str
    level: Level
    detail: str
    fix: str = ""


def resolver(nameservers: Sequence[str] = (), timeout: float = 5.0) -> dns.resolver.Resolver:
    """A resolver asking ``nameservers`` ("IP" or "IP:PORT"), or the system's if none."""
    if not nameservers:
        made = dns.resolver.Resolver()
    else:
        made = dns.resolver.Resolver(configure=False)
        made.nameservers = []
        for server in nameservers:
            host, _, port = server.rpartition(":") if server.count(":") == 1 else (server, "", "")
            made.nameservers.append(host or server)
            if port:
                made.port = int(port)
    made.lifetime = timeout
    return made


def _txt(res: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT strings at ``name`` (each record's strings joined); [] if there are none."""
    try:
        answer = res.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def _addresses(res: dns.resolver.Resolver, name: str) -> list[str]:
    found = []
    for kind in ("A", "AAAA"):
        with contextlib.suppress(dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            found += [r.to_text() for r in res.resolve(name, kind)]
    return found


class _PermError(Exception):
    pass


def spf(res: dns.resolver.Resolver, ip: str, domain: str) -> tuple[SpfResult, str]:
    """RFC 7208 check_host() for ``ip`` and ``domain``: the result and the record that gave it.

    ip4, ip6, a, mx, include, exists, all and redirect are evaluated; ptr never matches (it is
    deprecated); macros are not expanded (a term with one is a permerror).
    """
    budget = [_LOOKUPS]
    try:
        return _check_host(res, ipaddress.ip_address(ip), domain, budget)
    except _PermError as exc:
        return "permerror", str(exc)
    except dns.exception.DNSException as exc:
        return "temperror", str(exc)


def _record(res: dns.resolver.Resolver, domain: str) -> str | None:
    records = [t for t in _txt(res, domain) if t.lower().split(" ", 1)[0] == "v=spf1"]
    if len(records) > 1:
        raise _PermError(f"{domain} publishes {len(records)} SPF records; keep one")
    return records[0] if records else None


def _spend(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise _PermError("more than 10 DNS lookups (RFC 7208 4.6.4); flatten the includes")


def _in(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, hosts: list[str], cidr: str) -> bool:
    for host in hosts:
        address = ipaddress.ip_address(host)
        if address.version != ip.version:
            continue
        bits = cidr or str(address.max_prefixlen)
        if ip in ipaddress.ip_network(f"{address}/{bits}", strict=False):
            return True
    return False


def _check_host(
    res: dns.resolver.Resolver,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    domain: str,
    budget: list[int],
) -> tuple[SpfResult, str]:
    record = _record(res, domain)
    if record is None:
        return "none", f"{domain} has no SPF record"
    results: dict[str, SpfResult] = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
    redirect = None
    for term in record.split()[1:]:
        if "%" in term:
            raise _PermError(f"macros are not supported here: {term}")
        if term.lower().startswith("redirect="):
            redirect = term.split("=", 1)[1]
            continue
        if "=" in term:
            continue  # exp= and unknown modifiers
        qualifier = term[0] if term[0] in results else "+"
        mechanism = term.lstrip("+-~?")
        name, _, value = mechanism.partition(":")
        name, _, cidr = name.partition("/") if not value else (name, "", "")
        if value and "/" in value:
            value, _, cidr = value.partition("/")
        name = name.lower()
        matched = False
        if name == "all":
            matched = True
        elif name in ("ip4", "ip6"):
            matched = ip in ipaddress.ip_network(mechanism.split(":", 1)[1], strict=False)
        elif name == "a":
            _spend(budget)
            matched = _in(ip, _addresses(res, value or domain), cidr)
        elif name == "mx":
            _spend(budget)
            try:
                hosts = [r.exchange.to_text() for r in res.resolve(value or domain, "MX")]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                hosts = []
            matched = any(_in(ip, _addresses(res, h), cidr) for h in hosts[:10])
        elif name == "include":
            _spend(budget)
            inner, why = _check_host(res, ip, value, budget)
            if inner in ("none", "permerror"):
                raise _PermError(f"include:{value}: {why}")
            matched = inner == "pass"
        elif name == "exists":
            _spend(budget)
            matched = bool(_addresses(res, value))
        elif name == "ptr":
            _spend(budget)
        else:
            raise _PermError(f"unknown mechanism {term!r} in {domain}")
        if matched:
            return results[qualifier], f"{domain}: {record}"
    if redirect is not None:
        _spend(budget)
        return _check_host(res, ip, redirect, budget)
    return "neutral", f"{domain}: {record}"


def check_spf(
    res: dns.resolver.Resolver, domain: str, relay_ips: Sequence[str], relay: str, role: str
) -> Check:
    """Whether ``domain``'s SPF lets the relay (its addresses ``relay_ips``) send for it."""
    name = f"SPF {domain} ({role})"
    if not relay_ips:
        return Check(
            name,
            "warn",
            f"no address known for the relay {relay}",
            f"pass --relay-ip with the address {relay} sends from",
        )
    suggestion = f'{domain}. TXT "v=spf1 ip4:{relay_ips[0]} ~all"'
    if ":" in relay_ips[0]:
        suggestion = f'{domain}. TXT "v=spf1 ip6:{relay_ips[0]} ~all"'
    failing = []
    for ip in relay_ips:
        result, why = spf(res, ip, domain)
        if result == "none":
            return Check(name, "fail", why, f"publish {suggestion} (or add the relay to yours)")
        if result in ("permerror", "temperror"):
            return Check(name, "fail", f"{result}: {why}", "fix the SPF record: " + suggestion)
        if result != "pass":
            failing.append(f"{ip}: {result}")
    if failing:
        return Check(
            name,
            "fail",
            f"the relay {relay} is not allowed ({', '.join(failing)})",
            f"add ip4:{relay_ips[0]} (or the relay's include:) before the 'all' of {domain}'s SPF",
        )
    return Check(name, "ok", f"the relay {relay} ({', '.join(relay_ips)}) may send for {domain}")


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def check_dkim(res: dns.resolver.Resolver, domain: str, selector: str, private_pem: bytes) -> Check:
    """Whether the public key at ``selector._domainkey.domain`` matches the private key."""
    import dkim.crypto  # dkimpy, already a dependency for signing

    name = f"DKIM {selector}._domainkey.{domain}"
    try:
        private = dkim.crypto.parse_pem_private_key(private_pem)
    except Exception as exc:  # dkimpy raises its own and ASN.1 errors for a bad file
        return Check(
            name,
            "fail",
            f"mail.dkim_key_file is not an RSA private key: {exc}",
            "point mail.dkim_key_file at the PEM private key that signs",
        )
    public_der = _public_der(private["modulus"], private["publicExponent"])
    wanted = (
        f'{selector}._domainkey.{domain}. TXT "v=DKIM1; k=rsa; '
        f'p={base64.b64encode(public_der).decode()}"'
    )
    records = [t for t in _txt(res, f"{selector}._domainkey.{domain}") if "p=" in t]
    if not records:
        return Check(name, "fail", "no DKIM key is published", f"publish {wanted}")
    tags = _tags(records[0])
    if not tags.get("p"):
        return Check(name, "fail", "the published key is revoked (empty p=)", f"publish {wanted}")
    try:
        public = dkim.crypto.parse_public_key(base64.b64decode(tags["p"]))
    except Exception:
        return Check(name, "fail", "the published p= is not an RSA public key", f"publish {wanted}")
    if (public["modulus"], public["publicExponent"]) != (
        private["modulus"],
        private["publicExponent"],
    ):
        return Check(
            name,
            "fail",
            "the published key does not match mail.dkim_key_file: every signature will fail",
            f"replace the record with {wanted}",
        )
    bits = private["modulus"].bit_length()
    if bits < 1024:
        return Check(
            name,
            "fail",
            f"the key has {bits} bits; receivers ignore it",
            "make a 2048-bit key and publish it",
        )
    return Check(name, "ok", f"the published {bits}-bit key matches mail.dkim_key_file")


def _public_der(modulus: int, exponent: int) -> bytes:
    """SubjectPublicKeyInfo DER of an RSA key (what DKIM's p= holds)."""

    def der(tag: int, body: bytes) -> bytes:
        size = len(body)
        if size < 128:
            return bytes([tag, size]) + body
        length = size.to_bytes((size.bit_length() + 7) // 8, "big")
        return bytes([tag, 0x80 | len(length)]) + length + body

    def integer(value: int) -> bytes:
        return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))

    rsa = der(0x30, integer(modulus) + integer(exponent))
    algorithm = der(0x30, bytes.fromhex("06092a864886f70d0101010500"))
    return der(0x30, algorithm + der(0x03, b"\x00" + rsa))


def _aligned(domain: str, other: str, strict: bool) -> bool:
    domain, other = domain.lower().rstrip("."), other.lower().rstrip(".")
    if strict:
        return domain == other
    return domain == other or domain.endswith("." + other) or other.endswith("." + domain)


def check_dmarc(
    res: dns.resolver.Resolver, from_domain: str, envelope_domain: str, dkim_domain: str | None
) -> Check:
    """Whether DMARC is published for the From domain (walking up to its parents, as DMARCbis
    does) and whether SPF (the envelope domain) or DKIM (d=) aligns with From."""
    labels = from_domain.lower().rstrip(".").split(".")
    record, at = None, None
    for i in range(len(labels) - 1):
        found = [t for t in _txt(res, "_dmarc." + ".".join(labels[i:])) if t.startswith("v=DMARC1")]
        if found:
            record, at = found[0], ".".join(labels[i:])
            break
    name = f"DMARC {from_domain}"
    fix = f'publish _dmarc.{from_domain}. TXT "v=DMARC1; p=none; rua=mailto:dmarc@{from_domain}"'
    if record is None or at is None:
        return Check(
            name, "fail", "no DMARC record: Gmail and Yahoo refuse bulk mail without one", fix
        )
    tags = _tags(record)
    relaxed_spf = tags.get("aspf", "r") != "s"
    relaxed_dkim = tags.get("adkim", "r") != "s"
    spf_ok = _aligned(envelope_domain, from_domain, not relaxed_spf)
    dkim_ok = dkim_domain is not None and _aligned(dkim_domain, from_domain, not relaxed_dkim)
    if not spf_ok and not dkim_ok:
        return Check(
            name,
            "fail",
            f"neither the bounce domain {envelope_domain} (SPF) nor the "
            f"DKIM domain {dkim_domain or '(none)'} aligns with {from_domain}: DMARC "
            "fails for every message",
            f"set mail.dkim_domain to {from_domain} (or a subdomain), or "
            f"mail.bounce_address to an address under {from_domain}",
        )
    aligned = " and ".join(x for x, ok in (("SPF", spf_ok), ("DKIM", dkim_ok)) if ok)
    detail = f"{record} (at {at}); {aligned} aligned with From"
    if tags.get("p", "none") == "none":
        return Check(name, "ok", detail + "; p=none only monitors")
    return Check(name, "ok", detail)


def check_mx(res: dns.resolver.Resolver, domain: str) -> Check:
    """Whether mail to the bounce domain can be delivered (MX, or an address to fall back on)."""
    name = f"MX {domain}"
    fix = f"publish {domain}. MX 10 mail.{domain}. (the server that receives bounces)"
    try:
        answer = res.resolve(domain, "MX")
        hosts = sorted((r.preference, r.exchange.to_text()) for r in answer)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        hosts = []
    if hosts == [(0, ".")]:
        return Check(name, "fail", f"{domain} says it receives no mail (null MX)", fix)
    if not hosts:
        if _addresses(res, domain):
            return Check(name, "warn", "no MX; senders fall back to its A record", fix)
        return Check(name, "fail", "no MX and no address: bounces cannot come back", fix)
    listed = ", ".join(f"{p} {h}" for p, h in hosts)
    return Check(name, "ok", f"bounces are delivered to {listed}")
