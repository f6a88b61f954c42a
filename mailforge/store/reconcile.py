"""Reconcile: the reconcile engine's reads and writes (``mailforge/engine.py``).

Scoped by mail host, not by tenant: a worker converges every domain of its host. The
unit a worker claims is a domain, under a lease committed at once (``FOR UPDATE SKIP
LOCKED`` only picks the candidates; no transaction stays open while the backend runs).
What a pass converged is recorded by compare-and-set on each object's generation, so a
change made while the backend applied stays unconverged for the next pass. Job items
are settled from the objects' observed state in the same transaction as the record.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..models import Alias, Domain, DomainState, Mailbox, from_record
from .db import Repository
from .queries import Q

if TYPE_CHECKING:
    from .db import Conn

M = TypeVar("M", Mailbox, Alias)

# The backend's answer to "must these domains (names) be handed complete?".
NeedsComplete = Callable[[Sequence[str]], bool]


# Rows of a domain read per round trip while loading it: a complete state of a domain
# of 100,000 mailboxes is streamed, never held twice (rows and models) in memory.
_CHUNK = 2000


async def _load(conn: Conn, cls: type[M], domain: Domain, query: str) -> list[M]:
    """The objects *query* finds for *domain*, streamed through a cursor and built
    positionally (a model per row costs ~1 us instead of ~20 us by keyword). Values
    every row repeats are shared rather than held once per row: the domain's and
    account's ids, and the status strings."""
    out: list[M] = []
    names = list(cls.__dataclass_fields__)
    at = {f: i for i, f in enumerate(names)}
    dom, acc = at.get("domain_id"), at.get("account_id")
    status, targets = at.get("status"), at.get("targets")
    async with conn.transaction(readonly=True):  # a cursor lives in a transaction
        cur = await conn.cursor(query, domain.id)
        pick: operator.itemgetter[Any] | None = None
        while rows := await cur.fetch(_CHUNK):
            if pick is None:
                keys = list(rows[0].keys())
                # SELECT * carries every field; picked in the model's field order.
                pick = operator.itemgetter(*(keys.index(f) for f in names))
            for rec in rows:
                vals = list(pick(rec))
                if dom is not None and vals[dom] == domain.id:
                    vals[dom] = domain.id
                if acc is not None and vals[acc] == domain.account_id:
                    vals[acc] = domain.account_id
                if status is not None:
                    vals[status] = sys.intern(vals[status])
                if targets is not None:
                    vals[targets] = tuple(vals[targets])
                out.append(cls(*vals))
            del rows
    return out


class Reconcile(Repository):
    """The engine's repository: claim, record, retry, fail, release."""

    async def claim_domains(self, owner: str, limit: int, lease_seconds: float,
                            needs_complete: NeedsComplete | None = None
                            ) -> list[DomainState]:
        """Lease up to *limit* domains of this host that have unconverged objects to
        *owner* for *lease_seconds*, and load the desired state of each. Their pending
        jobs become ``processing``.

        A domain the backend already holds at its current generation
        (``applied_generation``) and that is served is loaded as a delta
        (``DomainState.complete`` False): only its lagging mailboxes and aliases, found
        through the partial indexes, so the cost follows the change, not the domain's
        size. Every domain-wide change (setup, delete, proof of the name, alias domains,
        account suspension, DKIM/DNS intent) bumps the domain's generation and so brings
        a complete state. *needs_complete*: the backend's ``needs_complete`` (None: a
        backend that takes only complete states); asked with the names of the domains
        that would be deltas, True loads them complete too."""
        async with self.db.tx() as conn:
            rows = await conn.fetch(Q.claim_domains, self.db.mail_host, limit, owner,
                                    lease_seconds)
        if not rows:
            return []
        domains = [from_record(Domain, r) for r in rows]
        delta = {d.id for d, r in zip(domains, rows, strict=True)
                 if r["applied_generation"] >= d.generation
                 and DomainState(d).present}
        if delta and (needs_complete is None
                      or needs_complete([d.name for d in domains if d.id in delta])):
            delta = set()
        states: list[DomainState] = []
        object_ids: list[str] = []
        async with self.pool.acquire() as conn:
            for d, r in zip(domains, rows, strict=True):
                whole = d.id not in delta
                mbs = tuple(await _load(conn, Mailbox, d, Q.domain_mailboxes if whole
                                        else Q.domain_mailboxes_lagging))
                als = tuple(await _load(conn, Alias, d, Q.domain_aliases if whole
                                        else Q.domain_aliases_lagging))
                alias_domains = tuple(row["name"] for row in
                                      await conn.fetch(Q.alias_domain_names, d.id))
                states.append(DomainState(d, mbs, als, alias_domains,
                                          account_suspended=r["account_status"] != "active",
                                          complete=whole))
                object_ids.append(d.id)
                object_ids.extend(m.id for m in mbs if m.observed_generation < m.generation)
            await conn.execute(Q.mark_jobs_processing, object_ids)
        return states

    async def request_resync(self) -> int:
        """Every domain of this host is handed to the backend complete on its next pass
        (the backend asked: ``MailBackend.full_resync_pending``); returns how many."""
        async with self.pool.acquire() as conn:
            return int((await conn.execute(Q.request_resync, self.db.mail_host)).split()[-1])

    async def resync_remaining(self) -> int:
        """How many domains of this host still wait for the complete pass that
        ``request_resync`` asked for."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(Q.resync_remaining, self.db.mail_host))

    async def renew_leases(self, domain_ids: Sequence[str], owner: str,
                           lease_seconds: float) -> set[str]:
        """Extend *owner*'s leases on *domain_ids*; returns the ids it still holds."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.renew_leases, list(domain_ids), owner, lease_seconds)
        return {r["id"] for r in rows}

    async def release(self, domain_ids: Sequence[str], owner: str) -> None:
        """Hand back domains *owner* leased without recording anything (a pass cut
        short): the next pass may claim them at once instead of after the lease."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.release_domains, list(domain_ids), owner)

    async def record_applied(self, state: DomainState, owner: str, domain_done: bool,
                             failed_mailboxes: dict[str, str]) -> list[str]:
        """Record what the backend now holds for *state*; returns ids of finished jobs.

        *domain_done*: the domain itself converged (backend and every domain step), so
        its generation is recorded and its lease dropped; otherwise only its mailboxes
        and aliases are recorded and the lease stays, for the retry or failure the
        engine records next to release (no other worker may claim in between).

        A set-up domain whose name is not proven yet is rendered as absent: the backend
        holds none of its mailboxes and aliases, so they stay unobserved (``pending``,
        their jobs open) until the pass that serves them."""
        d = state.domain
        held = state.present or d.deleted or not d.backend_enabled
        mb_ok = [m for m in state.mailboxes
                 if m.observed_generation < m.generation and m.id not in failed_mailboxes
                 and not m.deleted and held]
        mb_gone = [m for m in state.mailboxes
                   if m.deleted and m.id not in failed_mailboxes]
        mb_fail = [m for m in state.mailboxes if m.id in failed_mailboxes]
        al_ok = [a for a in state.aliases if a.observed_generation < a.generation
                 and not a.deleted and held]
        al_gone = [a for a in state.aliases if a.deleted]
        touched = [state.domain.id, *(m.id for m in state.mailboxes
                                      if m.observed_generation < m.generation),
                   *(a.id for a in state.aliases if a.observed_generation < a.generation)]
        async with self.db.tx() as conn:
            if mb_ok:
                await conn.execute(Q.observe_mailboxes, [m.id for m in mb_ok],
                                   [m.generation for m in mb_ok])
            if mb_gone:
                # Kept as tombstones until their retention ends (store/mailboxes.py).
                await conn.execute(Q.tombstone_mailboxes, [m.id for m in mb_gone],
                                   [m.generation for m in mb_gone])
            if mb_fail:
                await conn.execute(Q.fail_mailboxes, [m.id for m in mb_fail],
                                   [m.generation for m in mb_fail],
                                   [failed_mailboxes[m.id] for m in mb_fail])
            if al_ok:
                await conn.execute(Q.observe_aliases, [a.id for a in al_ok],
                                   [a.generation for a in al_ok])
            if al_gone:
                await conn.execute(Q.purge_deleted_aliases, [a.id for a in al_gone],
                                   [a.generation for a in al_gone])
            # The domain row last, written once (both record that the backend holds
            # the domain at this generation: deltas from now on).
            if domain_done:
                if d.deleted:
                    await conn.execute(Q.purge_deleted_domain, d.id, d.generation)
                await conn.execute(Q.observe_domain, d.id, d.generation)
            else:
                await conn.execute(Q.release_applied_domain, d.id, owner, d.generation)
            return await self._settle_jobs(conn, touched)

    async def _settle_jobs(self, conn: Conn, object_ids: list[str]) -> list[str]:
        """Settle the pending job items of *object_ids* from the objects' observed state
        and refresh their jobs; returns the ids of jobs that finished now."""
        job_ids = sorted({r["job_id"] for r in await conn.fetch(Q.settle_job_items,
                                                                 object_ids)})
        if not job_ids:
            return []
        rows = await conn.fetch(Q.refresh_jobs, job_ids)
        return [r["id"] for r in rows if r["status"] in ("completed", "failed")]

    async def record_retry(self, state: DomainState, error: str, base: float, cap: float,
                           delay: float | None) -> int:
        """Schedule another attempt (after *delay* seconds if given, else capped
        exponential backoff from *base* to *cap* with jitter) and release the lease;
        returns the number of failed attempts so far."""
        async with self.db.tx() as conn:
            return int(await conn.fetchval(Q.retry_domain, state.domain.id, error, base, cap,
                                           delay))

    async def record_permanent_failure(self, state: DomainState, error: str) -> list[str]:
        """Record *error* on the domain and its pending mailboxes, not to be retried
        until the desired state changes; returns ids of jobs that finished now."""
        pending = {m.id: error for m in state.mailboxes
                   if m.observed_generation < m.generation}
        async with self.db.tx() as conn:
            await conn.execute(Q.fail_domain, state.domain.id, error)
            if pending:
                mbs = [m for m in state.mailboxes if m.id in pending]
                await conn.execute(Q.fail_mailboxes, [m.id for m in mbs],
                                   [m.generation for m in mbs], [error] * len(mbs))
            touched = [state.domain.id, *pending]
            return await self._settle_jobs(conn, touched)

    async def release_dead_leases(self, node: str, alive: Callable[[int], bool]) -> int:
        """Release leases held by processes of this node (``node:pid:worker``) that no
        longer run, so a restart after a crash need not wait for their expiry."""
        async with self.db.tx() as conn:
            owners = [r["lease_owner"] for r in await conn.fetch(Q.lease_owners,
                                                                  self.db.mail_host, node)]
            dead = []
            for owner in owners:
                _, _, rest = owner.partition(f"{node}:")
                pid = rest.split(":", 1)[0]
                if pid.isdigit() and not alive(int(pid)):
                    dead.append(owner)
            if dead:
                await conn.execute(Q.release_owner_leases, self.db.mail_host, dead)
            return len(dead)

    async def expire_job_secrets(self) -> None:
        """Erase jobs' one-time secrets whose time is over."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.expire_job_secrets)

    async def unconverged(self) -> dict[str, int]:
        """How many domains, mailboxes and aliases (all hosts) await convergence."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.unconverged_counts)
        return dict(row) if row else {}
