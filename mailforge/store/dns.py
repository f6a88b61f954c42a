"""Store access for DKIM keys, owned DNS records and per-domain DNS bookkeeping.
Short transactions only; nothing here talks to a provider."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .. import ids
from ..errors import NotFound
from ..models import Domain, Job, from_record
from .queries import Q
from .store import Store


@dataclass(frozen=True)
class DkimKey:
    id: str
    domain_id: str
    algorithm: str
    selector: str
    public_key: str
    sealed_private: bytes
    state: str
    created_at: datetime
    state_changed_at: datetime


def _key(r: asyncpg.Record) -> DkimKey:
    return DkimKey(r["id"], r["domain_id"], r["algorithm"], r["selector"], r["public_key"],
                   bytes(r["sealed_private"]), r["state"], r["created_at"],
                   r["state_changed_at"])


class DnsStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.pool = store.pool

    async def keys(self, domain_id: str) -> list[DkimKey]:
        async with self.pool.acquire() as conn:
            return [_key(r) for r in await conn.fetch(Q.dkim_keys_of, domain_id)]

    async def add_keys(self, domain_id: str,
                       new: Iterable[tuple[str, str, str, bytes]]) -> None:
        """Insert (algorithm, selector, public key, sealed private key) rows."""
        async with self.pool.acquire() as conn, conn.transaction():
            for alg, sel, pub, sealed in new:
                await conn.execute(Q.insert_dkim_key, ids.new_id("dkim"), domain_id, alg, sel,
                                   pub, sealed)

    async def set_states(self, moves: Iterable[tuple[str, str]]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            for key_id, state in moves:
                if state == "deleted":
                    await conn.execute(Q.delete_dkim_key, key_id)
                else:
                    await conn.execute(Q.set_dkim_state, key_id, state)

    async def signing_keys(self) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(Q.active_signing_keys, self.store.mail_host))

    async def owned(self, domain_id: str) -> set[tuple[str, str, str]]:
        async with self.pool.acquire() as conn:
            return {(r["name"], r["rtype"], r["content"])
                    for r in await conn.fetch(Q.owned_records, domain_id)}

    async def add_owned(self, domain_id: str, keys: Iterable[tuple[str, str, str]]) -> None:
        ks = list(keys)
        if not ks:
            return
        async with self.pool.acquire() as conn:
            await conn.execute(Q.insert_owned_records, domain_id, [k[0] for k in ks],
                               [k[1] for k in ks], [k[2] for k in ks])

    async def set_owned(self, domain_id: str, keys: Iterable[tuple[str, str, str]]) -> None:
        ks = list(keys)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(Q.clear_owned_records, domain_id)
            if ks:
                await conn.execute(Q.insert_owned_records, domain_id, [k[0] for k in ks],
                                   [k[1] for k in ks], [k[2] for k in ks])

    async def set_report(self, domain_id: str, report: dict[str, Any],
                         revisit_at: datetime | None) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.set_dns_report, domain_id, report, revisit_at)

    async def options(self, domain_id: str) -> asyncpg.Record | None:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(Q.domain_dns_options, domain_id)

    async def set_options(self, domain_id: str, overwrite: bool, force: bool) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.set_dns_options, domain_id, overwrite, force)

    async def clear_force(self, domain_id: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.clear_dns_force, domain_id)

    async def is_served(self, name: str) -> bool:
        """Is *name* (canonical) a set-up, not deleted domain (any account)? For the
        public MTA-STS and autoconfig answers, which name no account."""
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval(Q.domain_served, name))

    async def record_ownership(self, domain_id: str) -> bool:
        """Record that the domain's name is proven (first time only: then its
        generation moves on and the engine serves it). True when this call recorded it."""
        async with self.pool.acquire() as conn, conn.transaction():
            host = await conn.fetchval(Q.record_domain_ownership, domain_id)
            if host is not None:
                await conn.execute(Q.notify_work, host)
        return host is not None

    async def forget_unset_domain(self, account_id: str, domain_id: str) -> None:
        """Remove a just-connected domain whose zone turned out not to be ours."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.forget_unset_domain, account_id, domain_id)

    async def requeue_due(self) -> int:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.requeue_dns_due, self.store.mail_host)
            if rows:
                await conn.execute(Q.notify_work, self.store.mail_host)
        return len(rows)

    async def _job_for(self, account_id: str, query: str, domain_id: str,
                       job_type: str) -> tuple[Domain, Job]:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(query, account_id, domain_id)
            if row is None:
                raise NotFound("domain")
            job = await self.store._insert_job(conn, account_id, job_type, domain_id,
                                               [("domain", domain_id, row["generation"])])
            await conn.execute(Q.notify_work, row["mail_host"])
        return from_record(Domain, row), job

    async def request_rotation(self, account_id: str, domain_id: str) -> tuple[Domain, Job]:
        return await self._job_for(account_id, Q.request_dkim_rotation, domain_id,
                                   "dkim_rotate")

    async def request_delete(self, account_id: str, domain_id: str) -> tuple[Domain, Job]:
        return await self._job_for(account_id, Q.request_domain_delete, domain_id,
                                   "domain_delete")
