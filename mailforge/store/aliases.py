"""Aliases (forwards, catch-alls) and alias domains, scoped by account and by the
request's domain restriction. Like mailboxes, each write bumps a generation, records a
job and wakes the workers in one short transaction; the account row is locked so an
alias and a mailbox cannot take the same address concurrently."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from .. import ids, validation
from ..errors import Conflict, NotFound, ValidationFailed
from ..models import Alias, Domain, Job, from_record
from . import scope
from .db import Database, Repository
from .jobs import Jobs
from .mailboxes import queue_work
from .queries import Q


def check_targets(address: str, targets: Sequence[str]) -> None:
    """Every target canonical (what the backend writes into its maps, as it is), none
    twice, none the alias itself: checked before anything is written, so a refused
    request changes nothing and the backend never meets a target it must refuse."""
    errs = []
    if not 1 <= len(targets):
        errs.append("targets: must name at least one address")
    for n, t in enumerate(targets):
        try:
            local, dom = validation.email_address(t)
        except ValueError as exc:
            errs.append(f"targets[{n}]: {exc}")
            continue
        if f"{local}@{dom}" != t:
            errs.append(f"targets[{n}]: must be written {local}@{dom}")
        elif t == address:
            errs.append(f"targets[{n}]: an alias cannot forward to itself")
        elif t in targets[:n]:
            errs.append(f"targets[{n}]: {t} is given twice")
    if errs:
        raise ValidationFailed(errs)


class Aliases(Repository):
    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.jobs = Jobs(db)

    async def create(self, account_id: str, domain: Domain, address: str,
                     targets: Sequence[str]) -> tuple[Alias, Job]:
        scope.check(domain.name)
        check_targets(address, targets)
        async with self.db.tx() as conn:
            await conn.fetchrow(Q.lock_account, account_id)
            if await conn.fetchval(Q.live_address_taken, address, account_id):
                raise Conflict("address_taken", "The address is already taken.",
                               [f"username: {address} is already taken"])
            try:
                row = await conn.fetchrow(Q.insert_alias, ids.new_id("ali"), account_id,
                                          domain.id, address, list(targets))
                assert row is not None
            except asyncpg.UniqueViolationError:
                raise Conflict("address_taken", "The address is already taken.",
                               [f"username: {address} is already taken"]) from None
            job = await queue_work(self.jobs, conn, account_id, "alias_create", row["id"],
                                   [(row["id"], row["generation"])],
                                   [(domain.id, domain.mail_host)], kind="alias")
        return from_record(Alias, row), job

    async def get(self, account_id: str, alias_id: str) -> tuple[Alias, str]:
        """The alias and its domain's name; 404 outside the account or restriction."""
        if not ids.has_prefix(alias_id, "ali"):
            raise NotFound("alias")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_alias, account_id, alias_id)
        if row is None:
            raise NotFound("alias")
        scope.check(row["domain_name"], "alias")
        return from_record(Alias, row), row["domain_name"]

    async def page(self, account_id: str, domain: str | None, search: str | None,
                   limit: int, offset: int, after: str | None = None
                   ) -> tuple[list[tuple[Alias, str]], int, bool]:
        """A page of aliases in address order (of the canonical domain name *domain* if
        given; after the address *after* if given, else from *offset*), the total, and
        whether more follow."""
        async with self.pool.acquire() as conn:
            allowed = scope.names()
            # One row more than the page says whether another page follows.
            rows = await conn.fetch(Q.list_aliases, account_id, domain, search, limit + 1,
                                    0 if after is not None else offset, allowed, after)
            if rows and after is None:
                total = rows[0]["total_count"]
            else:
                total = await conn.fetchval(Q.count_aliases, account_id, domain, search,
                                            allowed)
        more = len(rows) > limit
        return ([(from_record(Alias, r), r["domain_name"]) for r in rows[:limit]],
                int(total), more)

    async def change(self, account_id: str, alias_id: str,
                     targets: Sequence[str] | None) -> tuple[Alias, str, Job]:
        """New targets, or (``targets`` None) deletion."""
        if not ids.has_prefix(alias_id, "ali"):
            raise NotFound("alias")
        async with self.db.tx() as conn:
            cur = await conn.fetchrow(Q.lock_alias, account_id, alias_id)
            if cur is None:
                raise NotFound("alias")
            scope.check(cur["domain_name"], "alias")
            if targets is None:
                row = await conn.fetchrow(Q.delete_alias, account_id, alias_id)
                kind = "alias_delete"
            else:
                # Before the write: a refused update changes nothing.
                check_targets(cur["address"], targets)
                row = await conn.fetchrow(Q.update_alias_targets, account_id, alias_id,
                                          list(targets))
                kind = "alias_update"
            assert row is not None  # locked above
            job = await queue_work(self.jobs, conn, account_id, kind, alias_id,
                                   [(alias_id, row["generation"])],
                                   [(cur["domain_id"], cur["mail_host"])], kind="alias")
        return from_record(Alias, row), cur["domain_name"], job

    async def set_alias_domain(self, account_id: str, domain: Domain,
                               target: Domain | None) -> Job:
        """Make *domain* an alias of *target* (None: no longer an alias)."""
        scope.check(domain.name)
        if target is not None:
            scope.check(target.name)
        async with self.db.tx() as conn:
            row = await conn.fetchrow(Q.get_domain, account_id, domain.id)
            if row is None:
                raise NotFound("domain")
            old = row["alias_of"]
            if target is not None:
                if target.id == domain.id:
                    raise Conflict("alias_loop", "A domain cannot be an alias of itself.")
                tgt = await conn.fetchrow(Q.get_domain, account_id, target.id)
                if tgt is None:
                    raise NotFound("domain")
                if tgt["alias_of"] is not None:
                    raise Conflict("alias_loop",
                                   f"{target.name} is itself an alias domain.")
            await conn.execute(Q.update_alias_of, account_id, domain.id,
                               target.id if target else None)
            # The alias domain and its old and new targets are re-rendered.
            bumped = await conn.fetch(Q.set_alias_of, account_id, domain.id,
                                      target.id if target else None, old)
            return await queue_work(self.jobs, conn, account_id, "alias_domain_update",
                                    domain.id, [(r["id"], r["generation"]) for r in bumped],
                                    [(r["id"], r["mail_host"]) for r in bumped],
                                    kind="domain")

    async def list_alias_domains(self, account_id: str) -> list[dict[str, str]]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.list_alias_domains, account_id, scope.names())
        return [{"domain_id": r["id"], "domain": r["name"], "target_id": r["target_id"],
                 "target": r["target_name"]} for r in rows]
