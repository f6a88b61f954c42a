"""Connected mailboxes (issue 12): connect one or many existing SMTP/IMAP mailboxes,
read and change a connection. The test itself is the worker's
(``connected/worker.py``), never the request's: a connect answers 202 with a
``connect_email_users`` job at once.

The rules, once: the ``Idempotency-Key`` first; then every item is checked before
anything is written (each problem named ``mailboxes[3].smtp.host: ...``): an IP-literal
or ``localhost`` host the outbound guard refuses, the token URL, passwords present for
``password`` and absent for ``xoauth2``; an address twice in one body, or already an
email user of the account, is a 409; the account's mailbox limit is the store's
(connected mailboxes count). Secrets are sealed to their mailbox here
(``connected.credentials.seal``) and never appear in an answer, an error or a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .. import ids, netguard
from ..connected.credentials import seal
from ..errors import Conflict, ValidationFailed
from ..models import Job, Principal
from ..schema.connected import (
    ConnectionChanges,
    ConnectMailbox,
    ImapChanges,
    OAuthSettings,
    SmtpChanges,
)
from ..store.connected import EndpointRow, NewConnection
from .context import ServiceContext
from .idempotency import Answer, idempotent, recover_job

BLOCKED = ("the destination is not allowed (loopback, private, link-local or reserved "
           "address)")


def _rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def guard_of(ctx: ServiceContext) -> netguard.Guard:
    return netguard.Guard.from_config(ctx.cfg.outbound.allow_networks)


def _host_problem(guard: netguard.Guard, host: str, field: str) -> list[str]:
    try:
        guard.check_host(host)
    except netguard.Blocked:
        return [f"{field}: {BLOCKED}"]
    return []


def _oauth_problems(guard: netguard.Guard, oauth: OAuthSettings, field: str) -> list[str]:
    return netguard.validate_url(oauth.token_url, guard, f"{field}.token_url")


def _check_item(guard: netguard.Guard, m: ConnectMailbox, at: str) -> list[str]:
    """Problems of one connect item that need the configuration or several fields."""
    errs = _host_problem(guard, m.smtp.host, f"{at}smtp.host")
    if m.imap is not None:
        errs += _host_problem(guard, m.imap.host, f"{at}imap.host")
    if m.auth == "password":
        if m.smtp.password is None:
            errs.append(f"{at}smtp.password: is required (auth password)")
        if m.oauth is not None:
            errs.append(f"{at}oauth: only with auth xoauth2")
    else:
        if m.oauth is None:
            errs.append(f"{at}oauth: is required (auth xoauth2)")
        else:
            errs += _oauth_problems(guard, m.oauth, f"{at}oauth")
        if m.smtp.password is not None:
            errs.append(f"{at}smtp.password: not with auth xoauth2")
        if m.imap is not None and m.imap.password is not None:
            errs.append(f"{at}imap.password: not with auth xoauth2")
    return errs


def _new_connection(ctx: ServiceContext, m: ConnectMailbox) -> NewConnection:
    """The row to insert: a new id, the secrets sealed to it."""
    mid = ids.new_id("usr")
    box = ctx.box
    smtp = EndpointRow(m.smtp.host, m.smtp.port, m.smtp.security, m.smtp.username)
    if m.imap is None:
        # SendKit's rule: IMAP on the SMTP host's implicit-TLS port, with SMTP's login.
        imap = EndpointRow(m.smtp.host, 993, "tls", m.smtp.username)
        imap_pw = None
    else:
        imap = EndpointRow(m.imap.host, m.imap.port, m.imap.security,
                           m.imap.username or m.smtp.username)
        imap_pw = m.imap.password
    o = m.oauth
    return NewConnection(
        id=mid, address=m.email, name=m.name or "", smtp=smtp, imap=imap, auth=m.auth,
        sealed_smtp_password=seal(box, "smtp", mid, m.smtp.password),
        sealed_imap_password=seal(box, "imap", mid, imap_pw),
        oauth_token_url=o.token_url if o else None,
        oauth_client_id=o.client_id if o else None,
        sealed_oauth_client_secret=seal(box, "client", mid, o.client_secret) if o else None,
        sealed_refresh_token=seal(box, "refresh", mid, o.refresh_token) if o else None,
        daily_send_limit=m.daily_limit, signature=m.signature or "",
        save_sent=True if m.save_sent is None else m.save_sent,
        tags=tuple(dict.fromkeys(m.tags or ())))


def _job_ref(job: Job) -> dict[str, Any]:
    return {"id": job.id, "type": job.type, "status": job.status, "total": job.total}


def _user_ref(mailbox_id: str, address: str) -> dict[str, Any]:
    return {"id": mailbox_id, "email": address, "type": "connected", "status": "connecting"}


def _validated(ctx: ServiceContext, items: Sequence[ConnectMailbox], bulk: bool) -> None:
    guard = guard_of(ctx)
    errs: list[str] = []
    for n, m in enumerate(items):
        errs += _check_item(guard, m, f"mailboxes[{n}]." if bulk else "")
    if errs:
        raise ValidationFailed(errs)
    first: dict[str, int] = {}
    dup: list[str] = []
    for n, m in enumerate(items):
        if m.email in first:
            dup.append(f"mailboxes[{n}].email: {m.email} is also mailboxes[{first[m.email]}]")
        else:
            first[m.email] = n
    if dup:
        raise Conflict("address_taken", "An address is given twice.", dup)


async def connect(ctx: ServiceContext, principal: Principal, item: ConnectMailbox,
                  key: str | None = None, digest: bytes = b"") -> Answer:
    """One mailbox: 202 ``{email_user: {id, email, type, status}, job: {...}}``."""
    _validated(ctx, [item], bulk=False)

    async def produce() -> Answer:
        row = _new_connection(ctx, item)
        job, created = await ctx.store.connections.create(principal.account_id, [row],
                                                          bulk=False)
        return Answer(202, {"email_user": _user_ref(created[0].id, created[0].address),
                            "job": _job_ref(job)})

    async def recover(job: Job) -> Answer:
        if job.resource_id is None:
            return await recover_job(job)
        return Answer(202, {"email_user": _user_ref(job.resource_id, item.email),
                            "job": _job_ref(job), "recovered": True})

    return await idempotent(ctx, principal, key, digest, produce, recover)


async def connect_bulk(ctx: ServiceContext, principal: Principal,
                       items: Sequence[ConnectMailbox], key: str | None = None,
                       digest: bytes = b"") -> Answer:
    """1 to ``limits.bulk_max_items`` mailboxes in one job, all or none: 202
    ``{job, email_users: [...]}`` in request order."""
    _validated(ctx, items, bulk=True)

    async def produce() -> Answer:
        rows = [_new_connection(ctx, m) for m in items]
        job, created = await ctx.store.connections.create(principal.account_id, rows,
                                                          bulk=True)
        return Answer(202, {"job": _job_ref(job),
                            "email_users": [_user_ref(c.id, c.address) for c in created]})

    async def recover(job: Job) -> Answer:
        listing = await ctx.store.connections.job_items(job.id)
        return Answer(202, {"job": _job_ref(job),
                            "email_users": [_user_ref(i.mailbox_id, i.address or "")
                                            for i in listing],
                            "recovered": True})

    return await idempotent(ctx, principal, key, digest, produce, recover)


# ------------------------------------------------------------------------- a connection


def connection_view(row: Any) -> dict[str, Any]:
    """The connection as the API shows it: settings and test state, never a secret."""
    status = "suspended" if row["suspended"] and row["status"] == "active" else row["status"]
    xoauth2 = row["auth"] == "xoauth2"
    return {
        "id": row["id"], "email": row["address"], "type": "connected", "status": status,
        "auth": row["auth"],
        "smtp": {"host": row["smtp_host"], "port": row["smtp_port"],
                 "security": row["smtp_security"], "username": row["smtp_username"]},
        "imap": {"host": row["imap_host"], "port": row["imap_port"],
                 "security": row["imap_security"], "username": row["imap_username"]},
        "imap_password": "none" if xoauth2 else ("own" if row["imap_own_password"]
                                                 else "smtp"),
        "oauth": {"token_url": row["oauth_token_url"], "client_id": row["oauth_client_id"]}
        if xoauth2 else None,
        "save_sent": row["save_sent"], "tags": list(row["tags"] or ()),
        "sent_folder": row["sent_folder"],
        "last_test": {"status": row["test_status"], "reason": row["reason"],
                      "detail": row["detail"], "tested_at": _rfc3339(row["tested_at"])},
        "dns": row["dns_check"],
        "dns_checked_at": _rfc3339(row["dns_checked_at"]),
        "next_test_at": _rfc3339(row["next_test_at"]),
    }


async def get_connection(ctx: ServiceContext, principal: Principal,
                         mailbox_id: str) -> dict[str, Any]:
    return connection_view(await ctx.store.connections.get(principal.account_id, mailbox_id))


def _merge_endpoint(cur_host: str, cur_port: int, cur_sec: str, cur_user: str,
                    ch: SmtpChanges | ImapChanges | None) -> EndpointRow:
    if ch is None:
        return EndpointRow(cur_host, cur_port, cur_sec, cur_user)
    return EndpointRow(ch.host or cur_host, ch.port or cur_port, ch.security or cur_sec,
                       ch.username or cur_user)


async def update_connection(ctx: ServiceContext, principal: Principal, mailbox_id: str,
                            ch: ConnectionChanges, key: str | None = None,
                            digest: bytes = b"") -> Answer:
    """New settings or credentials, merged over the current ones and tested again:
    202 ``{connection, job}``."""
    guard = guard_of(ctx)
    errs: list[str] = []
    if ch.smtp is not None and ch.smtp.host is not None:
        errs += _host_problem(guard, ch.smtp.host, "smtp.host")
    if ch.imap is not None and ch.imap.host is not None:
        errs += _host_problem(guard, ch.imap.host, "imap.host")
    if ch.oauth is not None:
        errs += _oauth_problems(guard, ch.oauth, "oauth")
    if errs:
        raise ValidationFailed(errs)

    async def produce() -> Answer:
        # Read (scoped: another account's is a 404 before anything else), merge, write.
        cur = await ctx.store.connections.get(principal.account_id, mailbox_id)
        sealed = await ctx.store.connections.secrets(mailbox_id)
        assert sealed is not None
        auth = ch.auth or cur["auth"]
        problems: list[str] = []
        smtp_pw_new = ch.smtp.password if ch.smtp is not None else None
        imap_fields = ch.imap.model_fields_set if ch.imap is not None else set()
        if auth == "password":
            if ch.oauth is not None:
                problems.append("oauth: only with auth xoauth2")
            if cur["auth"] != "password" and smtp_pw_new is None:
                problems.append("smtp.password: is required to switch to auth password")
        else:
            if cur["auth"] != "xoauth2" and ch.oauth is None:
                problems.append("oauth: is required to switch to auth xoauth2")
            if smtp_pw_new is not None or (ch.imap is not None and ch.imap.password):
                problems.append("smtp.password: not with auth xoauth2")
        if problems:
            raise ValidationFailed(problems)
        box = ctx.box
        smtp = _merge_endpoint(cur["smtp_host"], cur["smtp_port"], cur["smtp_security"],
                               cur["smtp_username"], ch.smtp)
        imap = _merge_endpoint(cur["imap_host"], cur["imap_port"], cur["imap_security"],
                               cur["imap_username"], ch.imap)
        if auth == "password":
            sealed_smtp = seal(box, "smtp", mailbox_id, smtp_pw_new) \
                if smtp_pw_new is not None else sealed["sealed_smtp_password"]
            if "password" in imap_fields:
                pw = ch.imap.password if ch.imap is not None else None
                sealed_imap = seal(box, "imap", mailbox_id, pw)
            else:
                sealed_imap = sealed["sealed_imap_password"]
            o_url = o_id = None
            o_secret = o_refresh = None
        else:
            sealed_smtp = sealed_imap = None
            if ch.oauth is not None:
                o_url, o_id = ch.oauth.token_url, ch.oauth.client_id
                o_secret = seal(box, "client", mailbox_id, ch.oauth.client_secret)
                o_refresh = seal(box, "refresh", mailbox_id, ch.oauth.refresh_token)
            else:
                o_url, o_id = sealed["oauth_token_url"], sealed["oauth_client_id"]
                o_secret = sealed["sealed_oauth_client_secret"]
                o_refresh = sealed["sealed_refresh_token"]
        new = NewConnection(
            id=mailbox_id, address=cur["address"], name="", smtp=smtp, imap=imap,
            auth=auth, sealed_smtp_password=_b(sealed_smtp),
            sealed_imap_password=_b(sealed_imap), oauth_token_url=o_url,
            oauth_client_id=o_id, sealed_oauth_client_secret=_b(o_secret),
            sealed_refresh_token=_b(o_refresh),
            save_sent=cur["save_sent"] if ch.save_sent is None else ch.save_sent,
            tags=tuple(cur["tags"] or ()) if ch.tags is None else tuple(
                dict.fromkeys(ch.tags)))
        job = await ctx.store.connections.update(
            principal.account_id, mailbox_id, new,
            token_changed=ch.oauth is not None or auth != cur["auth"])
        after = await ctx.store.connections.get(principal.account_id, mailbox_id)
        return Answer(202, {"connection": connection_view(after), "job": _job_ref(job)})

    return await idempotent(ctx, principal, key, digest, produce)


def _b(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


async def job_items(ctx: ServiceContext, job: Job) -> list[dict[str, Any]]:
    """Every item of a ``connect_email_users`` job (read through the scoped job):
    ``{index, email_user_id, email, status: connecting|connected|failed, reason,
    detail}``."""
    out = []
    for i in await ctx.store.connections.job_items(job.id):
        status = {"pending": "connecting", "done": "connected"}.get(i.state, "failed")
        if i.address is None and status == "connected":
            status = "disconnected"
        out.append({"index": i.index, "email_user_id": i.mailbox_id, "email": i.address,
                    "status": status, "reason": i.error if status == "failed" else None,
                    "detail": i.detail if status == "failed" else None})
    return out
