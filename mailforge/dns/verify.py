"""Verification by real DNS queries sent straight to the zone's authoritative servers
(not a cache): for each expected record, ``ok``, ``missing`` or ``mismatch`` with what
was expected and what was found."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from .records import Expected, canonical


@dataclass(frozen=True)
class Check:
    expected: Expected
    status: str  # ok | missing | mismatch
    found: tuple[str, ...]

    def json(self) -> dict[str, Any]:
        r = self.expected.record
        return {"name": r.name, "type": r.rtype, "purpose": self.expected.purpose,
                "required": self.expected.required, "status": self.status,
                "expected": r.content, "found": list(self.found)}


async def query(name: str, rtype: str, servers: Sequence[tuple[str, int]],
                timeout: float) -> list[str] | None:  # noqa: ASYNC109
    """The canonical contents of (name, type) from the first server that answers;
    None if no server answered."""
    q = dns.message.make_query(name, rtype)
    q.flags &= ~dns.flags.RD
    for host, port in servers:
        try:
            resp = await dns.asyncquery.udp(q, host, port=port, timeout=timeout)
            if resp.flags & dns.flags.TC:
                resp = await dns.asyncquery.tcp(q, host, port=port, timeout=timeout)
        except (TimeoutError, dns.exception.DNSException, OSError):
            continue
        if resp.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            continue
        out: list[str] = []
        want = dns.rdatatype.from_text(rtype)
        for rrset in resp.answer:
            if rrset.rdtype == want:
                out += [canonical(rtype, rd.to_text()) for rd in rrset]
        return out
    return None


async def verify(expected: Sequence[Expected], servers: Sequence[tuple[str, int]],
                 timeout: float = 2.0) -> list[Check]:  # noqa: ASYNC109
    async def one(e: Expected) -> Check:
        found = await query(e.record.name, e.record.rtype, servers, timeout)
        if found is None:
            return Check(e, "missing", ())
        if e.record.content in found:
            return Check(e, "ok", tuple(found))
        return Check(e, "mismatch" if found else "missing", tuple(found))

    return list(await asyncio.gather(*(one(e) for e in expected)))


