"""The store: every read and write of desired state, scoped by account.

Tenant scoping lives here: each tenant method takes the account id and every query
filters on it, so a handler cannot forget the check. The engine's repository
(``store.reconcile``) is scoped by mail host instead. Transactions are short and never
span a backend call.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import ids, publicsuffix, validation
from .. import reserved as reserved_mod
from ..errors import Conflict, Forbidden, NotFound, Unauthorized, ValidationFailed
from ..models import Domain, Job, Principal, from_record
from . import scope
from .aliases import Aliases
from .db import Database
from .jobs import IDEMPOTENCY, Jobs
from .mail import InboundScans, Senders, Sending
from .mailboxes import Mailboxes
from .queries import Q
from .reconcile import Reconcile
from .webhooks import Webhooks

TOKEN_PREFIX = "mf_"  # noqa: S105 - a prefix, not a secret
WORK_CHANNEL = "mailforge_work"
# pg_advisory_xact_lock(DOMAIN_NAMES_LOCK, hashtext(top-level label)) serialises the
# connects of names that could be at, above or under one another (such names always
# share their last label), so the ownership check cannot be raced.
DOMAIN_NAMES_LOCK = 7270002

if TYPE_CHECKING:
    from .db import Conn


async def _init_connection(conn: Conn) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads,
                              schema="pg_catalog")


async def _keep_session(conn: Conn) -> None:
    """What the pool does to a connection on release, beyond asyncpg's own rollback of
    an open transaction: nothing. asyncpg's default reset sends ``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, a
    round trip per request (measured in docs/benchmarks.md) undoing session state this
    code never leaves behind: no ``SET`` (only ``SET LOCAL``-free statements and
    transaction-scoped ``pg_advisory_xact_lock``), no cursors outside transactions, no
    ``LISTEN`` on pooled connections (the engine and the token cache listen on
    connections of their own); the one session advisory lock (``migrate.apply``) is
    released in a ``finally`` and a connection failing there is broken anyway. Code
    that adds session state must use a connection of its own, not the pool's."""


async def create_pool(dsn: str, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     init=_init_connection, reset=_keep_session)
    assert pool is not None
    return pool


def hash_secret(secret: str) -> bytes:
    # Tokens carry 256 random bits, so a fast hash is enough; a slow KDF would only
    # add latency to every request.
    return hashlib.sha256(secret.encode()).digest()


def canonical_domain(value: object, field: str = "domain") -> str:
    """The canonical name (``validation.domain_name``), or 400 naming *field*."""
    try:
        return validation.domain_name(value)
    except ValueError as exc:
        raise ValidationFailed([f"{field}: {exc}"]) from None


def _relatives_params(names: Sequence[str]) -> tuple[list[str], list[str], list[str],
                                                      list[str]]:
    """Parameters of ``Q.domain_name_relatives`` for *names*: the names, all their
    proper parents, and for their descendants a byte range over ``reverse(name)``
    (every descendant of n reversed starts with reverse("." + n), which ends in ".";
    "/" is the next byte)."""
    parents = sorted({n.split(".", k)[k] for n in names for k in range(1, n.count(".") + 1)})
    lows = [("." + n)[::-1] for n in names]
    return list(names), parents, lows, [lo[:-1] + "/" for lo in lows]


_SECRET = re.compile(r"[A-Za-z0-9_-]{1,128}")  # token_urlsafe output, matched in full


def split_token(token: str) -> tuple[str, str] | None:
    """``mf_<token id>.<secret>`` -> (token id, secret)."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token or len(token) > 200:
        return None
    tid, _, secret = token[len(TOKEN_PREFIX):].partition(".")
    if not ids.has_prefix(tid, "tok") or not _SECRET.fullmatch(secret):
        return None
    return tid, secret




@dataclass(frozen=True)
class IdempotencyClaim:
    """The stored state of an Idempotency-Key: the first answer once recorded (status
    non-zero), else who handles it, whether its lease ran out, and the job it created."""

    request_hash: bytes
    status: int
    sealed_body: bytes | None
    claimant: str | None
    lease_expired: bool
    job_id: str | None


class Store(Database):
    """The database and its repositories, one per concept (``store/db.py``). Methods
    still defined here move to their concept's repository as each is rebuilt."""

    def __init__(self, pool: asyncpg.Pool, mail_host: str = "default") -> None:
        super().__init__(pool, mail_host)
        self.jobs = Jobs(self)
        self.mailboxes = Mailboxes(self)
        self.aliases = Aliases(self)
        self.reconcile = Reconcile(self)
        self.senders = Senders(self)
        self.sending = Sending(self)
        self.inbound_scans = InboundScans(self)
        self.webhooks = Webhooks(self)

    def _tx(self) -> AbstractAsyncContextManager[Conn]:
        return self.tx()

    # ------------------------------------------------------------------ accounts, tokens

    async def ensure_root_account(self, name: str = "operator", domain_limit: int = 1_000_000,
                                  email_user_limit: int = 10_000_000) -> str:
        async with self._tx() as conn:
            # Serialise concurrent first starts so there is exactly one root account.
            await conn.execute("SELECT pg_advisory_xact_lock(7270001)")
            row = await conn.fetchrow(Q.root_account)
            if row:
                return str(row["id"])
            acct = ids.new_id("acct")
            await conn.execute(Q.insert_account, acct, name, None, None, domain_limit,
                               email_user_limit)
            return acct

    async def create_token(self, account_id: str, name: str, permissions: Sequence[str],
                           domains: Sequence[str] | None = None,
                           expires_at: datetime | None = None) -> tuple[str, str, datetime]:
        """Create a token; returns (id, secret token string shown once, created_at).

        Low level: the domain restriction is stored as given. Tenant-facing paths (the
        API, the CLI) use ``create_owned_token``, which refuses domains the account
        does not own."""
        async with self._tx() as conn:
            return await self._insert_token(conn, account_id, name, permissions, domains,
                                            expires_at)

    async def create_owned_token(self, account_id: str, name: str,
                                 permissions: Sequence[str], domains: Sequence[str] | None,
                                 expires_at: datetime | None = None,
                                 minted_by: str | None = None
                                 ) -> tuple[str, str, datetime]:
        """Create a token whose domain restriction names only domains the account owns
        (checked in the same transaction as the insert). *domains* in request order:
        a refused one is reported as ``domains[i]``."""
        restriction = None
        async with self._tx() as conn:
            if domains is not None:
                canon = [canonical_domain(d, f"domains[{i}]") for i, d in enumerate(domains)]
                # Shares the account row lock with connect, so a domain being connected
                # or deleted right now is seen in its final state.
                if await conn.fetchrow(Q.lock_account, account_id) is None:
                    raise NotFound("account")
                owned = {r["name"] for r in await conn.fetch(Q.owned_domain_names,
                                                             account_id, canon)}
                errs = [f"domains[{i}]: {n} is not a domain of this account"
                        for i, n in enumerate(canon) if n not in owned]
                if errs:
                    raise ValidationFailed(errs)
                restriction = sorted(set(canon))
            return await self._insert_token(conn, account_id, name, permissions,
                                            restriction, expires_at, minted_by)

    async def _insert_token(self, conn: Conn, account_id: str, name: str,
                            permissions: Sequence[str], domains: Sequence[str] | None,
                            expires_at: datetime | None, minted_by: str | None = None
                            ) -> tuple[str, str, datetime]:
        """Insert a token. *minted_by*: the token creating it (None for the operator's
        CLI): the new token is revoked with it and never outlives it, so a stolen
        short-lived token cannot mint itself a lasting one. Without an expiry of its own
        the new token takes the minting token's; a later one is refused."""
        if minted_by is not None:
            parent = await conn.fetchrow(Q.minting_token, minted_by)
            if parent is None or parent["revoked_at"] is not None:
                raise Unauthorized("unauthorized", "Missing or invalid bearer token.")
            limit = parent["expires_at"]
            if limit is not None:
                if expires_at is None:
                    expires_at = limit
                elif expires_at > limit:
                    raise ValidationFailed([
                        "expires_at: must not be later than the expiry of the token "
                        f"creating it ({limit.isoformat(timespec='seconds')})"])
        tid = ids.new_id("tok")
        secret = secrets.token_urlsafe(32)
        created = await conn.fetchval(Q.insert_token, tid, account_id, name,
                                      hash_secret(secret), list(permissions),
                                      list(domains) if domains is not None else None,
                                      expires_at, minted_by)
        return tid, f"{TOKEN_PREFIX}{tid}.{secret}", created

    async def authenticate(self, token: str) -> Principal | None:
        parts = split_token(token)
        if parts is None:
            return None
        tid, secret = parts
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.token_for_auth, tid)
            if row is None:
                hmac.compare_digest(hash_secret(secret), b"\0" * 32)  # same work either way
                return None
            if not hmac.compare_digest(bytes(row["secret_hash"]), hash_secret(secret)):
                return None
            now = await conn.fetchval("SELECT now()")
            if row["revoked_at"] is not None:
                return None
            if row["expires_at"] is not None and row["expires_at"] <= now:
                return None
            last = row["last_used_at"]
            # Recording every use would make each request a write; a minute is precise enough.
            if last is None or now - last > timedelta(seconds=60):
                await conn.execute(Q.touch_token, tid)
        doms = frozenset(row["domains"]) if row["domains"] is not None else None
        return Principal(token_id=tid, account_id=row["account_id"],
                         permissions=frozenset(row["permissions"]), domains=doms)

    async def get_account(self, account_id: str) -> dict[str, Any] | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_account, account_id)
        return dict(row) if row else None

    # ------------------------------------------------------------------------ domains

    async def connect_domains(self, account_id: str, names: Sequence[tuple[str, str]],
                              dns_provider: str,
                              credentials: Callable[[str], bytes] | None = None,
                              reserved: Sequence[str] = ()) -> list[Domain]:
        """Record domains (ascii name, unicode name), all or none.

        Ownership of names: a name belongs to one account. Connecting a name at, under
        or above a name of another account (``mail.`` or ``mta-sts.`` of its domain, a
        sub-domain, its parent) is 409 ``domain_name_owned``; the same name is 409
        ``domain_exists``; names at, under or above the account's own domains are
        allowed (its sub-domains, alias domains). A public suffix (``co.uk``) is no
        one's: 400. Names are canonicalised here again, so no caller can store a second
        spelling. *credentials* (domain id -> sealed DNS credentials) are stored in the
        same transaction. A name at, under or above one of *reserved* (the host's own
        names, ``mailforge.reserved``) is 409 ``domain_name_reserved``. See
        docs/names.md.
        """
        canon: list[tuple[str, str]] = []
        errs: list[str] = []
        for i, (raw, _) in enumerate(names):
            try:
                n = validation.domain_name(raw)
            except ValueError as exc:
                errs.append(f"domains[{i}]: {exc}")
                continue
            if n in (c for c, _ in canon):
                errs.append(f"domains[{i}]: {n} is listed twice")
            elif publicsuffix.is_public_suffix(n):
                # Owning it would lock every other account out of every name under it.
                errs.append(f"domains[{i}]: {n} is a public suffix (like co.uk); connect "
                            "a name registered under it")
            canon.append((n, validation.unicode_domain(n)))
        if errs:
            raise ValidationFailed(errs)
        hits = reserved_mod.refusals([n for n, _ in canon], reserved)
        if hits:
            raise Conflict("domain_name_reserved", "A name at, under or above a name of "
                           "this mail host cannot be connected.", hits)
        scope.check_new(n for n, _ in canon)
        wanted = [n for n, _ in canon]
        async with self._tx() as conn:
            acct = await conn.fetchrow(Q.lock_account, account_id)
            if acct is None:
                raise NotFound("account")
            # Names that could be related share their last label: one lock per top-level
            # label, taken in order (no deadlock), held until commit.
            for tld in sorted({n.rsplit(".", 1)[-1] for n in wanted}):
                await conn.execute(Q.lock_domain_namespace, DOMAIN_NAMES_LOCK, tld)
            rows = await conn.fetch(Q.domain_name_relatives, *_relatives_params(wanted))
            taken, owned = [], []
            for i, n in enumerate(wanted):
                if any(r["name"] == n for r in rows):
                    taken.append(f"domains[{i}]: {n} is already connected")
                elif any(r["account_id"] != account_id and reserved_mod.related(r["name"], n)
                         for r in rows):
                    owned.append(f"domains[{i}]: {n} is at, under or above a domain "
                                 "of another account")
            if taken:
                raise Conflict("domain_exists", "A domain is already connected.",
                               taken + owned)
            if owned:
                raise Conflict("domain_name_owned", "A name at, under or above a domain "
                               "of another account cannot be connected.", owned)
            used = await conn.fetchval(Q.count_domains, account_id)
            if used + len(canon) > acct["domain_limit"]:
                raise Forbidden("limit_exceeded", "The account's domain limit would be exceeded.",
                                extra={"resource": "domains", "used": used,
                                       "limit": acct["domain_limit"],
                                       "requested": len(canon)})
            out: list[Domain] = []
            for i, (ascii_name, uname) in enumerate(canon):
                try:
                    row = await conn.fetchrow(Q.insert_domain, ids.new_id("dom"), account_id,
                                              ascii_name, uname, self.mail_host, dns_provider)
                except asyncpg.UniqueViolationError:
                    raise Conflict("domain_exists", "A domain is already connected.",
                                   [f"domains[{i}]: {ascii_name} is already connected"]
                                   ) from None
                assert row is not None
                if credentials is not None:
                    await conn.execute(Q.set_dns_credentials, row["id"],
                                       credentials(row["id"]))
                out.append(from_record(Domain, row))
            return out

    async def get_domain(self, account_id: str, domain_id: str) -> Domain:
        if not ids.has_prefix(domain_id, "dom"):
            raise NotFound("domain")  # no such id can exist (and NUL never reaches SQL)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_domain, account_id, domain_id)
        if row is None:
            raise NotFound("domain")
        scope.check(row["name"])
        return from_record(Domain, row)

    async def find_domain(self, account_id: str, name: object, field: str = "domain") -> Domain:
        """The account's domain of that name, in any spelling (case, trailing dot,
        Unicode or A-labels, Unicode full stops); 400 naming *field* if it is no name."""
        canon = canonical_domain(name, field)
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_domain_by_name, account_id, canon)
        if row is None:
            raise NotFound("domain")
        scope.check(row["name"])
        return from_record(Domain, row)

    async def list_domains(self, account_id: str, limit: int,
                           offset: int) -> tuple[list[Domain], int]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.list_domains, account_id, limit, offset, scope.names())
            total = rows[0]["total_count"] if rows else await conn.fetchval(
                Q.count_all_domains, account_id, scope.names())
        return [from_record(Domain, r) for r in rows], int(total)

    async def setup_domain(self, account_id: str, domain_id: str) -> Job:
        async with self._tx() as conn:
            row = await conn.fetchrow(Q.request_domain_setup, account_id, domain_id)
            if row is None:
                raise NotFound("domain")
            scope.check(row["name"])  # raising here rolls the update back
            job = await self._insert_job(conn, account_id, "domain_setup", domain_id,
                                         [("domain", domain_id, row["generation"])])
            await conn.execute(Q.notify_work, row["mail_host"])
        return job

    # --------------------------------------------------------------------------- jobs

    async def _insert_job(self, conn: Conn, account_id: str, job_type: str,
                          resource_id: str | None, items: Sequence[tuple[str, str, int]],
                          result: dict[str, Any] | None = None,
                          sealed_secrets: bytes | None = None,
                          secrets_expire_at: datetime | None = None) -> Job:
        return await self.jobs.insert(conn, account_id, job_type, resource_id, items, result,
                                      sealed_secrets, secrets_expire_at)

    async def get_job(self, account_id: str, job_id: str) -> tuple[Job, list[dict[str, Any]],
                                                                   bytes | None]:
        """The job, its failed items, and its sealed one-time secrets if not yet expired."""
        if not ids.has_prefix(job_id, "job"):
            raise NotFound("job")
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_job, account_id, job_id)
            if row is None:
                raise NotFound("job")
            restricted = scope.names()
            if restricted is not None and not await conn.fetchval(Q.job_in_domains, job_id,
                                                                  restricted):
                raise NotFound("job")
            failures = [dict(r) for r in await conn.fetch(Q.failed_job_items, job_id)]
        sealed = row["sealed_secrets"]
        if row["secrets_expire_at"] is not None and row["secrets_expire_at"] < \
                datetime.now().astimezone():
            sealed = None
        return from_record(Job, row), failures, sealed

    async def list_jobs(self, account_id: str, limit: int, offset: int) -> list[Job]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.list_jobs, account_id, limit, offset, scope.names())
        return [from_record(Job, r) for r in rows]

    # -------------------------------------------------------------------- idempotency

    async def get_idempotent(self, account_id: str, key: str) -> IdempotencyClaim | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.get_idempotent, account_id, key)
        if row is None:
            return None
        return IdempotencyClaim(
            request_hash=bytes(row["request_hash"]), status=row["status"],
            sealed_body=bytes(row["sealed_body"]) if row["sealed_body"] is not None else None,
            claimant=row["claimant"], lease_expired=row["lease_expired"],
            job_id=row["job_id"])

    async def claim_idempotent(self, account_id: str, key: str, request_hash: bytes,
                               claimant: str, lease_seconds: float) -> bool:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(Q.claim_idempotent, account_id, key, request_hash,
                                       claimant, lease_seconds) is not None

    async def take_over_idempotent(self, account_id: str, key: str, dead: str | None,
                                   claimant: str, lease_seconds: float
                                   ) -> tuple[bool, str | None]:
        """Take over the claim *dead* held: (taken over, job the dead request created)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.take_over_idempotent, account_id, key, dead,
                                      claimant, lease_seconds)
        return (row is not None, row["job_id"] if row is not None else None)

    async def renew_idempotent(self, account_id: str, key: str, claimant: str,
                               lease_seconds: float) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.renew_idempotent, account_id, key, claimant, lease_seconds)

    async def put_idempotent(self, account_id: str, key: str, claimant: str, status: int,
                             sealed_body: bytes) -> bool:
        async with self.pool.acquire() as conn:
            return await conn.fetchval(Q.put_idempotent, account_id, key, claimant, status,
                                       sealed_body) is not None

    async def release_idempotent(self, account_id: str, key: str, claimant: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.release_idempotent, account_id, key, claimant)

    @contextmanager
    def idempotency_scope(self, account_id: str, key: str, claimant: str) -> Iterator[None]:
        """Within this block, the first job created for *account_id* is recorded on the
        idempotency key in the job's own transaction (see ``_insert_job``)."""
        token = IDEMPOTENCY.set((account_id, key, claimant))
        try:
            yield
        finally:
            IDEMPOTENCY.reset(token)
