"""Models of the tenancy routes: API tokens, the account and its usage, reseller
sub-accounts, jobs and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core.core_schema import ValidationInfo, ValidatorFunctionWrapHandler

from ..models import PERMISSIONS
from .base import Body, Query, Reply
from .common import CURSOR_DESCRIPTION, LIMIT_DESCRIPTION, OFFSET_DESCRIPTION, PageInfo

MAX_TOKEN_DOMAINS = 100
MAX_EXPIRY_SECONDS = 315_360_000  # ten years
MAX_LIMIT = 10_000_000
TIME_EXAMPLE = "2026-12-02T10:00:00Z"


def _rfc3339(value: Any) -> Any:
    """An RFC 3339 time with a zone, from text only (never a number of seconds)."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("must be an RFC 3339 time")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError("must be an RFC 3339 time") from None
    if t.tzinfo is None:
        raise ValueError("must include a time zone (e.g. Z)")
    return t


Rfc3339 = Annotated[datetime, BeforeValidator(_rfc3339)]
Permission = Literal["read", "write", "admin"]


# ------------------------------------------------------------------------------ tokens


class NewTokenBody(Body):
    """A token to create."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "ci deploys", "permissions": ["read", "write"],
         "expires_in_seconds": 86400}]})

    name: Annotated[str, Field(min_length=1, max_length=100,
                               description="A name to recognise the token by (1-100 "
                                           "printable characters).",
                               examples=["ci deploys"])]
    permissions: Annotated[list[Permission], Field(
        min_length=1, description="read (GET), write (changes), admin (tokens, reseller, "
                                  "audit; implies the others).",
        examples=[["read", "write"]])]
    expires_at: Annotated[Rfc3339 | None, Field(
        description="When the token stops working (RFC 3339, within 10 years). A token "
                    "never outlives the token creating it.",
        examples=["2027-01-01T00:00:00Z"])] = None
    expires_in_seconds: Annotated[int | None, Field(
        ge=1, le=MAX_EXPIRY_SECONDS, description="Or: seconds from now until it stops "
                                                 "working.", examples=[86400])] = None
    domains: Annotated[list[str] | None, Field(
        min_length=1, max_length=MAX_TOKEN_DOMAINS,
        description="Restrict the token to these domains of the account (it sees "
                    "nothing else). Required for a token created by a restricted token, "
                    "and then within its domains.",
        examples=[["outreach-acme.com"]])] = None

    @field_validator("permissions", mode="wrap")
    @classmethod
    def _permissions(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # One detail for the field, in the API's words, whatever item is wrong.
        try:
            return handler(value)
        except ValidationError:
            raise ValueError("must be a non-empty list of "
                             f"{', '.join(PERMISSIONS)}") from None

    @field_validator("expires_in_seconds", mode="after")
    @classmethod
    def _one_expiry(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("expires_at") is not None:
            raise ValueError("give expires_at or expires_in_seconds, not both")
        return value


class TokenReply(Reply):
    """A token (never its secret)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "tok_01hzy3k8q6", "name": "ci deploys", "permissions": ["read", "write"],
         "domains": None, "created_at": TIME_EXAMPLE, "expires_at": None,
         "last_used_at": None}]})

    id: Annotated[str, Field(description="The token's id (tok_...).",
                             examples=["tok_01hzy3k8q6"])]
    name: Annotated[str, Field(description="Its name.", examples=["ci deploys"])]
    permissions: Annotated[list[Permission], Field(description="Its permissions.",
                                                   examples=[["read", "write"]])]
    domains: Annotated[list[str] | None, Field(
        description="The domains it is restricted to; null: the whole account.",
        examples=[None])]
    created_at: Annotated[str, Field(description="When it was created (RFC 3339).",
                                     examples=[TIME_EXAMPLE])]
    expires_at: Annotated[str | None, Field(description="When it stops working; null: "
                                                        "never.", examples=[None])]
    last_used_at: Annotated[str | None, Field(
        description="Its last use, to the minute; null: never used.", examples=[None])]


class CreatedTokenReply(TokenReply):
    """The new token, with its secret: shown in this answer only."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "tok_01hzy3k8q6", "name": "ci deploys", "permissions": ["read", "write"],
         "domains": None, "created_at": TIME_EXAMPLE, "expires_at": None,
         "last_used_at": None, "token": "mf_tok_01hzy3k8q6.c2VjcmV0"}]})

    token: Annotated[str, Field(description="The bearer token (Authorization: Bearer "
                                            "...). Store it now: it is never shown again.",
                                examples=["mf_tok_01hzy3k8q6.c2VjcmV0"])]


class TokenList(Reply):
    """The account's live tokens."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"tokens": [], "total": 0}]})

    tokens: Annotated[list[TokenReply], Field(description="Live tokens, oldest first.",
                                              examples=[[]])]
    total: Annotated[int, Field(description="How many.", examples=[0])]


# ---------------------------------------------------------------------------- accounts

LimitInt = Annotated[int, Field(ge=0, le=MAX_LIMIT)]
Text = Annotated[str | None, Field(max_length=128)]


class Limits(Reply):
    """An account's limits."""

    domains: Annotated[int, Field(description="Most domains it may connect.",
                                  examples=[10])]
    email_users: Annotated[int, Field(description="Most mailboxes it may have.",
                                      examples=[50])]


_ACCOUNT_EXAMPLE: dict[str, JsonValue] = {
    "id": "acct_01hzy3k8q6", "name": "Acme Corp", "email": "client@acmecorp.com",
    "first_name": "Jordan", "last_name": "Lee", "company_name": "Acme Corp",
    "status": "active", "reseller": False, "limits": {"domains": 10, "email_users": 50},
    "parent_id": "acct_01hzy3k000", "created_at": TIME_EXAMPLE}


class AccountReply(Reply):
    """An account."""

    model_config = ConfigDict(json_schema_extra={"examples": [_ACCOUNT_EXAMPLE]})

    id: Annotated[str, Field(description="The account's id (acct_...).",
                             examples=["acct_01hzy3k8q6"])]
    name: Annotated[str, Field(description="Its display name (the company name, else "
                                           "the person's, else the address).",
                               examples=["Acme Corp"])]
    email: Annotated[str | None, Field(description="Its contact address.",
                                       examples=["client@acmecorp.com"])]
    first_name: Annotated[str, Field(description="Contact's first name.",
                                     examples=["Jordan"])]
    last_name: Annotated[str, Field(description="Contact's last name.", examples=["Lee"])]
    company_name: Annotated[str, Field(description="Company name.", examples=["Acme Corp"])]
    status: Annotated[Literal["active", "suspended", "deleting"], Field(
        description="suspended: its mailboxes cannot log in or send, its tokens only "
                    "read; deleting: being removed.", examples=["active"])]
    reseller: Annotated[bool, Field(description="Whether it may create sub-accounts.",
                                    examples=[False])]
    limits: Annotated[Limits, Field(description="Its limits.",
                                    examples=[{"domains": 10, "email_users": 50}])]
    parent_id: Annotated[str | None, Field(description="The account above it; null for "
                                                       "the operator's root account.",
                                           examples=["acct_01hzy3k000"])]
    created_at: Annotated[str, Field(description="When it was created (RFC 3339).",
                                     examples=[TIME_EXAMPLE])]


class Used(Reply):
    """How much of a resource is used, and the limit where there is one."""

    used: Annotated[int, Field(description="How many exist.", examples=[3])]
    limit: Annotated[int | None, Field(description="The most allowed (absent: no limit).",
                                       examples=[10])] = None


class UsageReply(Reply):
    """The account's usage against its limits."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "account_id": "acct_01hzy3k8q6", "domains": {"used": 3, "limit": 10},
        "email_users": {"used": 12, "limit": 50}, "aliases": {"used": 0},
        "tokens": {"used": 2}, "sub_accounts": {"used": 0}}]})

    account_id: Annotated[str, Field(description="The account.",
                                     examples=["acct_01hzy3k8q6"])]
    domains: Annotated[Used, Field(description="Connected domains.",
                                   examples=[{"used": 3, "limit": 10}])]
    email_users: Annotated[Used, Field(description="Mailboxes.",
                                       examples=[{"used": 12, "limit": 50}])]
    aliases: Annotated[Used, Field(description="Aliases.", examples=[{"used": 0}])]
    tokens: Annotated[Used, Field(description="Live API tokens.", examples=[{"used": 2}])]
    sub_accounts: Annotated[Used, Field(description="Sub-accounts.",
                                        examples=[{"used": 0}])]


class SubAccountChangesBody(Body):
    """Changes to a sub-account: its contact fields or its limits (at least one)."""

    model_config = ConfigDict(json_schema_extra={
        "examples": [{"domain_limit": 20, "company_name": "Acme Corporation"}],
        "minProperties": 1})

    email: Annotated[str | None, Field(min_length=3, max_length=254,
                                       description="Contact address.",
                                       examples=["client@acmecorp.com"])] = None
    first_name: Annotated[Text, Field(description="Contact's first name (null: empty).",
                                      examples=["Jordan"])] = None
    last_name: Annotated[Text, Field(description="Contact's last name (null: empty).",
                                     examples=["Lee"])] = None
    company_name: Annotated[Text, Field(description="Company name (null: empty).",
                                        examples=["Acme Corp"])] = None
    domain_limit: Annotated[LimitInt | None, Field(
        description="Most domains (not above your own limit).", examples=[10])] = None
    email_user_limit: Annotated[LimitInt | None, Field(
        description="Most mailboxes (not above your own limit).", examples=[50])] = None

    @model_validator(mode="after")
    def _something(self) -> SubAccountChangesBody:
        if not self.model_fields_set:
            raise ValueError("nothing to change")
        return self


class NewSubAccountBody(Body):
    """A sub-account to create, with its limits."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "email": "client@acmecorp.com", "first_name": "Jordan", "last_name": "Lee",
        "company_name": "Acme Corp", "domain_limit": 10, "email_user_limit": 50}]})

    email: Annotated[str, Field(min_length=3, max_length=254,
                                description="Contact address.",
                                examples=["client@acmecorp.com"])]
    first_name: Annotated[Text, Field(description="Contact's first name.",
                                      examples=["Jordan"])] = None
    last_name: Annotated[Text, Field(description="Contact's last name.",
                                     examples=["Lee"])] = None
    company_name: Annotated[Text, Field(description="Company name.",
                                        examples=["Acme Corp"])] = None
    domain_limit: Annotated[LimitInt, Field(
        description="Most domains (not above your own limit).", examples=[10])]
    email_user_limit: Annotated[LimitInt, Field(
        description="Most mailboxes (not above your own limit).", examples=[50])]
    reseller: Annotated[bool, Field(description="May it create sub-accounts of its own?",
                                    examples=[False])] = False


class CreatedAccountReply(Reply):
    """The new sub-account and its first admin token (shown in this answer only)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "account_id": "acct_01hzy3k8q6", "email": "client@acmecorp.com",
        "token": "mf_tok_01hzy3k8q7.c2VjcmV0", "token_id": "tok_01hzy3k8q7",
        "account": _ACCOUNT_EXAMPLE}]})

    account_id: Annotated[str, Field(description="The new account's id.",
                                     examples=["acct_01hzy3k8q6"])]
    email: Annotated[str | None, Field(description="Its contact address.",
                                       examples=["client@acmecorp.com"])]
    token: Annotated[str, Field(description="Its first admin token: store it now, it is "
                                            "never shown again.",
                                examples=["mf_tok_01hzy3k8q7.c2VjcmV0"])]
    token_id: Annotated[str, Field(description="That token's id.",
                                   examples=["tok_01hzy3k8q7"])]
    account: Annotated[AccountReply, Field(description="The account.",
                                           examples=[_ACCOUNT_EXAMPLE])]


class SubAccountList(PageInfo):
    """Sub-accounts, oldest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"accounts": [_ACCOUNT_EXAMPLE], "total": 1, "limit": 50, "offset": 0,
         "next_cursor": None}]})

    accounts: Annotated[list[AccountReply], Field(description="This page.",
                                                  examples=[[_ACCOUNT_EXAMPLE]])]


class SuspensionReply(Reply):
    """The new status; a job completes when the mail server holds it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "account_id": "acct_01hzy3k8q6", "status": "suspended", "job_id": "job_01hzy3",
        "job_status": "pending"}]})

    account_id: Annotated[str, Field(description="The account.",
                                     examples=["acct_01hzy3k8q6"])]
    status: Annotated[Literal["active", "suspended"], Field(
        description="Its status now.", examples=["suspended"])]
    job_id: Annotated[str, Field(description="The job re-rendering its mailboxes.",
                                 examples=["job_01hzy3"])]
    job_status: Annotated[str, Field(description="That job's status.",
                                     examples=["pending"])]


class DeletionReply(Reply):
    """Deletion under way: a job removes the account's domains, mailboxes and aliases."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "job_01hzy3", "status": "pending", "account_id": "acct_01hzy3k8q6"}]})

    job_id: Annotated[str, Field(description="The deletion job.", examples=["job_01hzy3"])]
    status: Annotated[str, Field(description="Its status.", examples=["pending"])]
    account_id: Annotated[str, Field(description="The account being deleted.",
                                     examples=["acct_01hzy3k8q6"])]


class SubAccountUsage(Reply):
    """One sub-account's usage."""

    account_id: Annotated[str, Field(description="The sub-account.",
                                     examples=["acct_01hzy3k8q6"])]
    name: Annotated[str, Field(description="Its name.", examples=["Acme Corp"])]
    status: Annotated[str, Field(description="Its status.", examples=["active"])]
    domains: Annotated[Used, Field(description="Domains against its limit.",
                                   examples=[{"used": 3, "limit": 10}])]
    email_users: Annotated[Used, Field(description="Mailboxes against its limit.",
                                       examples=[{"used": 12, "limit": 50}])]


class UsageTotals(Reply):
    """Sums over every sub-account."""

    accounts: Annotated[int, Field(description="Sub-accounts.", examples=[1])]
    domains: Annotated[int, Field(description="Their domains.", examples=[3])]
    email_users: Annotated[int, Field(description="Their mailboxes.", examples=[12])]


class ResellerUsageReply(Reply):
    """Usage of every sub-account, and totals."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "accounts": [{"account_id": "acct_01hzy3k8q6", "name": "Acme Corp",
                      "status": "active", "domains": {"used": 3, "limit": 10},
                      "email_users": {"used": 12, "limit": 50}}],
        "totals": {"accounts": 1, "domains": 3, "email_users": 12}}]})

    accounts: Annotated[list[SubAccountUsage], Field(description="Each sub-account.",
                                                     examples=[[]])]
    totals: Annotated[UsageTotals, Field(description="Sums.", examples=[
        {"accounts": 1, "domains": 3, "email_users": 12}])]


class SubAccountPage(Query):
    """Paging of the sub-accounts (oldest first)."""

    limit: Annotated[int, Field(ge=1, le=500, description=LIMIT_DESCRIPTION,
                                examples=[50])] = 50
    offset: Annotated[int, Field(ge=0, le=10_000_000, description=OFFSET_DESCRIPTION,
                                 examples=[0])] = 0
    cursor: Annotated[str | None, Field(min_length=1, max_length=512,
                                        description=CURSOR_DESCRIPTION,
                                        examples=["WzEsImFjY291bnRzIixbXV0"])] = None


# -------------------------------------------------------------------------------- jobs

JobStatus = Literal["pending", "processing", "completed", "failed"]
_JOB_EXAMPLE: dict[str, JsonValue] = {
    "id": "job_xyz", "type": "domain_setup", "status": "completed", "progress": 100,
    "message": "completed", "resource_id": "dom_abc", "total": 1, "done": 1, "failed": 0,
    "created_at": "2026-03-22T10:00:00Z", "completed_at": "2026-03-22T10:01:15Z"}


class JobReply(Reply):
    """A job: what a long operation is doing."""

    model_config = ConfigDict(json_schema_extra={"examples": [_JOB_EXAMPLE]})

    id: Annotated[str, Field(description="The job's id (job_...).", examples=["job_xyz"])]
    type: Annotated[str, Field(description="What it does: domain_setup, "
                                           "email_user_create, email_user_delete, "
                                           "domain_delete, account_suspend...",
                               examples=["domain_setup"])]
    status: Annotated[JobStatus, Field(description="pending, processing, then completed "
                                                   "or failed.", examples=["completed"])]
    progress: Annotated[int, Field(ge=0, le=100, description="Percent of its items done.",
                                   examples=[100])]
    message: Annotated[str, Field(description="What happened (the failure, if any).",
                                  examples=["completed"])]
    resource_id: Annotated[str | None, Field(description="The object it is about.",
                                             examples=["dom_abc"])]
    total: Annotated[int, Field(description="Items it waits for.", examples=[1])]
    done: Annotated[int, Field(description="Items done.", examples=[1])]
    failed: Annotated[int, Field(description="Items failed.", examples=[0])]
    created_at: Annotated[str, Field(description="When it was created (RFC 3339).",
                                     examples=["2026-03-22T10:00:00Z"])]
    completed_at: Annotated[str | None, Field(description="When it finished.",
                                              examples=["2026-03-22T10:01:15Z"])]


class JobFailureReply(Reply):
    """One failed item of a job."""

    index: Annotated[int, Field(description="Its position in the request.", examples=[7])]
    id: Annotated[str, Field(description="The object's id.", examples=["usr_01hzy3"])]
    email: Annotated[str | None, Field(description="The mailbox's address, for mailboxes.",
                                       examples=["sarah.chen@outreach-acme.com"])]
    error: Annotated[str | None, Field(description="Why it failed.",
                                       examples=["quota exceeded on the mail server"])]


class JobDetailReply(JobReply):
    """A job with its per-item failures, and the users a bulk create made (with their
    generated passwords, until the configured expiry)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**_JOB_EXAMPLE, "failures": []}]})

    failures: Annotated[list[JobFailureReply], Field(description="Failed items.",
                                                     examples=[[]])]
    users: Annotated[list[dict[str, Any]] | None, Field(
        description="Mailboxes a bulk create made, with generated passwords (until they "
                    "expire).", examples=[[{"email": "sarah.chen@outreach-acme.com",
                                            "password": "generated-once"}]])] = None
    items: Annotated[list[dict[str, Any]] | None, Field(
        description="A connect_email_users job: every item, {index, email_user_id, email, "
                    "status: connecting|connected|failed, reason, detail}.",
        examples=[[{"index": 0, "email_user_id": "usr_01", "email": "sarah@acme.com",
                    "status": "failed", "reason": "auth_failed",
                    "detail": "the server refused the login"}]])] = None


class JobPage(Query):
    """Paging of the jobs (newest first): 20 by default."""

    limit: Annotated[int, Field(ge=1, le=500, description=LIMIT_DESCRIPTION,
                                examples=[20])] = 20
    offset: Annotated[int, Field(ge=0, le=10_000_000, description=OFFSET_DESCRIPTION,
                                 examples=[0])] = 0
    cursor: Annotated[str | None, Field(min_length=1, max_length=512,
                                        description=CURSOR_DESCRIPTION,
                                        examples=["WzEsImpvYnMiLFtdXQ"])] = None


class JobList(PageInfo):
    """The account's jobs, newest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"jobs": [_JOB_EXAMPLE], "total": 1, "limit": 20, "offset": 0,
         "next_cursor": None}]})

    jobs: Annotated[list[JobReply], Field(description="This page.",
                                          examples=[[_JOB_EXAMPLE]])]


# ------------------------------------------------------------------------------- audit

_EVENT_EXAMPLE: dict[str, JsonValue] = {
    "id": "evt_01hzy3", "at": TIME_EXAMPLE, "account_id": "acct_01hzy3k8q6",
    "actor_account_id": "acct_01hzy3k8q6", "token_id": "tok_01hzy3k8q7",
    "action": "email_users.create", "method": "POST", "route": "/v1/email-users",
    "resource_id": "usr_01hzy3", "status": 202, "client_addr": "203.0.113.7",
    "request_id": "8f2c0d9e", "summary": {"request": {"username": "sarah.chen",
                                                      "password": "[redacted]"}}}


class AuditQuery(Query):
    """Filters and paging of the audit log (newest first)."""

    limit: Annotated[int, Field(ge=1, le=500, description=LIMIT_DESCRIPTION,
                                examples=[50])] = 50
    cursor: Annotated[str | None, Field(min_length=1, max_length=512,
                                        description=CURSOR_DESCRIPTION,
                                        examples=["WzEsImF1ZGl0IixbMTJdXQ"])] = None
    action: Annotated[str | None, Field(max_length=128, description="Only this action "
                                                                    "(<module>.<handler>).",
                                        examples=["email_users.create"])] = None
    token_id: Annotated[str | None, Field(max_length=128, description="Only events of "
                                                                      "this token.",
                                          examples=["tok_01hzy3k8q7"])] = None
    resource_id: Annotated[str | None, Field(max_length=128, description="Only events "
                                                                         "about this "
                                                                         "object.",
                                             examples=["usr_01hzy3"])] = None
    since: Annotated[Rfc3339 | None, Field(description="At or after this time (RFC 3339).",
                                           examples=["2026-12-01T00:00:00Z"])] = None
    until: Annotated[Rfc3339 | None, Field(description="Before this time (RFC 3339).",
                                           examples=["2026-12-02T00:00:00Z"])] = None


class AuditEventReply(Reply):
    """One recorded write."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EVENT_EXAMPLE]})

    id: Annotated[str, Field(description="The event's id.", examples=["evt_01hzy3"])]
    at: Annotated[str, Field(description="When (RFC 3339).", examples=[TIME_EXAMPLE])]
    account_id: Annotated[str, Field(description="The account acted on.",
                                     examples=["acct_01hzy3k8q6"])]
    actor_account_id: Annotated[str, Field(description="The account whose token acted "
                                                       "(the parent, when acting for a "
                                                       "sub-account).",
                                           examples=["acct_01hzy3k8q6"])]
    token_id: Annotated[str, Field(description="The token used.",
                                   examples=["tok_01hzy3k8q7"])]
    action: Annotated[str, Field(description="<module>.<handler>.",
                                 examples=["email_users.create"])]
    method: Annotated[str, Field(description="The HTTP method.", examples=["POST"])]
    route: Annotated[str, Field(description="The route.", examples=["/v1/email-users"])]
    resource_id: Annotated[str | None, Field(description="The object acted on.",
                                             examples=["usr_01hzy3"])]
    status: Annotated[int, Field(description="The answer's status.", examples=[202])]
    client_addr: Annotated[str | None, Field(description="The client's address.",
                                             examples=["203.0.113.7"])]
    request_id: Annotated[str | None, Field(description="The request's id "
                                                        "(X-Request-Id).",
                                            examples=["8f2c0d9e"])]
    summary: Annotated[dict[str, Any], Field(
        description="The request body with secrets replaced by [redacted], and whether "
                    "it was an idempotent replay.",
        examples=[{"request": {"username": "sarah.chen", "password": "[redacted]"}}])]


class AuditPage(Reply):
    """A page of the audit log, newest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"events": [_EVENT_EXAMPLE], "next_cursor": None, "limit": 50}]})

    events: Annotated[list[AuditEventReply], Field(description="This page.",
                                                   examples=[[_EVENT_EXAMPLE]])]
    next_cursor: Annotated[str | None, Field(description="Pass as cursor for the next "
                                                         "page; null on the last page.",
                                             examples=[None])]
    limit: Annotated[int, Field(description="The page size used.", examples=[50])]
