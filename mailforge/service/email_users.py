"""Mailboxes ("email users"): create (one, or up to ``limits.bulk_max_items`` in one
job), read, list, update, suspend and resume, delete into a restorable tombstone,
restore, and available usernames.

The domain rules live here once: the domain a request names is resolved once
(``guards.resolve_domain``), must be set up (``guards.require_ready``) and not blocked
by its sending reputation (``guards.require_not_blocked``); the account's mailbox limit
and address uniqueness are checked by the store in the creating transaction; the
``Idempotency-Key`` is checked before all of them, so a retry gets the stored answer
even if the domain changed since. Input arrives parsed (field by field, by the caller);
the answers of writes are the JSON objects the API returns and the key replays.

Passwords are not hashed here: each new password is sealed to its mailbox
(``pending_passwords.seal``) and hashed by the reconcile pass before the mail server
sees the mailbox, so a bulk of 500 answers in milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .. import ids, names, password, pending_passwords
from ..errors import Conflict, NotFound, ValidationFailed
from ..models import Domain, Job, Mailbox, Principal
from ..store.mailboxes import MailboxChanges, MailboxPage, NewMailbox
from . import guards
from .context import ServiceContext
from .idempotency import Answer, idempotent, recover_job


@dataclass(frozen=True)
class NewUser:
    """One mailbox to create, already validated: canonical local part, display name,
    a password (None: generate one, shown once) and a quota (None: the default)."""

    local_part: str
    name: str = ""
    password: str | None = None
    quota_mb: int | None = None


@dataclass(frozen=True)
class UserChanges:
    """A PATCH, validated: None (or False) means unchanged."""

    name: str | None = None
    password: str | None = None
    # A new password is generated and shown once (never with ``password``).
    reset_password: bool = False
    quota_mb: int | None = None
    daily_send_limit: int | None = None
    clear_send_limit: bool = False
    signature: str | None = None
    suspended: bool | None = None


@dataclass(frozen=True)
class NamesRequest:
    """Available usernames: *count* (None: one per given person, or 10), in *style*
    (ours or a hosted product's name for one), for the given people first; addresses
    spread over *domains* (ids or names) when given, at most *per_domain_max* each
    (None: ``mailboxes.names_per_domain_max``)."""

    count: int | None = None
    style: str = "mixed"
    people: Sequence[tuple[str, str]] = ()
    domains: Sequence[object] | None = None
    per_domain_max: int | None = None


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def mailbox_view(ctx: ServiceContext, m: Mailbox, domain: str,
                 remote: dict[str, Any] | None = None) -> dict[str, Any]:
    """The mailbox as the API shows it (no password hash), with the host's IMAP and
    SMTP submission endpoints (a connected one's: *remote*, its provider's)."""
    remote = remote or {"imap": None, "smtp": None}
    host = ctx.cfg.host
    connected = m.kind == "connected"
    return {
        "id": m.id,
        "type": m.kind,
        "email": m.address,
        "username": m.local_part,
        "name": m.name,
        "domain": domain,
        "domain_id": m.domain_id,
        "status": "suspended" if connected and m.suspended and m.status == "active"
        else m.status,
        "quota_mb": m.quota_mb,
        "daily_send_limit": m.daily_send_limit,
        "signature": m.signature,
        "last_error": m.last_error,
        "deleted_at": _rfc3339(m.deleted_at),
        "restorable_until": _rfc3339(m.purge_after),
        # A connected mailbox's are its provider's (GET .../connection has the rest).
        "imap": remote["imap"] if connected else {"host": host.imap.host,
                                                   "port": host.imap.port},
        "smtp": remote["smtp"] if connected else {"host": host.submission.host,
                                                   "port": host.submission.port},
        "created_at": _rfc3339(m.created_at),
        "updated_at": _rfc3339(m.updated_at),
    }


def _new_mailbox(ctx: ServiceContext, user: NewUser, clear: str,
                 generated: bool) -> NewMailbox:
    """The row to insert: a new id, and the password sealed to it for the worker."""
    mailbox_id = ids.new_id("usr")
    scheme = pending_passwords.scheme_for(ctx.cfg.passwords, generated)
    return NewMailbox(mailbox_id, user.local_part, user.name,
                      pending_passwords.seal(ctx.box, mailbox_id, clear, scheme),
                      user.quota_mb or ctx.cfg.backend.postfix_dovecot.default_quota_mb)


def _retention_seconds(ctx: ServiceContext) -> float:
    return ctx.cfg.mailboxes.retention_days * 86400.0


# ---------------------------------------------------------------------------- create


async def create(ctx: ServiceContext, principal: Principal, domain_ref: object,
                 user: NewUser, key: str | None = None, digest: bytes = b"") -> Answer:
    """One mailbox: 202 ``{job_id, status, id, email, username}`` plus ``password``
    when generated. *key*/*digest*: the ``Idempotency-Key`` and the request it is bound
    to (``idempotency.fingerprint``)."""

    async def produce() -> Answer:
        domain = await guards.identity_domain(ctx, principal, domain_ref)
        generated = user.password is None
        pw = password.generate(ctx.cfg.passwords.generated_length) if user.password is None \
            else user.password
        item = _new_mailbox(ctx, user, pw, generated)
        job, created = await ctx.store.mailboxes.create(principal.account_id, domain,
                                                        [item], "email_user_create")
        c = created[0]
        out: dict[str, Any] = {"job_id": job.id, "status": "pending", "id": c.id,
                               "email": c.address, "username": c.local_part}
        if generated:
            out["password"] = pw  # shown once, here
        return Answer(202, out)

    async def recover(job: Job) -> Answer:
        """The answer of a create whose first attempt died after committing: the
        mailbox and its job. A generated password was never shown and cannot be:
        reset it."""
        if job.resource_id is None:
            return await recover_job(job)
        try:
            m, _ = await ctx.store.mailboxes.get(principal.account_id, job.resource_id)
        except NotFound:
            return await recover_job(job)
        return Answer(202, {"job_id": job.id, "status": "pending", "id": m.id,
                            "email": m.address, "username": m.local_part,
                            "recovered": True})

    return await idempotent(ctx, principal, key, digest, produce, recover)


async def create_bulk(ctx: ServiceContext, principal: Principal, domain_ref: object,
                      users: Sequence[NewUser], key: str | None = None,
                      digest: bytes = b"") -> Answer:
    """Up to ``limits.bulk_max_items`` mailboxes in one job, all or none: 202
    ``{job_id, users_count, status, users: [{id, email, username}]}``. Generated
    passwords are readable from the job (``GET /v1/jobs/{id}``) until
    ``mailboxes.secrets_ttl_seconds``. The caller has refused duplicate usernames."""
    most = ctx.cfg.limits.bulk_max_items
    if not 1 <= len(users) <= most:  # the API refuses this first, naming the field
        raise ValidationFailed([f"users: must be a list of 1 to {most} users"])

    async def produce() -> Answer:
        domain = await guards.identity_domain(ctx, principal, domain_ref)
        addresses = [f"{u.local_part}@{domain.name}" for u in users]
        plain = [u.password or password.generate(ctx.cfg.passwords.generated_length)
                 for u in users]
        items = [_new_mailbox(ctx, u, p, u.password is None)
                 for u, p in zip(users, plain, strict=True)]
        # The users and their generated passwords, readable from the job until expiry.
        listing = [{"id": i.id, "email": a, "username": u.local_part,
                    **({"password": p} if u.password is None else {})}
                   for i, a, u, p in zip(items, addresses, users, plain, strict=True)]

        def seal_for(job_id: str) -> bytes:
            return ctx.box.seal(json.dumps(listing).encode(), f"job-secrets:{job_id}")

        job, created = await ctx.store.mailboxes.create(
            principal.account_id, domain, items, "email_user_create",
            seal=seal_for, secrets_ttl=ctx.cfg.mailboxes.secrets_ttl_seconds, bulk=True)
        return Answer(202, {"job_id": job.id, "users_count": len(created),
                            "status": "pending",
                            "users": [{"id": c.id, "email": c.address,
                                       "username": c.local_part} for c in created]})

    async def recover(job: Job) -> Answer:
        """The answer of a bulk create whose first attempt died after committing:
        rebuilt from the users sealed on the job (without their passwords, as the
        first answer)."""
        sealed = (await ctx.store.jobs.get(principal.account_id, job.id)).sealed_secrets
        if sealed is None:  # expired
            return Answer(202, {**(await recover_job(job)).body, "users_count": job.total})
        listing = json.loads(ctx.box.open(sealed, f"job-secrets:{job.id}"))
        return Answer(202, {"job_id": job.id, "users_count": len(listing),
                            "status": "pending",
                            "users": [{"id": u["id"], "email": u["email"],
                                       "username": u["username"]} for u in listing],
                            "recovered": True})

    return await idempotent(ctx, principal, key, digest, produce, recover)


# ----------------------------------------------------------------------------- read


async def get(ctx: ServiceContext, principal: Principal, mailbox_id: str) -> tuple[Mailbox, str]:
    """The mailbox and its domain's name (404 outside the account or restriction)."""
    return await ctx.store.mailboxes.get(principal.account_id, mailbox_id)


async def list_page(ctx: ServiceContext, principal: Principal, domain: str | None,
                    status: str | None, search: str | None, sort: str, limit: int,
                    offset: int, cursor: str | None = None,
                    kind: str | None = None) -> MailboxPage:
    """A page of the caller's mailboxes (rows, for rendering straight to JSON), the
    total and the next cursor. *domain*: a domain id or a name in any spelling
    (``guards.list_filter_domain``)."""
    name = await guards.list_filter_domain(ctx, principal, domain)
    return await ctx.store.mailboxes.list_rows(principal.account_id, name, status, search,
                                               sort, limit, offset, cursor, kind)


# --------------------------------------------------------------------------- update


async def view(ctx: ServiceContext, m: Mailbox, domain: str) -> dict[str, Any]:
    """``mailbox_view``, with a connected mailbox's own endpoints read from its
    connection."""
    if m.kind != "connected":
        return mailbox_view(ctx, m, domain)
    c = await ctx.store.connections.get(m.account_id, m.id)
    return mailbox_view(ctx, m, domain, {
        "imap": {"host": c["imap_host"], "port": c["imap_port"]},
        "smtp": {"host": c["smtp_host"], "port": c["smtp_port"]}})


async def _mailbox_answer(ctx: ServiceContext, m: Mailbox, domain: str,
                          job: Job | None) -> dict[str, Any]:
    out = await view(ctx, m, domain)
    out["job_id"] = job.id if job else None
    return out


async def update(ctx: ServiceContext, principal: Principal, mailbox_id: str,
                 ch: UserChanges, key: str | None = None, digest: bytes = b"") -> Answer:
    """200 with the mailbox and ``job_id`` (None when the mail server need not see the
    change), plus ``password`` when one was generated (``reset_password``)."""
    if ch.password is not None and ch.reset_password:
        raise ValidationFailed(["password: give either password or reset_password, not both"])

    async def produce() -> Answer:
        new_pw = ch.password
        if ch.reset_password:
            new_pw = password.generate(ctx.cfg.passwords.generated_length)
        sealed = None if new_pw is None else pending_passwords.seal(
            ctx.box, mailbox_id, new_pw,
            pending_passwords.scheme_for(ctx.cfg.passwords, ch.reset_password))
        m, d, job = await ctx.store.mailboxes.update(
            principal.account_id, mailbox_id,
            MailboxChanges(name=ch.name, sealed_password=sealed, quota_mb=ch.quota_mb,
                           daily_send_limit=ch.daily_send_limit,
                           clear_send_limit=ch.clear_send_limit, signature=ch.signature,
                           suspended=ch.suspended))
        out = await _mailbox_answer(ctx, m, d, job)
        if ch.reset_password:
            out["password"] = new_pw  # shown once, here
        return Answer(200, out)

    return await idempotent(ctx, principal, key, digest, produce)


async def set_suspended(ctx: ServiceContext, principal: Principal, mailbox_id: str,
                        suspended: bool) -> Answer:
    """Suspended: login (IMAP, SMTP AUTH) and sending refused, mail still received.
    202 with the job when the mail server must see it, 200 when nothing changed."""
    m, d, job = await ctx.store.mailboxes.update(principal.account_id, mailbox_id,
                                                 MailboxChanges(suspended=suspended))
    return Answer(202 if job else 200, await _mailbox_answer(ctx, m, d, job))


# ------------------------------------------------------------------ delete, restore


async def delete(ctx: ServiceContext, principal: Principal, mailbox_id: str) -> Answer:
    """Into a tombstone, restorable with its mail for ``mailboxes.retention_days``."""
    job = await ctx.store.mailboxes.delete(principal.account_id, [mailbox_id],
                                           _retention_seconds(ctx), field="id")
    return Answer(202, {"job_id": job.id, "status": "pending", "id": mailbox_id})


async def delete_bulk(ctx: ServiceContext, principal: Principal, mailbox_ids: Sequence[str],
                      key: str | None = None, digest: bytes = b"") -> Answer:
    """All or none; a missing one is reported as ``ids[n]``."""

    async def produce() -> Answer:
        job = await ctx.store.mailboxes.delete(principal.account_id, mailbox_ids,
                                               _retention_seconds(ctx))
        return Answer(202, {"job_id": job.id, "status": "pending",
                            "users_count": len(mailbox_ids)})

    return await idempotent(ctx, principal, key, digest, produce)


async def restore(ctx: ServiceContext, principal: Principal, mailbox_id: str) -> Answer:
    """Undo a delete within the retention period: the mailbox comes back with its mail
    (a new sending identity again, so not on a domain its reputation blocked)."""
    box, _ = await ctx.store.mailboxes.get(principal.account_id, mailbox_id)
    if box.domain_id is None:
        raise Conflict("email_user_connected",
                       "This email user is a connected mailbox: it is never deleted into a "
                       "tombstone, so there is nothing to restore (connect it again).")
    await guards.require_not_blocked(ctx, await ctx.store.domains.get(principal.account_id,
                                                                     box.domain_id))
    job, address = await ctx.store.mailboxes.restore(principal.account_id, mailbox_id)
    return Answer(202, {"job_id": job.id, "status": "pending", "id": mailbox_id,
                        "email": address})


# ---------------------------------------------------------------------------- names


async def generate_names(ctx: ServiceContext, principal: Principal,
                         req: NamesRequest) -> list[str]:
    """Available usernames (or addresses, when domains are given) in common patterns;
    409 ``names_exhausted`` when fewer than asked for could be found."""
    try:
        style = names.style(req.style)
    except ValueError as exc:
        raise ValidationFailed([f"style: {exc}"]) from None
    count = req.count if req.count is not None else (len(req.people) or 10)
    cap = req.per_domain_max or ctx.cfg.mailboxes.names_per_domain_max
    domains: list[Domain] = [await guards.resolve_domain(ctx, principal, ref, f"domains[{n}]")
                             for n, ref in enumerate(req.domains or ())]
    if len({d.id for d in domains}) != len(domains):
        raise ValidationFailed(["domains: each domain may be given once"])
    if domains and count > cap * len(domains):
        raise ValidationFailed([f"count: at most {cap} per domain, {cap * len(domains)} "
                                f"for {len(domains)} domains"])
    taken = await ctx.store.mailboxes.taken_in_domains(principal.account_id,
                                                       [d.id for d in domains])
    out = names.generate(count, style, list(req.people), [d.name for d in domains], cap,
                         taken)
    if len(out) < count:
        raise Conflict("names_exhausted", f"Only {len(out)} available names were found.")
    return out
