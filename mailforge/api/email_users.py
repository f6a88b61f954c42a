"""Mailbox ("email user") endpoints: create (single and bulk), list, get, update,
suspend/resume, delete (single and bulk, into a restorable tombstone), restore, and
username generation. Each handler takes the validated models, calls one function of
``service/email_users.py`` and renders."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..models import Mailbox
from ..schema.email_users import (
    EmailUser,
    EmailUserChanged,
    EmailUserChanges,
    EmailUserCreated,
    EmailUserDeleted,
    EmailUserFilters,
    EmailUserIds,
    EmailUserPage,
    EmailUserRestored,
    EmailUsersCreated,
    EmailUsersDeleted,
    GeneratedNames,
    GenerateNames,
    NewEmailUser,
    NewEmailUsers,
)
from ..service import email_users as service
from ..service.context import ServiceContext
from ..service.email_users import NewUser, UserChanges
from .context import CTX
from .idempotency import key_of, render
from .operation import body_of, operation, principal_of, query_of
from .render import json_response

routes = web.RouteTableDef()

_USER_ID = {"id": "The email user's id (usr_...)."}


def mailbox_json(ctx: ServiceContext, m: Mailbox, domain: str) -> dict[str, Any]:
    return service.mailbox_view(ctx, m, domain)


def _new_user(item: Any) -> NewUser:
    return NewUser(item.username, item.name or "", item.password, item.quota_mb)


@operation(routes, "POST", "/v1/email-users", id="createEmailUser", tag="email-users",
           summary="Create one email user",
           description="A real IMAP/SMTP mailbox on a set-up domain of the account (not "
                       "blocked by its sending reputation), within the account's mailbox "
                       "limit. Answers at once with the job that brings it to the mail "
                       "server; without a password, one is generated and shown only in "
                       "this answer.",
           permission="write", body=NewEmailUser, answers={202: EmailUserCreated},
           errors=(409,), idempotent=True)
async def create(request: web.Request) -> web.StreamResponse:
    body = body_of(request, NewEmailUser)
    return render(await service.create(request.app[CTX], principal_of(request), body.domain,
                                       _new_user(body), *key_of(request)))


@operation(routes, "GET", "/v1/email-users", id="listEmailUsers", tag="email-users",
           summary="List email users", description="The account's mailboxes (within the "
           "token's domain restriction), filtered by domain (id or name), state and text, "
           "sorted, paged. Deleted mailboxes are listed only with status=deleted.",
           permission="read", query=EmailUserFilters, answers={200: EmailUserPage})
async def list_users(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q = query_of(request, EmailUserFilters)
    page = await service.list_page(ctx, principal_of(request), q.domain or None, q.status,
                                   q.search or None, q.sort, q.limit, q.offset, q.cursor,
                                   q.type)
    return _render({"users": _user_items(ctx, page.rows), "total": page.total,
                    "limit": q.limit, "offset": q.offset, "next_cursor": page.next_cursor})


@operation(routes, "GET", "/v1/email-users/{id}", id="getEmailUser", tag="email-users",
           summary="Get an email user", description="One mailbox of the account, with its "
           "IMAP and SMTP endpoints.", permission="read", answers={200: EmailUser},
           path_params=_USER_ID)
async def get_user(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    m, d = await service.get(ctx, principal_of(request), request.match_info["id"])
    return json_response(await service.view(ctx, m, d))


# orjson writes an aware UTC datetime as 2026-01-02T03:04:05Z with these options: what
# rfc3339() makes, without a Python call per date.
_JSON_OPTS = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


def _render(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body, option=_JSON_OPTS),
                        content_type="application/json")


def _user_items(ctx: ServiceContext, rows: list[Any]) -> list[dict[str, Any]]:
    """``mailbox_json`` of each listed row, built straight from the rows (a model object
    per row cost more than the query; measured in docs/benchmarks.md)."""
    host = ctx.cfg.host
    imap = {"host": host.imap.host, "port": host.imap.port}
    smtp = {"host": host.submission.host, "port": host.submission.port}
    return [{
        "id": r["id"],
        "type": r["kind"],
        "email": r["address"],
        "username": r["local_part"],
        "name": r["name"],
        "domain": r["domain_name"],
        "domain_id": r["domain_id"],
        "status": "suspended" if r["kind"] == "connected" and r["suspended"]
        and r["status"] == "active" else r["status"],
        "quota_mb": r["quota_mb"],
        "daily_send_limit": r["daily_send_limit"],
        "signature": r["signature"],
        "last_error": r["last_error"],
        "deleted_at": r["deleted_at"],
        "restorable_until": r["purge_after"],
        # A connected mailbox's endpoints are its provider's.
        "imap": imap if r["kind"] == "managed"
        else {"host": r["imap_host"], "port": r["imap_port"]},
        "smtp": smtp if r["kind"] == "managed"
        else {"host": r["smtp_host"], "port": r["smtp_port"]},
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    } for r in rows]


# ------------------------------------------------------------------------------ bulk


@operation(routes, "POST", "/v1/email-users/bulk", id="bulkCreateEmailUsers",
           tag="email-users", summary="Create up to limits.bulk_max_items email users in "
           "one job", description="All or none: every item is checked before anything is "
           "accepted (errors name the item, users[7].username), the addresses must be free "
           "and the account's limit must hold for all. Generated passwords are readable "
           "from the job (GET /v1/jobs/{id}) for mailboxes.secrets_ttl_seconds.",
           permission="write", body=NewEmailUsers, answers={202: EmailUsersCreated},
           errors=(409,), idempotent=True)
async def bulk_create(request: web.Request) -> web.StreamResponse:
    body = body_of(request, NewEmailUsers)
    return render(await service.create_bulk(
        request.app[CTX], principal_of(request), body.domain,
        [_new_user(u) for u in body.users], *key_of(request)))


@operation(routes, "DELETE", "/v1/email-users/bulk", id="bulkDeleteEmailUsers",
           tag="email-users", summary="Delete email users (restorable during retention)",
           description="All or none: an id that is not the account's, or already deleted, "
           "refuses the whole request naming it (ids[3]). The mail is kept for "
           "mailboxes.retention_days; restore brings each back.", permission="write",
           body=EmailUserIds, answers={202: EmailUsersDeleted}, errors=(409,),
           idempotent=True)
async def bulk_delete(request: web.Request) -> web.StreamResponse:
    body = body_of(request, EmailUserIds)
    return render(await service.delete_bulk(request.app[CTX], principal_of(request),
                                            body.ids, *key_of(request)))


# ------------------------------------------------------------------------- lifecycle


@operation(routes, "PATCH", "/v1/email-users/{id}", id="updateEmailUser",
           tag="email-users", summary="Update an email user",
           description="Change the name, the password (or reset_password: a new one is "
                       "generated and shown once), the quota, the daily send limit, the "
                       "signature, or the status (active/suspended). Changes the mail "
                       "server must see come with a job; the others take effect at once.",
           permission="write", body=EmailUserChanges, answers={200: EmailUserChanged},
           errors=(409,), idempotent=True, path_params=_USER_ID)
async def update_user(request: web.Request) -> web.StreamResponse:
    body = body_of(request, EmailUserChanges)
    given = body.model_fields_set
    ch = UserChanges(
        # A null name clears it; a null daily_send_limit returns to the server's default.
        name=(body.name or "") if "name" in given else None,
        password=body.password, reset_password=bool(body.reset_password),
        quota_mb=body.quota_mb, daily_send_limit=body.daily_send_limit,
        clear_send_limit="daily_send_limit" in given and body.daily_send_limit is None,
        signature=body.signature,
        suspended=None if body.status is None else body.status == "suspended")
    return render(await service.update(request.app[CTX], principal_of(request),
                                       request.match_info["id"], ch, *key_of(request)))


@operation(routes, "POST", "/v1/email-users/{id}/suspend", id="suspendEmailUser",
           tag="email-users", summary="Suspend an email user",
           description="No login (IMAP, SMTP AUTH) and no sending; mail is still received. "
                       "202 with a job while the mail server takes it, 200 if it already "
                       "was suspended.",
           permission="write", answers={200: EmailUserChanged, 202: EmailUserChanged},
           errors=(409,), path_params=_USER_ID)
async def suspend_user(request: web.Request) -> web.StreamResponse:
    return render(await service.set_suspended(request.app[CTX], principal_of(request),
                                              request.match_info["id"], True))


@operation(routes, "POST", "/v1/email-users/{id}/resume", id="resumeEmailUser",
           tag="email-users", summary="Resume a suspended email user",
           description="Login and sending work again. 202 with a job while the mail server "
                       "takes it, 200 if it was not suspended.",
           permission="write", answers={200: EmailUserChanged, 202: EmailUserChanged},
           errors=(409,), path_params=_USER_ID)
async def resume_user(request: web.Request) -> web.StreamResponse:
    return render(await service.set_suspended(request.app[CTX], principal_of(request),
                                              request.match_info["id"], False))


@operation(routes, "DELETE", "/v1/email-users/{id}", id="deleteEmailUser",
           tag="email-users", summary="Delete an email user (restorable during retention)",
           description="It stops receiving and logging in; its mail is kept for "
                       "mailboxes.retention_days, during which restore brings it back.",
           permission="write", answers={202: EmailUserDeleted}, errors=(409,),
           path_params=_USER_ID)
async def delete_user(request: web.Request) -> web.StreamResponse:
    return render(await service.delete(request.app[CTX], principal_of(request),
                                       request.match_info["id"]))


@operation(routes, "POST", "/v1/email-users/{id}/restore", id="restoreEmailUser",
           tag="email-users", summary="Restore a deleted email user with its mail",
           description="Within the retention period, if its address is still free, its "
                       "domain not blocked by its sending reputation and the account's "
                       "limit allows it.",
           permission="write", answers={202: EmailUserRestored}, errors=(409,),
           path_params=_USER_ID)
async def restore_user(request: web.Request) -> web.StreamResponse:
    return render(await service.restore(request.app[CTX], principal_of(request),
                                        request.match_info["id"]))


# ----------------------------------------------------------------------------- names


@operation(routes, "POST", "/v1/email-users/generate-names", id="generateEmailUserNames",
           tag="email-users", summary="Suggest available usernames",
           description="Realistic usernames in common patterns (for the given people "
                       "first), none already taken; addresses spread over the given "
                       "domains when there are any. Changes nothing, but like every POST "
                       "it needs the write permission. 409 names_exhausted when fewer than "
                       "count could be found.",
           permission="write", body=GenerateNames, answers={200: GeneratedNames},
           errors=(409,))
async def generate_names(request: web.Request) -> web.StreamResponse:
    body = body_of(request, GenerateNames)
    out = await service.generate_names(request.app[CTX], principal_of(request),
                                       service.NamesRequest(
                                           count=body.count, style=body.style,
                                           people=body.names or (), domains=body.domains,
                                           per_domain_max=body.per_domain_max))
    return json_response(out)
