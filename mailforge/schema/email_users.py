"""Models of the mailbox ("email user") operations: what each request takes and each
answer holds. The field rules are the ones the mail server's maps need
(``mailforge.validation``): a value that passes is stored as the model returns it
(canonical), so no second spelling of a name ever reaches the store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    RootModel,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .. import ids, names, validation
from .base import Body, Chars, Items, Reply
from .common import Page, PageInfo

# ---------------------------------------------------------------------- field types


def _local_part(value: str) -> str:
    return validation.local_part(value)


def _domain_ref(value: str) -> str:
    """A domain id (``dom_...``) as given, or a domain name in canonical form."""
    if value.startswith("dom_"):
        if not ids.has_prefix(value, "dom"):
            raise ValueError("is not a domain id (dom_...) or name")
        return value
    return validation.domain_name(value)


def _display_name(value: str) -> str:
    return validation.display_name(value)


def _password(value: str) -> str:
    # The length bounds are Chars' (from the configuration); the rest is the mail
    # server's: no control characters.
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def _user_id(value: str) -> str:
    if not ids.has_prefix(value, "usr"):
        raise ValueError("must be an email user id (usr_...)")
    return value


# Field types: their rules and bounds. Each field adds its own description and example.
LocalPart = Annotated[str, AfterValidator(_local_part), Field(max_length=64)]
DomainRef = Annotated[str, AfterValidator(_domain_ref), Field(max_length=253)]
DisplayName = Annotated[str, AfterValidator(_display_name), Field(max_length=128)]
Password = Annotated[str, Chars("passwords.min_length", 256), AfterValidator(_password)]
QuotaMb = Annotated[int, Field(ge=1, le=1_048_576)]
UserId = Annotated[str, AfterValidator(_user_id), Field(max_length=64)]

USERNAME = Field(description="The mailbox name before the @: "
                 f"{validation.LOCAL_PART_RULE}. Stored lowercase.", examples=["sarah"])
DOMAIN = ("A domain of the account: its id (dom_...) or its name, in any spelling (case, "
          "trailing dot, Unicode or A-labels).")
NAME = "The display name (no line breaks); null or left out: none."
LOGIN_TEXT = ("The password for IMAP and SMTP; null or left out: one is generated and "
                "shown once, in the answer.")
QUOTA = "Mailbox quota in MiB; null or left out: the server's default."

# Ours and the hosted products' names for them (names.STYLE_ALIASES).
StyleName = Literal[names.ACCEPTED_STYLES]  # type: ignore[valid-type]
Status = Literal["pending", "active", "suspended", "deleting", "deleted", "failed",
                 "connecting"]
# 'managed': a mailbox mailforge created on its mail server; 'connected': an existing
# mailbox on its own provider, connected by SMTP/IMAP credentials (issue 12).
Kind = Literal["managed", "connected"]
Sort = Literal["created_at", "-created_at", "email", "-email", "name", "-name", "status",
               "-status", "updated_at", "-updated_at"]


def unique_items(field: str, key: Callable[[Any], Any]) -> Any:
    """A model validator refusing an item of *field* that repeats an earlier one
    (``users[9].username: u3 is also users[3]``), reported together with every other
    bad field of the request. *key* gives an item's canonical identity from its raw
    value (None: not comparable, reported by its own field rules)."""

    # A function whose first parameter is cls: pydantic makes it a classmethod.
    @model_validator(mode="wrap")
    def check(cls: Any, data: Any, handler: Any) -> Any:
        errors: list[Any] = []
        out = None
        try:
            out = handler(data)
        except ValidationError as exc:
            errors = [{"type": PydanticCustomError(e["type"], "{_msg}",
                                                   {**(e.get("ctx") or {}), "_msg": e["msg"]}),
                       "loc": e["loc"], "input": e.get("input")}
                      for e in exc.errors(include_url=False)]
        items = data.get(field) if isinstance(data, dict) else None
        # A list refused as a whole (too long, too short) is not searched item by item.
        whole = any(tuple(e["loc"]) == (field,) for e in errors)
        if isinstance(items, list) and not whole:
            first: dict[Any, int] = {}
            for n, raw in enumerate(items):
                k = key(raw)
                if k is None:
                    continue
                if k[0] in first:
                    errors.append({"type": PydanticCustomError(
                        "value_error", "{error}",
                        {"error": f"{k[0]} is also {field}[{first[k[0]]}]"}),
                        "loc": (field, n, *k[1]), "input": raw})
                else:
                    first[k[0]] = n
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return out

    return check


def _username_key(raw: Any) -> tuple[str, tuple[str, ...]] | None:
    if not isinstance(raw, dict):
        return None
    try:
        return validation.local_part(raw.get("username")), ("username",)
    except ValueError:
        return None


def _id_key(raw: Any) -> tuple[str, tuple[str, ...]] | None:
    return (raw, ()) if ids.has_prefix(raw, "usr") else None


# ------------------------------------------------------------------------- requests


class EmailUserItem(Body):
    """One mailbox of a bulk creation."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"username": "sarah", "name": "Sarah Chen"}]})
    username: Annotated[LocalPart, USERNAME]
    name: DisplayName | None = Field(default=None, description=NAME, examples=["Sarah Chen"])
    password: Password | None = Field(default=None, description=LOGIN_TEXT,
                                      examples=["correct-horse-battery-staple"])
    quota_mb: QuotaMb | None = Field(default=None, description=QUOTA, examples=[2048])


class NewEmailUser(EmailUserItem):
    """One mailbox on a set-up domain of the account."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"domain": "outreach-acme.com", "username": "sarah", "name": "Sarah Chen"}]})
    domain: Annotated[DomainRef, Field(description=DOMAIN, examples=["outreach-acme.com"])]


class NewEmailUsers(Body):
    """Up to ``limits.bulk_max_items`` mailboxes on one domain, in one job: all or
    none, every item checked before anything is accepted."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"domain": "outreach-acme.com", "users": [{"username": "sarah", "name": "Sarah Chen"},
                                                  {"username": "james",
                                                   "name": "James Rivera"}]}]})
    domain: Annotated[DomainRef, Field(description=DOMAIN, examples=["outreach-acme.com"])]
    users: Annotated[list[EmailUserItem], Items("limits.bulk_max_items", noun="users"),
                     Field(description="The mailboxes; each username once.",
                           examples=[[{"username": "sarah", "name": "Sarah Chen"}]])]
    _unique = unique_items("users", _username_key)


class EmailUserIds(Body):
    """Email users to delete, all or none."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"ids": ["usr_01hzy3k8q6ab", "usr_01hzy3k8q6ac"]}]})
    ids: Annotated[list[UserId], Items("limits.bulk_max_items", noun="ids"),
                   Field(description="Their ids (usr_...), each once.",
                         examples=[["usr_01hzy3k8q6ab"]])]
    _unique = unique_items("ids", _id_key)


def _signature(value: str) -> str:
    if "\0" in value:
        raise ValueError("must not contain NUL")
    return value


class EmailUserChanges(Body):
    """What to change; fields left out (or null, except where said) stay as they are."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Sarah Chen-Lee", "daily_send_limit": 200}]})
    name: DisplayName | None = Field(default=None, description="The display name; null: "
                                     "none.", examples=["Sarah Chen-Lee"])
    password: Password | None = Field(default=None, description="A new password (not "
                                      "together with reset_password); null: unchanged.",
                                      examples=["correct-horse-battery-staple"])
    reset_password: Literal[True] | None = Field(
        default=None, description="true: generate a new password, shown once in the "
        "answer; null: unchanged.", examples=[True])
    quota_mb: QuotaMb | None = Field(default=None, description="Mailbox quota in MiB; "
                                     "null: unchanged.", examples=[4096])
    daily_send_limit: Annotated[int, Field(ge=0, le=1_000_000)] | None = Field(
        default=None, description="Messages per day this mailbox may send through the "
        "API; null: the server's default.", examples=[200])
    signature: Annotated[str, Field(max_length=10_000), AfterValidator(_signature)] | None \
        = Field(default=None, description="Appended to messages sent through the API; "
                "null: unchanged.", examples=["-- \nSarah"])
    status: Literal["active", "suspended"] | None = Field(
        default=None, description="suspended: no login and no sending, mail still "
        "received; active: resume; null: unchanged.", examples=["suspended"])

    @model_validator(mode="after")
    def _consistent(self) -> EmailUserChanges:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        if self.password is not None and self.reset_password:
            raise ValidationError.from_exception_data(type(self).__name__, [{
                "type": PydanticCustomError("value_error", "{error}", {
                    "error": "give either password or reset_password, not both"}),
                "loc": ("password",), "input": None}])
        return self


def _person(value: Any) -> tuple[str, str]:
    return names.parse_person(value)


Person = Annotated[tuple[str, str], PlainValidator(_person), WithJsonSchema({
    "anyOf": [{"type": "string", "maxLength": 128},
              {"type": "object", "additionalProperties": False, "required": ["first"],
               "properties": {"first": {"type": "string", "maxLength": 64},
                              "last": {"type": "string", "maxLength": 64}}}],
    "description": "\"First Last\", or {first, last}.", "examples": ["Sarah Chen"]})]


class GenerateNames(Body):
    """Available usernames, or addresses when domains are given."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"count": 5, "style": "professional"}]})
    count: Annotated[int | None, Field(
        ge=1, le=500, description="How many (default: one per given name, else 10).",
        examples=[5])] = None
    style: Annotated[StyleName, Field(
        description="The username pattern: first.last, first, f.last, firstl, first.l, "
        "flast, first_last, firstlast; mixed (a team's variety); dotted (first.last, "
        "first.l, f.last). professional (the hosted products' name) is dotted.",
        examples=["professional"])] = "mixed"
    names: Annotated[list[Person] | None, Field(
        min_length=1, max_length=500, description="People to name first.",
        examples=[["Sarah Chen", {"first": "James", "last": "Rivera"}]])] = None
    domains: Annotated[list[DomainRef] | None, Field(
        min_length=1, max_length=50, description="Domains of the account: answer "
        "addresses, spread round-robin over them.", examples=[["outreach-acme.com"]])] = None
    per_domain_max: Annotated[int | None, Field(
        ge=1, le=500, description="At most this many per domain (default: the server's "
        "mailboxes.names_per_domain_max).", examples=[5])] = None


class EmailUserFilters(Page):
    """Filters, sort and paging of the mailbox list."""

    domain: Annotated[str | None, Field(
        max_length=253, description="Only this domain's: its id (dom_...) or its name in any "
        "spelling.", examples=["outreach-acme.com"])] = None
    status: Annotated[Status | None, Field(
        description="Only mailboxes in this state (deleted: the restorable tombstones, "
        "otherwise left out).", examples=["active"])] = None
    search: Annotated[str | None, Field(
        max_length=200, description="Part of the address or the name.",
        examples=["sarah"])] = None
    sort: Annotated[Sort, Field(description="Order (a leading - reverses it).",
                                examples=["-created_at"])] = "created_at"
    type: Annotated[Kind | None, Field(
        description="Only created (managed) or only connected mailboxes.",
        examples=["connected"])] = None


# -------------------------------------------------------------------------- answers


class Endpoint(Reply):
    host: Annotated[str, Field(description="Host name.", examples=["mail.example.net"])]
    port: Annotated[int, Field(description="TCP port.", examples=[993])]


_USER_EXAMPLE: dict[str, Any] = {
    "id": "usr_01hzy3k8q6ab", "type": "managed", "email": "sarah@outreach-acme.com",
    "username": "sarah",
    "name": "Sarah Chen", "domain": "outreach-acme.com", "domain_id": "dom_01hzy3k8",
    "status": "active", "quota_mb": 2048, "daily_send_limit": None, "signature": "",
    "last_error": None, "deleted_at": None, "restorable_until": None,
    "imap": {"host": "mail.example.net", "port": 993},
    "smtp": {"host": "mail.example.net", "port": 587},
    "created_at": "2026-12-02T10:00:00Z", "updated_at": "2026-12-02T10:00:00Z"}


class EmailUser(Reply):
    """A mailbox: a real IMAP and SMTP account."""

    model_config = ConfigDict(json_schema_extra={"examples": [_USER_EXAMPLE]})
    id: Annotated[str, Field(description="Its id.", examples=["usr_01hzy3k8q6ab"])]
    type: Annotated[Kind, Field(description="managed (created here) or connected (an "
                                "existing mailbox on its own provider).",
                                examples=["managed"])]
    email: Annotated[str, Field(description="Its address.",
                                examples=["sarah@outreach-acme.com"])]
    username: Annotated[str, Field(description="The local part.", examples=["sarah"])]
    name: Annotated[str, Field(description="The display name.", examples=["Sarah Chen"])]
    domain: Annotated[str, Field(description="The domain's name.",
                                 examples=["outreach-acme.com"])]
    domain_id: Annotated[str | None, Field(description="The domain's id (null for a "
                                           "connected mailbox).",
                                           examples=["dom_01hzy3k8"])]
    status: Annotated[Status, Field(description="pending until the mail server holds it; "
                                    "deleting/deleted after a delete.",
                                    examples=["active"])]
    quota_mb: Annotated[int, Field(description="Quota in MiB.", examples=[2048])]
    daily_send_limit: Annotated[int | None, Field(
        description="Its own daily send limit, or null for the server's.",
        examples=[200])]
    signature: Annotated[str, Field(description="Appended to API sends.", examples=[""])]
    last_error: Annotated[str | None, Field(description="Why the mail server refused it "
                                            "last, if it did.", examples=[None])]
    deleted_at: Annotated[str | None, Field(description="When it was deleted (RFC 3339).",
                                            examples=[None])]
    restorable_until: Annotated[str | None, Field(
        description="Until when a deleted mailbox can be restored with its mail.",
        examples=[None])]
    imap: Annotated[Endpoint, Field(description="Where to read its mail (IMAP).",
                                    examples=[{"host": "mail.example.net", "port": 993}])]
    smtp: Annotated[Endpoint, Field(description="Where to send as it (SMTP submission).",
                                    examples=[{"host": "mail.example.net", "port": 587}])]
    created_at: Annotated[str, Field(description="RFC 3339.",
                                     examples=["2026-12-02T10:00:00Z"])]
    updated_at: Annotated[str, Field(description="RFC 3339.",
                                     examples=["2026-12-02T10:00:00Z"])]


class EmailUserChanged(EmailUser):
    """The mailbox after the change, and the job that brings it to the mail server."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**_USER_EXAMPLE, "job_id": "job_01hzy3k8q6ab"}]})

    job_id: Annotated[str | None, Field(description="The job, or null when the mail "
                                        "server need not see the change.",
                                        examples=["job_01hzy3k8q6ab"])]
    password: Annotated[str | None, Field(description="The generated password "
                                          "(reset_password), shown only here.",
                                          examples=["s3cr3t-generated"])] = None


class EmailUserPage(PageInfo):
    """A page of mailboxes."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "users": [_USER_EXAMPLE], "total": 1, "limit": 50, "offset": 0}]})

    users: Annotated[list[EmailUser], Field(description="The mailboxes of this page.",
                                            examples=[[]])]


class JobRef(Reply):
    job_id: Annotated[str, Field(description="The job to follow (GET /v1/jobs/{id}).",
                                 examples=["job_01hzy3k8q6ab"])]
    status: Annotated[Literal["pending"], Field(description="Always pending here.",
                                                examples=["pending"])]
    recovered: Annotated[bool | None, Field(
        description="True when this answers a retry of a request whose first attempt "
        "died after committing (Idempotency-Key).", examples=[None])] = None
    resource_id: Annotated[str | None, Field(description="In a recovered answer: the "
                                             "object the job is about.",
                                             examples=[None])] = None


class EmailUserCreated(JobRef):
    """Accepted: the mailbox exists and is being set up on the mail server."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "job_m1", "status": "pending", "id": "usr_01hzy3k8q6ab",
        "email": "sarah@outreach-acme.com", "username": "sarah"}]})
    id: Annotated[str, Field(description="The new mailbox's id.",
                             examples=["usr_01hzy3k8q6ab"])]
    email: Annotated[str | None, Field(description="Its address.",
                                       examples=["sarah@outreach-acme.com"])] = None
    username: Annotated[str | None, Field(description="Its local part.",
                                          examples=["sarah"])] = None
    password: Annotated[str | None, Field(description="The generated password, shown only "
                                          "here (when none was given).",
                                          examples=["s3cr3t-generated"])] = None


class CreatedUser(Reply):
    id: Annotated[str, Field(description="The mailbox's id.", examples=["usr_01hzy3k8q6ab"])]
    email: Annotated[str, Field(description="Its address.",
                                examples=["sarah@outreach-acme.com"])]
    username: Annotated[str, Field(description="Its local part.", examples=["sarah"])]


class EmailUsersCreated(JobRef):
    """Accepted: the mailboxes exist and are being set up; generated passwords are in
    the job (GET /v1/jobs/{id}) for a while."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "job_bulk_01", "users_count": 1, "status": "pending",
        "users": [{"id": "usr_01hzy3k8q6ab", "email": "sarah@outreach-acme.com",
                   "username": "sarah"}]}]})
    users_count: Annotated[int, Field(description="How many were created.", examples=[5])]
    users: Annotated[list[CreatedUser] | None, Field(
        description="The created mailboxes, in request order.", examples=[[]])] = None


class EmailUsersDeleted(JobRef):
    """Accepted: the mailboxes are being deleted (restorable during retention)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "job_01hzy3k8q6ab", "status": "pending", "users_count": 2}]})
    users_count: Annotated[int, Field(description="How many.", examples=[2])]


class EmailUserDeleted(JobRef):
    """Accepted: the mailbox is being deleted (restorable during retention)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "job_01hzy3k8q6ab", "status": "pending", "id": "usr_01hzy3k8q6ab"}]})
    id: Annotated[str, Field(description="The mailbox's id.", examples=["usr_01hzy3k8q6ab"])]


class EmailUserRestored(EmailUserDeleted):
    """Accepted: the mailbox is coming back with its mail."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "job_01hzy3k8q6ab", "status": "pending", "id": "usr_01hzy3k8q6ab",
        "email": "sarah@outreach-acme.com"}]})
    email: Annotated[str, Field(description="Its address.",
                                examples=["sarah@outreach-acme.com"])]


class GeneratedNames(RootModel[list[str]]):
    """Available usernames (or addresses), e.g. ["sarah.chen", "james.r"]."""

    model_config = ConfigDict(json_schema_extra={"examples": [["sarah.chen", "james.r"]]})


__all__ = ["DomainRef", "EmailUser", "EmailUserChanged", "EmailUserChanges", "EmailUserCreated",
           "EmailUserDeleted", "EmailUserFilters", "EmailUserIds", "EmailUserPage",
           "EmailUserRestored", "EmailUsersCreated", "EmailUsersDeleted", "GenerateNames",
           "GeneratedNames", "LocalPart", "NewEmailUser", "NewEmailUsers", "unique_items"]
