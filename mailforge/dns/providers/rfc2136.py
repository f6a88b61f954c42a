"""The ``rfc2136`` provider: dynamic updates (RFC 2136) signed with TSIG, via dnspython,
to the zone's primary server (BIND9, PowerDNS with dnsupdate, Knot...). The zone must
already be served there; records are read back by a TSIG-signed AXFR.

Updates change single records (delete this value, add that value), never whole
rrsets, so the operator's values sharing a name and type are not even rewritten.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.xfr
import dns.zone

from ...config import Config
from ...errors import PermanentError, TemporaryError
from ..plan import RRsetChange
from ..records import Record, fqdn, record

_TSIG_ERRORS = (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerBadTime,
                dns.tsig.PeerBadTruncation, dns.tsig.BadSignature, dns.tsig.BadTime)


class Rfc2136Provider:
    name = "rfc2136"
    publishes = True

    def __init__(self, cfg: Config, credentials: str | None = None) -> None:
        self.cfg = cfg
        rc = cfg.dns.rfc2136
        self.rc = rc
        self.keyring: dict[dns.name.Name, dns.tsig.Key] | None = None
        self.keyname: dns.name.Name | None = None
        if rc.tsig_key_name:
            try:
                secret = base64.b64decode(rc.tsig_secret, validate=True)
            except (binascii.Error, ValueError):
                raise PermanentError("rfc2136: dns.rfc2136.tsig_secret is not base64") from None
            self.keyname = dns.name.from_text(rc.tsig_key_name)
            self.keyring = {self.keyname: dns.tsig.Key(self.keyname, secret,
                                                        rc.tsig_algorithm)}
        self.timeout = cfg.dns.http_timeout

    def _what(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _send(self, msg: dns.message.Message) -> dns.message.Message:
        try:
            return await dns.asyncquery.tcp(msg, self.rc.server, port=self.rc.port,
                                            timeout=self.timeout)
        except _TSIG_ERRORS as exc:
            raise PermanentError(f"rfc2136: TSIG key {self.rc.tsig_key_name!r} refused by "
                                 f"{self.rc.server}:{self.rc.port} ({self._what(exc)}); "
                                 "check dns.rfc2136.tsig_key_name/tsig_secret") from None
        except (dns.exception.Timeout, TimeoutError, OSError, EOFError) as exc:
            raise TemporaryError(f"rfc2136: {self.rc.server}:{self.rc.port} unreachable: "
                                 f"{self._what(exc)}") from None
        except dns.exception.DNSException as exc:
            raise TemporaryError(f"rfc2136: {self._what(exc)}") from None

    def _check(self, resp: dns.message.Message, what: str) -> None:
        rc = resp.rcode()
        if rc == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rc)
        if rc in (dns.rcode.SERVFAIL,):
            raise TemporaryError(f"rfc2136: {what}: {text}")
        if rc == dns.rcode.NOTAUTH:
            raise PermanentError(f"rfc2136: {what}: NOTAUTH (TSIG key not accepted for this "
                                 "zone, or the server is not its primary)")
        raise PermanentError(f"rfc2136: {what}: {text}")

    async def ensure_zone(self, zone: str) -> list[str]:
        q = dns.message.make_query(fqdn(zone), "SOA")
        resp = await self._send(q)
        soa = [r for r in resp.answer if r.rdtype == dns.rdatatype.SOA]
        if resp.rcode() != dns.rcode.NOERROR or not soa:
            raise PermanentError(f"rfc2136: {self.rc.server}:{self.rc.port} does not serve "
                                 f"zone {fqdn(zone)} ({dns.rcode.to_text(resp.rcode())})")
        return [fqdn(n) for n in self.rc.nameservers]

    def _axfr(self, zone: str) -> list[Record]:
        z = dns.zone.Zone(fqdn(zone))
        try:
            q, _ = dns.xfr.make_query(z)
            if self.keyring is not None:
                q.use_tsig(self.keyring, self.keyname, algorithm=self.rc.tsig_algorithm)
            dns.query.inbound_xfr(self.rc.server, z, q, port=self.rc.port,
                                  timeout=self.timeout, lifetime=self.timeout * 2)
        except _TSIG_ERRORS as exc:
            raise PermanentError(f"rfc2136: TSIG key {self.rc.tsig_key_name!r} refused for "
                                 f"zone transfer ({self._what(exc)})") from None
        except dns.xfr.TransferError as exc:
            raise PermanentError(f"rfc2136: zone transfer of {fqdn(zone)} refused "
                                 f"({self._what(exc)}); allow AXFR for the key") from None
        except (dns.exception.Timeout, TimeoutError, OSError, EOFError) as exc:
            raise TemporaryError(f"rfc2136: transfer failed: {self._what(exc)}") from None
        out: list[Record] = []
        origin = z.origin or dns.name.from_text(fqdn(zone))
        for name, ttl, rd in z.iterate_rdatas():
            absolute = name.derelativize(origin).to_text()
            text = rd.to_text(origin=origin, relativize=False)
            out.append(record(absolute, dns.rdatatype.to_text(rd.rdtype), text, ttl))
        return out

    async def list_records(self, zone: str) -> list[Record]:
        return await asyncio.to_thread(self._axfr, zone)

    async def apply(self, zone: str, changes: Sequence[RRsetChange]) -> None:
        if not changes:
            return
        upd = dns.update.UpdateMessage(fqdn(zone), keyring=self.keyring, keyname=self.keyname,
                                       keyalgorithm=self.rc.tsig_algorithm)
        for ch in changes:
            rdtype = dns.rdatatype.from_text(ch.rtype)
            name = dns.name.from_text(ch.name)
            for gone in sorted(set(ch.before) - set(ch.after)):
                upd.delete(name, dns.rdata.from_text(dns.rdataclass.IN, rdtype, gone))
            for new in sorted(set(ch.after) - set(ch.before)):
                upd.add(name, ch.ttl, dns.rdata.from_text(dns.rdataclass.IN, rdtype, new))
        resp = await self._send(upd)
        self._check(resp, f"update of {fqdn(zone)}")

    async def authoritative_servers(self, zone: str) -> list[tuple[str, int]]:
        return [(self.rc.server, self.rc.port)]
