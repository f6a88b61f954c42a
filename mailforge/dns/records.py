"""The records a mail domain needs, computed purely from the domain, its DKIM keys and
the configuration. Names are absolute and lower case; contents are in canonical
presentation form (dnspython's), so that comparisons with what a provider returns do
not depend on quoting, case or TXT string splitting."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from ..config import Config

MAX_TXT_STRING = 255


@dataclass(frozen=True)
class Record:
    """One DNS record: absolute name (trailing dot), type, canonical content."""

    name: str
    rtype: str
    content: str
    ttl: int = 300

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.rtype, self.content)


@dataclass(frozen=True)
class Expected:
    """A record mailforge wants, with why and whether the domain needs it."""

    record: Record
    purpose: str
    required: bool


@dataclass(frozen=True)
class DkimKeyInfo:
    """What the record computation needs to know about a DKIM key."""

    selector: str
    algorithm: str  # rsa | ed25519
    public_key: str  # base64 of the public key ("" once revoked)
    state: str


def fqdn(name: str) -> str:
    return dns.name.from_text(name).to_text().lower()


def txt_content(text: str) -> str:
    """A TXT value as quoted strings of at most 255 bytes each (RFC 7208 3.3)."""
    raw = text.encode()
    chunks = [raw[i:i + MAX_TXT_STRING] for i in range(0, len(raw), MAX_TXT_STRING)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for c in chunks)


def txt_text(content: str) -> str:
    """The value of a TXT record, its strings joined."""
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, content)
    return b"".join(rd.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]


def canonical(rtype: str, content: str) -> str:
    """Canonical presentation form of *content* for type *rtype*."""
    rtype = rtype.upper()
    if rtype == "TXT":
        return txt_content(txt_text(content))
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), content,
                             origin=dns.name.root, relativize=False)
    return str(rd.to_text()).lower() if rtype in ("MX", "CNAME", "NS", "SRV") else \
        str(rd.to_text())


def record(name: str, rtype: str, content: str, ttl: int = 300) -> Record:
    return Record(fqdn(name), rtype.upper(), canonical(rtype, content), ttl)


def dkim_txt(key: DkimKeyInfo) -> str:
    k = "ed25519" if key.algorithm == "ed25519" else "rsa"
    p = "" if key.state == "revoked" else key.public_key
    return f"v=DKIM1; k={k}; p={p}"


def mta_sts_policy(cfg: Config) -> str:
    """The MTA-STS policy file (RFC 8461) served at mta-sts.<domain>."""
    c = cfg.dns
    return (f"version: STSv1\nmode: {c.mta_sts_mode}\nmx: {c.mx_hostname.rstrip('.')}\n"
            f"max_age: {c.mta_sts_max_age}\n")


def mta_sts_id(cfg: Config) -> str:
    # The id changes whenever the policy does, which is what senders watch.
    return hashlib.sha256(mta_sts_policy(cfg).encode()).hexdigest()[:20]


def in_zone(host: str, zone: str) -> bool:
    return dns.name.from_text(host).is_subdomain(dns.name.from_text(zone))


def desired_records(domain: str, keys: Iterable[DkimKeyInfo], cfg: Config) -> list[Expected]:
    """Every record *domain* should have, labelled required or recommended."""
    c = cfg.dns
    ttl = c.ttl
    zone = fqdn(domain)
    mx = fqdn(c.mx_hostname)
    out: list[Expected] = []

    def add(name: str, rtype: str, content: str, purpose: str, required: bool) -> None:
        out.append(Expected(record(name, rtype, content, ttl), purpose, required))

    add(zone, "MX", f"10 {mx}", "mx", True)
    if in_zone(mx, zone):
        for ip in c.mx_ipv4:
            add(mx, "A", ip, "mx-address", True)
        for ip in c.mx_ipv6:
            add(mx, "AAAA", ip, "mx-address", True)
    spf = " ".join(["v=spf1", "mx", *c.spf_extra, c.spf_all])
    add(zone, "TXT", txt_content(spf), "spf", True)
    for k in sorted(keys, key=lambda k: k.selector):
        add(f"{k.selector}._domainkey.{zone}", "TXT", txt_content(dkim_txt(k)),
            f"dkim:{k.selector}", k.state in ("pending", "published", "active"))
    rua = c.dmarc_rua or f"postmaster@{domain}"
    add(f"_dmarc.{zone}", "TXT",
        txt_content(f"v=DMARC1; p={c.dmarc_policy}; rua=mailto:{rua}"), "dmarc", True)
    if c.mta_sts_mode != "none":
        add(f"_mta-sts.{zone}", "TXT", txt_content(f"v=STSv1; id={mta_sts_id(cfg)}"),
            "mta-sts", False)
    tls_rua = c.tls_rpt_rua or f"mailto:postmaster@{domain}"
    add(f"_smtp._tls.{zone}", "TXT", txt_content(f"v=TLSRPTv1; rua={tls_rua}"), "tls-rpt",
        False)
    if c.web_hostname:
        web = fqdn(c.web_hostname)
        add(f"mta-sts.{zone}", "CNAME", web, "mta-sts-host", False)
        add(f"autoconfig.{zone}", "CNAME", web, "autoconfig", False)
    h = cfg.host
    add(f"_submission._tcp.{zone}", "SRV", f"0 1 {h.submission.port} {mx}", "srv-submission",
        False)
    add(f"_imaps._tcp.{zone}", "SRV", f"0 1 {h.imap.port} {mx}", "srv-imap", False)
    return out


def is_spf(r: Record) -> bool:
    return r.rtype == "TXT" and txt_text(r.content).lower().startswith("v=spf1")


def is_dmarc(r: Record) -> bool:
    return r.rtype == "TXT" and txt_text(r.content).lower().startswith("v=dmarc1")


def by_rrset(records: Sequence[Record]) -> dict[tuple[str, str], list[Record]]:
    out: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        out.setdefault((r.name, r.rtype), []).append(r)
    return out
