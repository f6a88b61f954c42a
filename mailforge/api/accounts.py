"""Account endpoints: the caller's account and usage, and the reseller's sub-accounts
(create with limits, list, get, change, suspend/unsuspend, delete) and their usage.

A reseller reaches only its own children (every store query filters on the parent's
id); it acts inside a child with ``X-Mailforge-Account`` (resolved in ``http.py``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ValidationFailed
from ..service import accounts as service
from ..service.accounts import MAX_LIMIT, AccountInfo, SubAccountChanges, SubAccountInput
from . import oas
from .context import CTX
from .http import authenticate, check_fields, json_body, paging
from .idempotency import idempotent
from .render import json_response, rfc3339

routes = web.RouteTableDef()


def account_json(a: AccountInfo) -> dict[str, Any]:
    return {
        "id": a.id,
        "name": a.name,
        "email": a.email,
        "first_name": a.first_name,
        "last_name": a.last_name,
        "company_name": a.company_name,
        "status": a.status,
        "reseller": a.reseller,
        "limits": {"domains": a.domain_limit, "email_users": a.email_user_limit},
        "parent_id": a.parent_id,
        "created_at": rfc3339(a.created_at),
    }


@routes.get("/v1/account")
async def get_account(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    return json_response(account_json(await service.get_account(request.app[CTX],
                                                                principal)))


@routes.get("/v1/account/usage")
async def get_usage(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    acct, used = await service.get_usage(request.app[CTX], principal)
    return json_response({
        "account_id": acct.id,
        "domains": {"used": used.domains, "limit": acct.domain_limit},
        "email_users": {"used": used.email_users, "limit": acct.email_user_limit},
        "aliases": {"used": used.aliases},
        "tokens": {"used": used.tokens},
        "sub_accounts": {"used": used.sub_accounts},
    })


_TEXT_FIELDS = ("first_name", "last_name", "company_name")


def _parse(body: dict[str, Any], creating: bool) -> dict[str, Any]:
    """The body's shape and types (the rules on values are the service's): the fields
    given, JSON null texts as empty."""
    allowed = {"email", *_TEXT_FIELDS, "domain_limit", "email_user_limit"}
    if creating:
        allowed.add("reseller")
    errs = check_fields(body, allowed,
                        {"email", "domain_limit", "email_user_limit"} if creating else set())
    out: dict[str, Any] = {}
    if "email" in body:
        if isinstance(body["email"], str):
            out["email"] = body["email"]
        else:
            errs.append("email: must be a string")
    for f in _TEXT_FIELDS:
        if f in body:
            v = "" if body[f] is None else body[f]
            if isinstance(v, str):
                out[f] = v
            else:
                errs.append(f"{f}: must be at most 128 printable characters")
    for f in ("domain_limit", "email_user_limit"):
        if f in body:
            v = body[f]
            if isinstance(v, bool) or not isinstance(v, int):
                errs.append(f"{f}: must be an integer from 0 to {MAX_LIMIT}")
            else:
                out[f] = v
    if "reseller" in body:
        if not isinstance(body["reseller"], bool):
            errs.append("reseller: must be true or false")
        else:
            out["reseller"] = body["reseller"]
    if not creating and not body:
        errs.append("body: nothing to change")
    if errs:
        raise ValidationFailed(errs)
    return out


@routes.post("/v1/reseller/accounts")
async def create_account(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    body = await json_body(request)
    fields = _parse(body, creating=True)
    item = SubAccountInput(
        email=fields["email"], first_name=fields.get("first_name", ""),
        last_name=fields.get("last_name", ""), company_name=fields.get("company_name", ""),
        domain_limit=fields["domain_limit"], email_user_limit=fields["email_user_limit"],
        reseller=fields.get("reseller", False))

    async def produce() -> tuple[int, dict[str, Any]]:
        made = await service.create_sub_account(request.app[CTX], principal, item)
        return 201, {"account_id": made.account.id, "email": made.account.email,
                     "token": made.token, "token_id": made.token_id,
                     "account": account_json(made.account)}

    return await idempotent(request, principal, body, produce)


@routes.get("/v1/reseller/accounts")
async def list_accounts(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    limit, offset = paging(request)
    accounts, total = await service.list_sub_accounts(request.app[CTX], principal, limit,
                                                      offset)
    return json_response({"accounts": [account_json(a) for a in accounts], "total": total,
                          "limit": limit, "offset": offset})


@routes.get("/v1/reseller/accounts/{id}")
async def get_sub_account(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    return json_response(account_json(await service.get_sub_account(
        request.app[CTX], principal, request.match_info["id"])))


@routes.patch("/v1/reseller/accounts/{id}")
async def update_account(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    body = await json_body(request)
    changes = SubAccountChanges(**_parse(body, creating=False))
    return json_response(account_json(await service.update_sub_account(
        request.app[CTX], principal, request.match_info["id"], changes)))


async def _suspension(request: web.Request, suspended: bool) -> web.Response:
    principal = await authenticate(request, "admin")
    acct, job = await service.set_suspended(request.app[CTX], principal,
                                            request.match_info["id"], suspended)
    return json_response({"account_id": acct.id, "status": acct.status, "job_id": job.id,
                          "job_status": job.status}, status=202)


@routes.post("/v1/reseller/accounts/{id}/suspend")
async def suspend(request: web.Request) -> web.Response:
    return await _suspension(request, True)


@routes.post("/v1/reseller/accounts/{id}/unsuspend")
async def unsuspend(request: web.Request) -> web.Response:
    return await _suspension(request, False)


@routes.delete("/v1/reseller/accounts/{id}")
async def delete_account(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    job = await service.delete_sub_account(request.app[CTX], principal,
                                           request.match_info["id"])
    return json_response({"job_id": job.id, "status": job.status,
                          "account_id": request.match_info["id"]}, status=202)


@routes.get("/v1/reseller/usage")
async def reseller_usage(request: web.Request) -> web.Response:
    principal = await authenticate(request, "admin")
    rows = await service.reseller_usage(request.app[CTX], principal)
    accounts = [{"account_id": r.id, "name": r.name, "status": r.status,
                 "domains": {"used": r.domains, "limit": r.domain_limit},
                 "email_users": {"used": r.email_users, "limit": r.email_user_limit}}
                for r in rows]
    return json_response({
        "accounts": accounts,
        "totals": {"accounts": len(rows),
                   "domains": sum(r.domains for r in rows),
                   "email_users": sum(r.email_users for r in rows)},
    })


# ---------------------------------------------------------------------------- OpenAPI

_LIMITS = oas.obj({"domains": {"type": "integer"}, "email_users": {"type": "integer"}},
                  ("domains", "email_users"))
_ACCOUNT = oas.obj({
    "id": {"type": "string"}, "name": {"type": "string"}, "email": oas.NULLABLE_STR,
    "first_name": {"type": "string"}, "last_name": {"type": "string"},
    "company_name": {"type": "string"},
    "status": {"enum": ["active", "suspended", "deleting"]},
    "reseller": {"type": "boolean"}, "limits": _LIMITS, "parent_id": oas.NULLABLE_STR,
    "created_at": oas.TIME,
}, ("id", "name", "status", "limits", "parent_id"))
_USED_LIMIT = oas.obj({"used": {"type": "integer"}, "limit": {"type": "integer"}}, ("used",))
_USAGE = oas.obj({
    "account_id": {"type": "string"}, "domains": _USED_LIMIT, "email_users": _USED_LIMIT,
    "aliases": _USED_LIMIT, "tokens": _USED_LIMIT, "sub_accounts": _USED_LIMIT,
}, ("domains", "email_users"))
_TEXT = {"type": ["string", "null"], "maxLength": 128}
_LIMIT_INT = {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT}
_EMAIL_S = {"type": "string", "minLength": 3, "maxLength": 254}
_PATCH = oas.obj({"email": _EMAIL_S, "first_name": _TEXT, "last_name": _TEXT,
                  "company_name": _TEXT, "domain_limit": _LIMIT_INT,
                  "email_user_limit": _LIMIT_INT}, closed=True)
_PATCH["minProperties"] = 1
_CREATE = oas.obj({**_PATCH["properties"], "reseller": {"type": "boolean"}},
                  ("email", "domain_limit", "email_user_limit"), closed=True)
_SUSPEND = oas.obj({"account_id": {"type": "string"},
                    "status": {"enum": ["active", "suspended"]},
                    "job_id": {"type": "string"}, "job_status": {"type": "string"}},
                   ("account_id", "status", "job_id"))


def _op(summary: str, op_id: str, ok: dict[str, Any], params: list[dict[str, Any]],
        body: dict[str, Any] | None = None, tag: str = "reseller") -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "operationId": op_id, "tags": [tag],
                           "parameters": params,
                           "responses": oas.responses(ok, oas.WRITE_ERRORS if body or
                                                      op_id.startswith(("delete", "suspend",
                                                                        "unsuspend"))
                                                      else oas.COMMON_ERRORS)}
    if body is not None:
        out["requestBody"] = oas.body(body)
    return out


_ID = [oas.PATH_ID]
openapi_paths: dict[str, dict[str, Any]] = {
    "/v1/account": {"get": _op("The caller's account", "getAccount",
                               {"200": oas.ok("The account.", _ACCOUNT)}, [oas.ACTING],
                               tag="account")},
    "/v1/account/usage": {"get": _op("Usage against the account's limits", "getUsage",
                                     {"200": oas.ok("Usage.", _USAGE)}, [oas.ACTING],
                                     tag="account")},
    "/v1/reseller/accounts": {
        "post": _op("Create a sub-account with limits and a first admin token (shown once)",
                    "createSubAccount", {"201": oas.ok("Created.", oas.obj({
                        "account_id": {"type": "string"}, "email": {"type": "string"},
                        "token": {"type": "string"}, "token_id": {"type": "string"},
                        "account": _ACCOUNT}, ("account_id", "email", "token")))},
                    [oas.IDEMPOTENCY], _CREATE),
        "get": _op("List sub-accounts", "listSubAccounts", {"200": oas.ok("Sub-accounts.",
                   oas.obj({"accounts": {"type": "array", "items": _ACCOUNT},
                            "total": {"type": "integer"}, "limit": {"type": "integer"},
                            "offset": {"type": "integer"}}, ("accounts", "total")))},
                   [oas.LIMIT, oas.OFFSET]),
    },
    "/v1/reseller/accounts/{id}": {
        "get": _op("Get a sub-account", "getSubAccount",
                   {"200": oas.ok("The sub-account.", _ACCOUNT)}, _ID),
        "patch": _op("Change a sub-account's contact fields or limits", "updateSubAccount",
                     {"200": oas.ok("The sub-account.", _ACCOUNT)}, _ID, _PATCH),
        "delete": _op("Delete a sub-account: a job removing its domains and mailboxes",
                      "deleteSubAccount", {"202": oas.ok("Deletion started.", oas.obj(
                          {"job_id": {"type": "string"}, "status": {"type": "string"},
                           "account_id": {"type": "string"}}, ("job_id",)))}, _ID),
    },
    "/v1/reseller/accounts/{id}/suspend": {
        "post": _op("Suspend: no mailbox of the account may log in or send; data kept",
                    "suspendSubAccount", {"202": oas.ok("Suspension under way.", _SUSPEND)},
                    _ID)},
    "/v1/reseller/accounts/{id}/unsuspend": {
        "post": _op("Undo a suspension", "unsuspendSubAccount",
                    {"202": oas.ok("Unsuspension under way.", _SUSPEND)}, _ID)},
    "/v1/reseller/usage": {
        "get": _op("Usage of every sub-account, and totals", "resellerUsage",
                   {"200": oas.ok("Usage.", oas.obj({
                       "accounts": {"type": "array", "items": oas.obj({
                           "account_id": {"type": "string"}, "name": {"type": "string"},
                           "status": {"type": "string"}, "domains": _USED_LIMIT,
                           "email_users": _USED_LIMIT})},
                       "totals": oas.obj({"accounts": {"type": "integer"},
                                          "domains": {"type": "integer"},
                                          "email_users": {"type": "integer"}})},
                       ("accounts", "totals")))}, [])},
}
