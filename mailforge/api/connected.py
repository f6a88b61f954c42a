"""Connected-mailbox endpoints (issue 12): connect one, connect many, read and change a
connection. Each handler takes the validated models, calls one function of
``service/connected.py`` and renders. The other lifecycle operations (list with
``?type=``, get, PATCH name/signature/limit, suspend/resume, DELETE = disconnect) are
the email-user endpoints'."""

from __future__ import annotations

from aiohttp import web

from ..schema.connected import (
    Connected,
    ConnectedMany,
    Connection,
    ConnectionChanged,
    ConnectionChanges,
    ConnectMailbox,
    ConnectMailboxes,
)
from ..service import connected as service
from .context import CTX
from .idempotency import key_of, render
from .operation import body_of, operation, principal_of
from .render import json_response

routes = web.RouteTableDef()

_USER_ID = {"id": "The email user's id (usr_...)."}


@operation(routes, "POST", "/v1/email-users/connect", id="connectEmailUser",
           tag="email-users", summary="Connect an existing mailbox (SMTP/IMAP)",
           description="An existing mailbox on its own provider (Google Workspace, "
                       "Microsoft 365, another host) becomes an email user of the account: "
                       "the same id space, inbox, sending, limits and webhooks as a created "
                       "one. Answers at once with the job of its connection test (SMTP AUTH "
                       "and IMAP login, in the background); it moves connecting -> active "
                       "or failed with a reason. Passwords and tokens are stored sealed and "
                       "never shown again. A host that is an IP address outside the public "
                       "internet (or localhost) is a 400 naming the field unless the "
                       "operator allows it; 409 for an address the account already has; "
                       "403 past the account's mailbox limit.",
           permission="write", body=ConnectMailbox, answers={202: Connected},
           errors=(403, 409), idempotent=True)
async def connect(request: web.Request) -> web.StreamResponse:
    body = body_of(request, ConnectMailbox)
    return render(await service.connect(request.app[CTX], principal_of(request), body,
                                        *key_of(request)))


@operation(routes, "POST", "/v1/email-users/connect/bulk", id="bulkConnectEmailUsers",
           tag="email-users", summary="Connect up to limits.bulk_max_items mailboxes in one "
           "job", description="All or none: every item is checked before anything is "
           "accepted (errors name the item: mailboxes[3].imap.port); an address twice in "
           "the body or already in the account is a 409; the account's limit must hold for "
           "all (403 with used/limit/requested). The job (GET /v1/jobs/{id}) lists every "
           "item: connecting, connected, or failed with its reason.",
           permission="write", body=ConnectMailboxes, answers={202: ConnectedMany},
           errors=(403, 409), idempotent=True)
async def connect_bulk(request: web.Request) -> web.StreamResponse:
    body = body_of(request, ConnectMailboxes)
    return render(await service.connect_bulk(request.app[CTX], principal_of(request),
                                             body.mailboxes, *key_of(request)))


@operation(routes, "GET", "/v1/email-users/{id}/connection", id="getEmailUserConnection",
           tag="email-users", summary="A connected mailbox's settings and last test",
           description="Host, port, security and username of SMTP and IMAP (never a "
                       "password or token), the status, the last test (status, reason, "
                       "detail, tested_at), the Sent folder found, the DNS check of the "
                       "address's domain and when it is tested next. 404 for a created "
                       "(managed) email user.",
           permission="read", answers={200: Connection}, path_params=_USER_ID)
async def get_connection(request: web.Request) -> web.StreamResponse:
    return json_response(await service.get_connection(
        request.app[CTX], principal_of(request), request.match_info["id"]))


@operation(routes, "PATCH", "/v1/email-users/{id}/connection",
           id="updateEmailUserConnection", tag="email-users",
           summary="Change a connected mailbox's settings or credentials",
           description="Fields left out stay. The mailbox is tested again (status "
                       "connecting; 202 with the job); a test of the old settings still "
                       "running is discarded.",
           permission="write", body=ConnectionChanges, answers={202: ConnectionChanged},
           errors=(409,), idempotent=True, path_params=_USER_ID)
async def update_connection(request: web.Request) -> web.StreamResponse:
    body = body_of(request, ConnectionChanges)
    return render(await service.update_connection(
        request.app[CTX], principal_of(request), request.match_info["id"], body,
        *key_of(request)))
