"""The DNS check of a connected mailbox's domain (SendKit's "setup status"): is the
domain set up to send and receive mail as the mailbox does? MX, SPF, DMARC, and DKIM
where a selector is known, each ``ok``, ``missing`` or ``mismatch`` (or ``unknown`` /
``error`` when it cannot be told).

mailforge does not own these records (the domain is hosted elsewhere), so it only reads
and reports them; what to fix is said in ``detail``. The evaluation of the answers is
pure (``judge_*``), unit-tested without DNS; ``check`` does the lookups.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from ..dns.providers.base import make_resolver

# Selectors the big providers publish, tried when the mailbox has none of its own:
# Google Workspace ("google"), Microsoft 365 ("selector1"/"selector2") and common ones.
COMMON_SELECTORS = ("google", "selector1", "selector2", "default", "dkim", "mail", "k1",
                    "s1", "s2")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")

Item = dict[str, Any]


def _item(status: str, detail: str, records: Sequence[str] = (), **extra: Any) -> Item:
    return {"status": status, "detail": detail, "records": list(records), **extra}


def judge_mx(exchanges: Sequence[str]) -> Item:
    """MX targets of the domain (``"."`` is a null MX: the domain takes no mail)."""
    names = [e.rstrip(".").lower() for e in exchanges]
    if not names:
        return _item("missing", "No MX record: mail to this address cannot be delivered.")
    if all(n == "" for n in names):
        return _item("mismatch", "A null MX (RFC 7505): the domain says it accepts no "
                     "mail, so replies to this mailbox bounce.", ["."])
    return _item("ok", "", sorted(n for n in names if n))


def judge_spf(texts: Sequence[str]) -> Item:
    """The domain's TXT strings; the SPF policy is the one starting ``v=spf1``."""
    spf = [t for t in texts if re.match(r"v=spf1(\s|$)", t, re.IGNORECASE)]
    if not spf:
        return _item("missing", "No SPF record (TXT v=spf1): receivers cannot tell which "
                     "servers may send as this domain.")
    if len(spf) > 1:
        return _item("mismatch", "More than one SPF record: receivers treat that as an "
                     "error (RFC 7208 4.5); merge them into one.", spf)
    words = spf[0].lower().split()
    if "+all" in words or "all" in words:
        return _item("mismatch", "The SPF record ends in +all: it lets any server send "
                     "as this domain; end it with ~all or -all.", spf)
    return _item("ok", "", spf)


def _tags(record: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in record.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep:
            out.setdefault(k.strip().lower(), v.strip())
    return out


def judge_dmarc(texts: Sequence[str]) -> Item:
    """TXT strings at ``_dmarc.<domain>``."""
    recs = [t for t in texts if re.match(r"v\s*=\s*DMARC1\s*(;|$)", t, re.IGNORECASE)]
    if not recs:
        return _item("missing", "No DMARC record at _dmarc: Gmail and Yahoo require one "
                     "from bulk senders (p=none is enough to start).")
    if len(recs) > 1:
        return _item("mismatch", "More than one DMARC record: receivers ignore them all "
                     "(RFC 7489 6.6.3); keep one.", recs)
    policy = _tags(recs[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return _item("mismatch", "The DMARC record has no valid p= policy (none, "
                     "quarantine or reject).", recs)
    return _item("ok", "", recs, policy=policy)


def judge_dkim(selector: str, texts: Sequence[str]) -> Item:
    """TXT strings at ``<selector>._domainkey.<domain>``."""
    if not texts:
        return _item("missing", f"No DKIM key at {selector}._domainkey: mail from this "
                     "domain is not signed with that selector.", selector=selector)
    joined = "".join(texts) if len(texts) > 1 and not any(
        t.lower().startswith("v=dkim1") for t in texts[1:]) else texts[0]
    tags = _tags(joined)
    if tags.get("v", "DKIM1").upper() != "DKIM1" or "p" not in tags:
        return _item("mismatch", f"The record at {selector}._domainkey is not a DKIM key "
                     "(v=DKIM1; p=...).", [joined[:300]], selector=selector)
    if not tags["p"]:
        return _item("mismatch", f"The DKIM key at {selector}._domainkey is revoked "
                     "(empty p=).", [joined[:300]], selector=selector)
    return _item("ok", "", [joined[:300]], selector=selector)


def valid_selector(selector: str) -> bool:
    return len(selector) <= 200 and bool(_SELECTOR.fullmatch(selector))


class _Lookup:
    """Answers for one check: an absent name or type is an empty answer; anything else
    (timeout, SERVFAIL) raises, so that it is reported as ``error``, not ``missing``."""

    def __init__(self, res: dns.asyncresolver.Resolver) -> None:
        self.res = res

    async def txt(self, name: str) -> list[str]:
        try:
            ans = await self.res.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [b"".join(r.strings).decode("utf-8", "replace") for r in ans]

    async def mx(self, name: str) -> list[str]:
        try:
            ans = await self.res.resolve(name, "MX")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        return [str(r.exchange) for r in ans]


async def _guarded(what: str, coro: Any) -> Item:
    try:
        result: Item = await coro
        return result
    except (TimeoutError, dns.exception.DNSException) as exc:
        return _item("error", f"The {what} lookup failed ({type(exc).__name__}); it is "
                     "tried again at the next check.")


async def check(domain: str, resolver_address: str | None, dkim_selector: str | None,
                timeout: float = 3.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Look up and judge *domain*'s MX, SPF, DMARC and DKIM (*dkim_selector*, or the
    common selectors of the big providers when None) through *resolver_address*
    (``host:port``; None or "": the system resolver)."""
    look = _Lookup(make_resolver(resolver_address or "", timeout))

    async def mx() -> Item:
        return judge_mx(await look.mx(domain))

    async def spf() -> Item:
        return judge_spf(await look.txt(domain))

    async def dmarc() -> Item:
        return judge_dmarc(await look.txt(f"_dmarc.{domain}"))

    async def dkim() -> Item:
        if dkim_selector:
            return judge_dkim(dkim_selector,
                              await look.txt(f"{dkim_selector}._domainkey.{domain}"))
        found = await asyncio.gather(*(look.txt(f"{s}._domainkey.{domain}")
                                       for s in COMMON_SELECTORS), return_exceptions=True)
        for sel, texts in zip(COMMON_SELECTORS, found, strict=True):
            if isinstance(texts, list) and texts:
                return judge_dkim(sel, texts)
        return _item("unknown", "No DKIM selector is known for this mailbox and none of "
                     "the common ones has a key; give dkim_selector to check it.")

    results = await asyncio.gather(_guarded("MX", mx()), _guarded("SPF", spf()),
                                   _guarded("DMARC", dmarc()), _guarded("DKIM", dkim()))
    out: dict[str, Any] = dict(zip(("mx", "spf", "dmarc", "dkim"), results, strict=True))
    out["domain"] = domain
    out["checked_at"] = datetime.now(UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
    out["ok"] = all(out[k]["status"] == "ok" for k in ("mx", "spf", "dmarc")) \
        and out["dkim"]["status"] in ("ok", "unknown")
    return out
