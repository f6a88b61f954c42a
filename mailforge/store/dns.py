"""DKIM keys, the DNS records mailforge owns, and per-domain DNS bookkeeping: what the
reconcile step (``dns/step.py``) reads and writes for a domain the engine claimed, so
these queries are scoped by domain id (tenant requests find the domain first, through
``Domains``, by account and domain restriction). Short transactions only; nothing here
talks to a provider."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .. import ids
from .db import Repository
from .queries import Q


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


@dataclass(frozen=True)
class DnsOptions:
    """A domain's DNS bookkeeping: the operator's permissions, the sealed provider
    credentials, the last verification report, and a DKIM rotation asked for and not
    yet carried out (when it was asked)."""

    overwrite: bool
    force: bool
    sealed_credentials: bytes | None
    report: dict[str, Any] | None
    checked_at: datetime | None
    rotation_requested_at: datetime | None


@dataclass(frozen=True)
class SigningKey:
    """A key the DKIM signer loads: the domain's name, the key's selector and sealed
    private key."""

    domain: str
    domain_id: str
    algorithm: str
    selector: str
    sealed_private: bytes


def _key(r: asyncpg.Record) -> DkimKey:
    return DkimKey(r["id"], r["domain_id"], r["algorithm"], r["selector"], r["public_key"],
                   bytes(r["sealed_private"]), r["state"], r["created_at"],
                   r["state_changed_at"])


class Dns(Repository):
    async def keys(self, domain_id: str) -> list[DkimKey]:
        async with self.pool.acquire() as conn:
            return [_key(r) for r in await conn.fetch(Q.dkim_keys_of, domain_id)]

    async def add_keys(self, domain_id: str, new: Iterable[tuple[str, str, str, bytes]],
                       rotation_requested_at: datetime | None = None) -> None:
        """Insert (algorithm, selector, public key, sealed private key) rows; when they
        carry out the rotation asked for at *rotation_requested_at*, that request is
        cleared in the same transaction (unless a newer one came meanwhile)."""
        async with self.db.tx() as conn:
            for alg, sel, pub, sealed in new:
                await conn.execute(Q.insert_dkim_key, ids.new_id("dkim"), domain_id, alg, sel,
                                   pub, sealed)
            if rotation_requested_at is not None:
                await conn.execute(Q.consume_dkim_rotation, domain_id, rotation_requested_at)

    async def rotation_done(self, domain_id: str, requested_at: datetime) -> None:
        """The rotation asked for at *requested_at* needs no new keys (some are on
        their way already): cleared, unless a newer request came meanwhile."""
        async with self.pool.acquire() as conn:
            await conn.execute(Q.consume_dkim_rotation, domain_id, requested_at)

    async def set_states(self, moves: Iterable[tuple[str, str]]) -> None:
        async with self.db.tx() as conn:
            for key_id, state in moves:
                if state == "deleted":
                    await conn.execute(Q.delete_dkim_key, key_id)
                else:
                    await conn.execute(Q.set_dkim_state, key_id, state)

    async def signing_keys(self) -> list[SigningKey]:
        """The signer's whole table for this mail host."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.active_signing_keys, self.db.mail_host)
        return [SigningKey(r["domain"], r["domain_id"], r["algorithm"], r["selector"],
                           bytes(r["sealed_private"])) for r in rows]

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
        async with self.db.tx() as conn:
            await conn.execute(Q.clear_owned_records, domain_id)
            if ks:
                await conn.execute(Q.insert_owned_records, domain_id, [k[0] for k in ks],
                                   [k[1] for k in ks], [k[2] for k in ks])

    async def set_report(self, domain_id: str, report: dict[str, Any],
                         revisit_at: datetime | None) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.set_dns_report, domain_id, report, revisit_at)

    async def options(self, domain_id: str) -> DnsOptions | None:
        async with self.pool.acquire() as conn:
            r = await conn.fetchrow(Q.domain_dns_options, domain_id)
        if r is None:
            return None
        creds = r["dns_credentials"]
        return DnsOptions(overwrite=r["dns_overwrite"], force=r["dns_force"],
                          sealed_credentials=None if creds is None else bytes(creds),
                          report=r["dns_report"], checked_at=r["dns_checked_at"],
                          rotation_requested_at=r["dkim_rotate_requested_at"])

    async def clear_force(self, domain_id: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.clear_dns_force, domain_id)

    async def requeue_due(self) -> int:
        """Domains of this host whose time-based DKIM transition fell due get a new
        generation (the engine visits them); how many."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.requeue_dns_due, self.db.mail_host)
            if rows:
                await conn.execute(Q.notify_work, self.db.mail_host)
        return len(rows)
