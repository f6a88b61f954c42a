"""Account endpoints: the caller's account and usage, and the reseller's sub-accounts
(create with limits, list, get, change, suspend/unsuspend, delete) and their usage.

A reseller reaches only its own children (every store query filters on the parent's
id); it acts inside a child with ``X-Mailforge-Account`` (resolved in ``http.py``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..schema.tenancy import (
    AccountReply,
    CreatedAccountReply,
    DeletionReply,
    NewSubAccountBody,
    ResellerUsageReply,
    SubAccountChangesBody,
    SubAccountList,
    SubAccountPage,
    SuspensionReply,
    UsageReply,
)
from ..service import accounts as service
from ..service.accounts import AccountInfo, SubAccountChanges, SubAccountInput
from .context import CTX
from .http import BODY_KEY
from .idempotency import idempotent
from .operation import body_of, operation, principal_of, query_of, reply
from .render import rfc3339

routes = web.RouteTableDef()

_ID = {"id": "The sub-account's id (acct_...)."}


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


def _account(a: AccountInfo) -> AccountReply:
    return AccountReply.model_validate(account_json(a))


@operation(routes, "GET", "/v1/account", id="getAccount", tag="accounts",
           summary="The caller's account",
           description="The account the token acts on (its own, or the sub-account named "
                       "by X-Mailforge-Account): status, limits, parent.",
           permission="read", answers={200: AccountReply})
async def get_account(request: web.Request) -> web.StreamResponse:
    return reply(_account(await service.get_account(request.app[CTX],
                                                    principal_of(request))))


@operation(routes, "GET", "/v1/account/usage", id="getUsage", tag="accounts",
           summary="Usage against the account's limits",
           description="How many domains, mailboxes, aliases, tokens and sub-accounts the "
                       "account has, with its domain and mailbox limits. Check it before "
                       "provisioning to avoid 403 limit_exceeded.",
           permission="read", answers={200: UsageReply})
async def get_usage(request: web.Request) -> web.StreamResponse:
    acct, used = await service.get_usage(request.app[CTX], principal_of(request))
    return reply(UsageReply.model_validate({
        "account_id": acct.id,
        "domains": {"used": used.domains, "limit": acct.domain_limit},
        "email_users": {"used": used.email_users, "limit": acct.email_user_limit},
        "aliases": {"used": used.aliases},
        "tokens": {"used": used.tokens},
        "sub_accounts": {"used": used.sub_accounts},
    }))


def _text(body: NewSubAccountBody | SubAccountChangesBody, name: str) -> str | None:
    """A contact text field: None when not given, "" when given as null."""
    if name not in body.model_fields_set:
        return None
    value = getattr(body, name)
    return "" if value is None else str(value)


@operation(routes, "POST", "/v1/reseller/accounts", id="createSubAccount", tag="accounts",
           summary="Create a sub-account with limits and a first admin token (shown once)",
           description="For an unrestricted admin token of a reseller account (the root "
                       "account, or one created with reseller true). The limits may not "
                       "exceed the caller's own (422 limit_exceeded). The first admin "
                       "token is minted by the calling token.",
           permission="admin", body=NewSubAccountBody, answers={201: CreatedAccountReply},
           errors=(422,), idempotent=True)
async def create_account(request: web.Request) -> web.StreamResponse:
    principal = principal_of(request)
    body = body_of(request, NewSubAccountBody)
    item = SubAccountInput(
        email=body.email, first_name=_text(body, "first_name") or "",
        last_name=_text(body, "last_name") or "",
        company_name=_text(body, "company_name") or "", domain_limit=body.domain_limit,
        email_user_limit=body.email_user_limit, reseller=body.reseller)

    async def produce() -> tuple[int, dict[str, Any]]:
        made = await service.create_sub_account(request.app[CTX], principal, item)
        return 201, {"account_id": made.account.id, "email": made.account.email,
                     "token": made.token, "token_id": made.token_id,
                     "account": account_json(made.account)}

    return await idempotent(request, principal, request[BODY_KEY], produce)


@operation(routes, "GET", "/v1/reseller/accounts", id="listSubAccounts", tag="accounts",
           summary="List sub-accounts",
           description="The caller's own sub-accounts (not theirs), oldest first.",
           permission="admin", query=SubAccountPage, answers={200: SubAccountList})
async def list_accounts(request: web.Request) -> web.StreamResponse:
    page = query_of(request, SubAccountPage)
    listing = await service.list_sub_accounts(request.app[CTX], principal_of(request),
                                              page.limit, page.offset, page.cursor)
    return reply(SubAccountList(accounts=[_account(a) for a in listing.accounts],
                                total=listing.total, limit=page.limit,
                                offset=listing.offset, next_cursor=listing.next_cursor))


@operation(routes, "GET", "/v1/reseller/accounts/{id}", id="getSubAccount", tag="accounts",
           summary="Get a sub-account",
           description="One of the caller's own sub-accounts; any other is not found.",
           permission="admin", answers={200: AccountReply}, path_params=_ID)
async def get_sub_account(request: web.Request) -> web.StreamResponse:
    return reply(_account(await service.get_sub_account(
        request.app[CTX], principal_of(request), request.match_info["id"])))


@operation(routes, "PATCH", "/v1/reseller/accounts/{id}", id="updateSubAccount",
           tag="accounts", summary="Change a sub-account's contact fields or limits",
           description="Only the fields given change; null clears a name field. Limits "
                       "may not exceed the caller's own (422 limit_exceeded).",
           permission="admin", body=SubAccountChangesBody, answers={200: AccountReply},
           errors=(422,), path_params=_ID)
async def update_account(request: web.Request) -> web.StreamResponse:
    body = body_of(request, SubAccountChangesBody)
    changes = SubAccountChanges(
        email=body.email, first_name=_text(body, "first_name"),
        last_name=_text(body, "last_name"), company_name=_text(body, "company_name"),
        domain_limit=body.domain_limit, email_user_limit=body.email_user_limit)
    return reply(_account(await service.update_sub_account(
        request.app[CTX], principal_of(request), request.match_info["id"], changes)))


async def _suspension(request: web.Request, suspended: bool) -> web.StreamResponse:
    acct, job = await service.set_suspended(request.app[CTX], principal_of(request),
                                            request.match_info["id"], suspended)
    return reply(SuspensionReply.model_validate({
        "account_id": acct.id, "status": acct.status, "job_id": job.id,
        "job_status": job.status}), status=202)


@operation(routes, "POST", "/v1/reseller/accounts/{id}/suspend", id="suspendSubAccount",
           tag="accounts",
           summary="Suspend: no mailbox of the account may log in or send; data kept",
           description="Every mailbox of the sub-account is re-rendered with logins "
                       "refused (no IMAP, no SMTP AUTH); mail keeps being delivered and "
                       "nothing is deleted. Its tokens may still read. The job completes "
                       "when the mail server holds the new state. Not cascaded to its own "
                       "sub-accounts.",
           permission="admin", answers={202: SuspensionReply}, path_params=_ID)
async def suspend(request: web.Request) -> web.StreamResponse:
    return await _suspension(request, True)


@operation(routes, "POST", "/v1/reseller/accounts/{id}/unsuspend",
           id="unsuspendSubAccount", tag="accounts", summary="Undo a suspension",
           description="Logins and sending are allowed again once the job completes.",
           permission="admin", answers={202: SuspensionReply}, path_params=_ID)
async def unsuspend(request: web.Request) -> web.StreamResponse:
    return await _suspension(request, False)


@operation(routes, "DELETE", "/v1/reseller/accounts/{id}", id="deleteSubAccount",
           tag="accounts",
           summary="Delete a sub-account: a job removing its domains and mailboxes",
           description="Its tokens stop at once; a job removes its domains, mailboxes "
                       "and aliases through the reconcile engine; the account disappears "
                       "when they are gone. 409 while it has sub-accounts of its own.",
           permission="admin", answers={202: DeletionReply}, errors=(409,),
           path_params=_ID)
async def delete_account(request: web.Request) -> web.StreamResponse:
    job = await service.delete_sub_account(request.app[CTX], principal_of(request),
                                           request.match_info["id"])
    return reply(DeletionReply(job_id=job.id, status=job.status,
                               account_id=request.match_info["id"]), status=202)


@operation(routes, "GET", "/v1/reseller/usage", id="resellerUsage", tag="accounts",
           summary="Usage of every sub-account, and totals",
           description="Domains and mailboxes of each of the caller's sub-accounts "
                       "against their limits, and the sums.",
           permission="admin", answers={200: ResellerUsageReply})
async def reseller_usage(request: web.Request) -> web.StreamResponse:
    rows = await service.reseller_usage(request.app[CTX], principal_of(request))
    return reply(ResellerUsageReply.model_validate({
        "accounts": [{"account_id": r.id, "name": r.name, "status": r.status,
                      "domains": {"used": r.domains, "limit": r.domain_limit},
                      "email_users": {"used": r.email_users, "limit": r.email_user_limit}}
                     for r in rows],
        "totals": {"accounts": len(rows),
                   "domains": sum(r.domains for r in rows),
                   "email_users": sum(r.email_users for r in rows)},
    }))
