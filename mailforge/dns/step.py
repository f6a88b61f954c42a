"""The engine's DNS/DKIM domain step: per pass, for one domain,

1. DKIM lifecycle: time-based moves (retiring -> revoked -> deleted), new keys when
   none exists, the active one is older than the rotation age, or a rotation was asked
   for (``POST /v1/domains/{id}/dkim/rotate`` records only the request; the keys are
   made here, sealed at rest, and the request is cleared with them);
2. publish: plan the desired records against the zone and what mailforge owns, apply
   through the domain's provider (ownership recorded before a record is created, so a
   crash never leaves a record of ours unrecorded); a zone the provider already has and
   mailforge did not create is never adopted (``ZoneExists``, permanent);
3. prove the name: its public delegation (NS through ``dns.ns_resolver``) points at the
   provider's nameservers (``providers.base.delegation``, shared with check-ns). Until
   then the domain is served nowhere (``DomainState.present``) and signed for by no one;
   the first proof is recorded with a new generation, so the next pass serves it.
   (``manual`` names no nameservers: its proof is its records, DKIM keys included,
   verifying at the servers of the public delegation.) Then verify with real queries to
   the authoritative servers;
4. promote keys whose record verified (the key they replace starts retiring), then
   write the signer's tables and reload it only if they changed;
5. record the report and when the next time-based move falls due.

The domain converges (and so becomes ``active``) only when the required records
verify; until then the step raises ``TemporaryError`` and the engine re-checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ..config import Config
from ..dkim import keys as dk
from ..dkim import signer
from ..errors import PermanentError, TemporaryError
from ..log import get
from ..models import DomainState
from ..secretbox import SecretBox
from ..store.dns import DkimKey
from ..store.store import Store
from .conflicts import blocks, conflicted_names
from .plan import Plan, plan
from .providers.base import DnsProvider, delegation, load_provider
from .records import DkimKeyInfo, Expected, desired_records, fqdn
from .verify import verify

log = get(__name__)


def key_infos(keys: list[DkimKey]) -> list[DkimKeyInfo]:
    return [DkimKeyInfo(k.selector, k.algorithm, k.public_key, k.state) for k in keys]


def views(keys: list[DkimKey]) -> list[dk.KeyView]:
    return [dk.KeyView(k.id, k.algorithm, k.selector, k.state, k.created_at,
                       k.state_changed_at) for k in keys]


class DnsService:
    """Everything the step, the API and the CLI share: keys, plans, provider, signer."""

    def __init__(self, store: Store, cfg: Config, box: SecretBox) -> None:
        self.store = store
        self.ds = store.dns
        self.cfg = cfg
        self.box = box
        self._signer_lock = asyncio.Lock()
        # RSA keys made ahead of need (started by prime(), in the engine's process).
        self.key_pool = dk.KeyPool(cfg.dkim.rsa_bits)
        self._sync_requested = 0
        self._sync_done = 0
        # The signer's restart in progress (or last finished), and whether a failed one
        # must be redone although the tables did not change since.
        self._reload: asyncio.Task[TemporaryError | None] | None = None
        self._signer_stale = False

    def _seal_ctx(self, domain_id: str, selector: str) -> str:
        return f"dkim:{domain_id}:{selector}"

    async def credentials(self, domain_id: str) -> str | None:
        opts = await self.ds.options(domain_id)
        if opts is None or opts.sealed_credentials is None:
            return None
        return self.box.open(opts.sealed_credentials,
                             f"dns-credentials:{domain_id}").decode()

    async def provider_for(self, domain_id: str, provider: str) -> DnsProvider:
        return load_provider(provider, self.cfg, await self.credentials(domain_id))

    async def new_keys(self, domain_id: str, algorithms: tuple[str, ...] = dk.ALGORITHMS,
                       rotation_requested_at: datetime | None = None) -> None:
        """Make, seal and store a key per algorithm; *rotation_requested_at*: the
        rotation request they carry out (cleared with them, in one transaction)."""
        taken = {k.selector for k in await self.ds.keys(domain_id)}
        now = datetime.now(UTC)
        rows = []
        for alg in algorithms:
            sel = dk.selector_for(alg, now, taken)
            taken.add(sel)
            nk = await self.key_pool.take(alg, sel)
            rows.append((alg, sel, nk.public_key,
                         self.box.seal(nk.private_key, self._seal_ctx(domain_id, sel))))
        await self.ds.add_keys(domain_id, rows, rotation_requested_at)

    async def expected(self, domain_id: str, name: str) -> list[Expected]:
        return desired_records(name, key_infos(await self.ds.keys(domain_id)), self.cfg)

    async def compute_plan(self, domain_id: str, name: str, provider: DnsProvider,
                           deleting: bool = False) -> Plan:
        opts = await self.ds.options(domain_id)
        expected = [] if deleting else await self.expected(domain_id, name)
        current = await provider.list_records(name) if provider.publishes else []
        owned = await self.ds.owned(domain_id)
        return plan([e.record for e in expected], current, owned,
                    overwrite=bool(opts and opts.overwrite),
                    force=bool(opts and opts.force),
                    max_change_ratio=self.cfg.dns.max_change_ratio, deleting=deleting)

    async def sync_signer(self, wait: bool = True) -> bool:
        """Write the signer's tables from every active key; reload when they changed.

        Coalesced: many domains of a pass ask at once; a sync that starts after a
        request read the keys that request committed, so it covers it (one reload for
        the batch, not one per domain).

        *wait*: return only once the signer serves the new tables (its restart takes
        a few hundred ms). A caller for a domain nothing can send as yet (no mailbox)
        need not wait: the restart finishes in the background, and a pass that then
        serves a mailbox waits for it (``settled``) before recording the mailbox, so
        no mailbox can send before its domain's keys sign. A restart that fails is
        logged and redone by the next sync."""
        self._sync_requested += 1
        mine = self._sync_requested
        async with self._signer_lock:
            if self._sync_done >= mine:
                changed = False
            else:
                covering = self._sync_requested
                changed = await self._sync_signer()
                self._sync_done = covering
        if wait:
            await self.settled(raise_errors=True)
        return changed

    async def settled(self, raise_errors: bool = False) -> None:
        """Wait for a signer restart still in progress, if any."""
        task = self._reload
        if task is None:
            return
        failed = await asyncio.shield(task)
        if failed is not None and raise_errors:
            raise failed

    async def _sync_signer(self) -> bool:
        rows = await self.ds.signing_keys()
        keys = [signer.SigningKey(r.domain, r.algorithm, r.selector,
                                  self.box.open(r.sealed_private,
                                                self._seal_ctx(r.domain_id, r.selector)))
                for r in rows]
        changed = await asyncio.to_thread(signer.write_tables, keys, self.cfg.dkim)
        if changed or self._signer_stale:
            # A restart in progress finishes first (its marker is what the next one's
            # wait compares), then this one is asked for.
            await self.settled()
            self._signer_stale = False
            before = await signer.request_reload(self.cfg.dkim)
            self._reload = asyncio.create_task(self._confirm(before, len(keys)),
                                               name="dkim-signer-reload")
        return changed

    async def _confirm(self, before: str, count: int) -> TemporaryError | None:
        """Wait for the restart asked for; its failure is returned (for ``settled``),
        never raised into a task no one awaits."""
        try:
            await signer.await_reload(self.cfg.dkim, before)
        except TemporaryError as exc:
            self._signer_stale = True  # the next sync restarts it again
            log.error("dkim signer reload failed", error=str(exc))
            return exc
        log.info("dkim signer reloaded", keys=count)
        return None


class Phases:
    """Wall-clock time of each phase of one step, logged once at its end (debug):
    ``scripts/bench-domains`` reads them for the setup breakdown (issue 11)."""

    def __init__(self) -> None:
        self._t = time.perf_counter()
        self.ms: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.ms[phase] = round(self.ms.get(phase, 0.0) + (now - self._t) * 1000, 1)
        self._t = now


class DnsStep:
    """The DomainStep (see ``mailforge.engine``) for DKIM, DNS publishing and verification."""

    name = "dns"

    def __init__(self, svc: DnsService) -> None:
        self.svc = svc
        self.cfg = svc.cfg
        self.ds = svc.ds

    async def converge(self, state: DomainState) -> None:
        d = state.domain
        if not d.backend_enabled and not d.deleted:
            return  # connected only: nothing to publish before setup
        ph = Phases()
        try:
            await self._converge(state, ph)
        finally:
            log.debug("dns step timings", **{f"{k}_ms": v for k, v in ph.ms.items()})

    async def _converge(self, state: DomainState, ph: Phases) -> None:
        d = state.domain
        provider = await self.svc.provider_for(d.id, d.dns_provider)
        zone = d.name
        if d.deleted:
            await self._remove(d.id, zone, provider)
            return
        dc = self.cfg.dkim
        rotate = timedelta(days=dc.rotate_after_days)
        retire = timedelta(days=dc.retire_days)
        revoked = timedelta(days=dc.revoked_days)
        now = datetime.now(UTC)

        # 1. DKIM lifecycle.
        keys = await self.ds.keys(d.id)
        moves = dk.due_transitions(views(keys), now, retire, revoked)
        if moves:
            await self.ds.set_states((m.key_id, m.to) for m in moves)
            keys = await self.ds.keys(d.id)
        opts = await self.ds.options(d.id)
        asked = opts.rotation_requested_at if opts is not None else None
        if asked is not None:
            # A rotation was asked for: every algorithm without a key on its way gets
            # one (keys already on their way are the rotation's; no third set).
            due = tuple(a for a in dk.ALGORITHMS
                        if not any(k.algorithm == a and k.state in ("pending", "published")
                                   for k in keys))
        else:
            due = tuple(a for a in dk.ALGORITHMS
                        if dk.needs_new_key(views(keys), a, now, rotate))
        ph.mark("keys_read")
        if due:
            await self.svc.new_keys(d.id, due, asked)
            keys = await self.ds.keys(d.id)
        elif asked is not None:
            await self.ds.rotation_done(d.id, asked)
        ph.mark("keygen")

        # 2. Publish.
        nameservers = await provider.ensure_zone(zone)
        ph.mark("ensure_zone")
        expected = desired_records(zone, key_infos(keys), self.cfg)
        p = await self.svc.compute_plan(d.id, zone, provider)
        ph.mark("plan")
        if provider.publishes:
            if p.refused:
                raise PermanentError(f"dns: {p.refused}")
            if p.creates:
                await self.ds.add_owned(d.id, (r.key for r in p.creates))
            await provider.apply(zone, p.rrsets)
            await self.ds.set_owned(d.id, p.owned_after)
            await self.ds.clear_force(d.id)
        ph.mark("dns_write")

        # 3. Prove the name, then verify the records.
        if d.ownership_verified_at is None and (nameservers or provider.publishes):
            await self._prove(d.id, zone, nameservers)
        ph.mark("delegation")
        servers = await provider.authoritative_servers(zone)
        checks = await verify(expected, servers, self.cfg.dns.query_timeout)
        ph.mark("verify")
        ok_selectors = {c.expected.purpose.split(":", 1)[1] for c in checks
                        if c.status == "ok" and c.expected.purpose.startswith("dkim:")}

        # 4. Keys whose record verified are published; the signer loads them; only then
        # are they active (signing) and the keys they replace retiring.
        promo = dk.promotions(views(keys), ok_selectors)
        if promo:
            await self.ds.set_states((m.key_id, m.to) for m in promo)
            keys = await self.ds.keys(d.id)
        ph.mark("promote")
        # Nothing can send as a domain without mailboxes: its setup need not wait for
        # the signer's restart (a later pass serving a mailbox does: DnsStep.settle).
        # A delta lists only some mailboxes: wait.
        await self.svc.sync_signer(
            wait=not state.complete or any(not m.deleted for m in state.mailboxes))
        ph.mark("signer")
        acts = dk.activations(views(keys))
        if acts:
            await self.ds.set_states((m.key_id, m.to) for m in acts)
            keys = await self.ds.keys(d.id)

        # 5. Report. A record left out because the operator has their own (SPF/DMARC
        # conflict) is reported, not waited for: their record stays theirs.
        conflicted = conflicted_names(p.conflicts)
        missing = [c for c in checks
                   if blocks(c.expected.purpose, c.expected.record.name, c.status,
                             c.expected.required, conflicted)]
        report: dict[str, Any] = {
            "records": [c.json() for c in checks], "conflicts": list(p.conflicts),
            "verified": not missing, "nameservers": [fqdn(n) for n in nameservers]}
        revisit = dk.next_due(views(keys), rotate, retire, revoked)
        await self.ds.set_report(d.id, report, revisit)
        ph.mark("report")
        if p.conflicts:
            log.warning("dns conflicts left to the operator", conflicts=list(p.conflicts))
        if missing:
            names = ", ".join(f"{c.expected.record.rtype} {c.expected.record.name} "
                              f"({c.status})" for c in missing[:5])
            raise TemporaryError(f"dns: waiting for records to verify: {names}",
                                 delay=self.cfg.dns.recheck_seconds
                                 if provider.publishes else None)
        if d.ownership_verified_at is None:
            # ``manual`` publishes nothing, names no nameservers and verifies at the
            # servers of the public delegation: its records verified there, DKIM keys
            # included (which no one else knows), prove the name.
            await self._proven(d.id, zone, "its records verified at its delegated servers")

    async def settle(self) -> None:
        """Before a pass records mailboxes as served: a signer restart still in progress
        finishes first, so a mailbox never sends before its domain's keys sign."""
        await self.svc.settled()

    async def _prove(self, domain_id: str, zone: str, nameservers: list[str]) -> None:
        """Raise unless the public delegation of *zone* names *nameservers*; record it."""
        if not nameservers:
            raise TemporaryError(f"dns: the name {zone} cannot be proven: its provider names "
                                 "no nameservers to delegate to (configure them)")
        dlg = await delegation(zone, nameservers, self.cfg.dns.ns_resolver,
                               self.cfg.dns.query_timeout)
        if not dlg.verified:
            raise TemporaryError(
                f"dns: waiting for the delegation of {zone} to {', '.join(dlg.wanted)} "
                f"(found: {', '.join(dlg.found) or 'no NS records'}); it receives no mail "
                "until then (POST /v1/domains/check-ns re-checks now)")
        await self._proven(domain_id, zone, "delegated to " + ", ".join(dlg.wanted))

    async def _proven(self, domain_id: str, zone: str, how: str) -> None:
        """Record the proof; this pass rendered the domain as absent, so end it here (the
        new generation brings the next pass, which serves it) rather than report it
        converged before it is in the maps."""
        if await self.svc.store.domains.record_ownership(domain_id):
            log.info("domain name proven", domain=zone, proof=how)
        raise TemporaryError(f"dns: {zone} proven ({how}); serving it from the next pass",
                             delay=0.0)

    async def _remove(self, domain_id: str, zone: str, provider: DnsProvider) -> None:
        """Domain deletion: remove the records we own (only those), then the keys."""
        if provider.publishes:
            p = await self.svc.compute_plan(domain_id, zone, provider, deleting=True)
            await provider.apply(zone, p.rrsets)
        await self.ds.set_owned(domain_id, [])
        # The domain is marked deleted: its keys are no longer in the signer's tables.
        await self.svc.sync_signer()


async def revisit_loop(svc: DnsService, stop: asyncio.Event, interval: float = 30.0) -> None:
    """Re-queue domains whose time-based DKIM transition fell due (stored due time,
    checked periodically: no in-memory timers, survives restarts)."""
    while not stop.is_set():
        try:
            n = await svc.ds.requeue_due()
            if n:
                log.info("dns revisits queued", domains=n)
        except Exception as exc:  # the store may be briefly unreachable
            log.warning("dns revisit check failed", error=str(exc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
