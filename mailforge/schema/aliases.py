"""Models of the alias operations: forwards, catch-alls and alias domains."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from .. import validation
from .base import Body, Reply
from .common import Page, PageInfo
from .email_users import DOMAIN, DomainRef, unique_items

MAX_TARGETS = 50


def _alias_name(value: str) -> str:
    if value == "*":
        return ""  # a catch-all: "@domain"
    try:
        return validation.local_part(value)
    except ValueError as exc:
        raise ValueError(f'{exc} (or "*" for a catch-all)') from None


def _target(value: str) -> str:
    local, dom = validation.email_address(value)
    return f"{local}@{dom}"


def _target_key(raw: Any) -> tuple[str, tuple[str, ...]] | None:
    try:
        return _target(raw), ()
    except ValueError:
        return None


Target = Annotated[str, AfterValidator(_target), Field(max_length=320)]
Targets = Annotated[list[Target], Field(min_length=1, max_length=MAX_TARGETS), Field(
    description=f"1 to {MAX_TARGETS} addresses (here or elsewhere), each once; stored in "
    "canonical form.", examples=[["sarah@outreach-acme.com", "team@elsewhere.example"]])]


class NewAlias(Body):
    """A forward from an address of a set-up domain of the account."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"domain": "outreach-acme.com", "username": "sales",
         "targets": ["sarah@outreach-acme.com"]}]})
    domain: Annotated[DomainRef, Field(description=DOMAIN, examples=["outreach-acme.com"])]
    username: Annotated[str, Field(max_length=64), AfterValidator(_alias_name), Field(
        description=f"The alias name before the @ ({validation.LOCAL_PART_RULE}), or \"*\" "
        "for a catch-all (a real mailbox always wins over it).", examples=["sales"])]
    targets: Targets
    _unique = unique_items("targets", _target_key)


class AliasTargets(Body):
    """The alias's new targets, replacing the old ones."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"targets": ["sarah@outreach-acme.com", "james@outreach-acme.com"]}]})
    targets: Targets
    _unique = unique_items("targets", _target_key)


class AliasDomain(Body):
    """Make *domain* an alias of *target*: mail to any mailbox name at *domain* goes to
    the same name at *target*, whose mailboxes may also send as it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"domain": "acme-mail.com", "target": "outreach-acme.com"}]})
    domain: Annotated[DomainRef, Field(
        description="The alias domain (id or name); needs its own setup (MX) to receive "
        "mail.", examples=["acme-mail.com"])]
    target: Annotated[DomainRef, Field(description="The domain whose mailboxes receive "
                                       "(id or name).", examples=["outreach-acme.com"])]


class AliasFilters(Page):
    """Filters and paging of the alias list (ordered by address)."""

    domain: Annotated[str | None, Field(
        max_length=253, description="Only this domain's: its id (dom_...) or its name in any "
        "spelling.", examples=["outreach-acme.com"])] = None
    search: Annotated[str | None, Field(
        max_length=200, description="Part of the address or of a target.",
        examples=["sales"])] = None


# -------------------------------------------------------------------------- answers

_ALIAS_EXAMPLE: dict[str, Any] = {
    "id": "ali_01hzy3k8q6ab", "address": "sales@outreach-acme.com",
    "domain": "outreach-acme.com", "domain_id": "dom_01hzy3k8", "catch_all": False,
    "targets": ["sarah@outreach-acme.com"], "status": "active", "last_error": None,
    "created_at": "2026-12-02T10:00:00Z", "updated_at": "2026-12-02T10:00:00Z"}


class Alias(Reply):
    """An alias."""

    model_config = ConfigDict(json_schema_extra={"examples": [_ALIAS_EXAMPLE]})
    id: Annotated[str, Field(description="Its id.", examples=["ali_01hzy3k8q6ab"])]
    address: Annotated[str, Field(description="The address it forwards (@domain for a "
                                  "catch-all).", examples=["sales@outreach-acme.com"])]
    domain: Annotated[str, Field(description="The domain's name.",
                                 examples=["outreach-acme.com"])]
    domain_id: Annotated[str, Field(description="The domain's id.",
                                    examples=["dom_01hzy3k8"])]
    catch_all: Annotated[bool, Field(description="Whether it takes every unknown name of "
                                     "the domain.", examples=[False])]
    targets: Annotated[list[str], Field(description="Where mail goes.",
                                        examples=[["sarah@outreach-acme.com"]])]
    status: Annotated[Literal["pending", "active"], Field(
        description="active once the mail server holds the current targets.",
        examples=["active"])]
    last_error: Annotated[str | None, Field(description="Why the mail server refused it "
                                            "last, if it did.", examples=[None])]
    created_at: Annotated[str, Field(description="RFC 3339.",
                                     examples=["2026-12-02T10:00:00Z"])]
    updated_at: Annotated[str, Field(description="RFC 3339.",
                                     examples=["2026-12-02T10:00:00Z"])]


class AliasChanged(Alias):
    """Accepted: the alias as it now is, and the job that brings it to the mail server."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**_ALIAS_EXAMPLE, "status": "pending", "job_id": "job_01hzy3k8q6ab"}]})
    job_id: Annotated[str, Field(description="The job to follow.",
                                 examples=["job_01hzy3k8q6ab"])]
    recovered: Annotated[bool | None, Field(
        description="True when this answers a retry of a request whose first attempt "
        "died after committing (Idempotency-Key).", examples=[None])] = None


class AliasPage(PageInfo):
    """A page of aliases."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "aliases": [_ALIAS_EXAMPLE], "total": 1, "limit": 50, "offset": 0,
        "next_cursor": None}]})

    aliases: Annotated[list[Alias], Field(description="The aliases of this page.",
                                             examples=[[_ALIAS_EXAMPLE]])]


class AliasDeleted(Reply):
    """Accepted: the alias is being removed."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"job_id": "job_01hzy3k8q6ab", "status": "pending", "id": "ali_01hzy3k8q6ab"}]})
    job_id: Annotated[str, Field(description="The job to follow.",
                                 examples=["job_01hzy3k8q6ab"])]
    status: Annotated[Literal["pending"], Field(description="Always pending here.",
                                                examples=["pending"])]
    id: Annotated[str, Field(description="The alias's id.", examples=["ali_01hzy3k8q6ab"])]


class AliasDomainSet(Reply):
    """Accepted: both domains' mail server state is being changed."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"job_id": "job_01hzy3k8q6ab", "status": "pending", "domain": "acme-mail.com",
         "target": "outreach-acme.com"}]})
    job_id: Annotated[str, Field(description="The job to follow.",
                                 examples=["job_01hzy3k8q6ab"])]
    status: Annotated[Literal["pending"], Field(description="Always pending here.",
                                                examples=["pending"])]
    domain: Annotated[str | None, Field(description="The alias domain's name.",
                                        examples=["acme-mail.com"])] = None
    target: Annotated[str | None, Field(description="The target domain's name.",
                                        examples=["outreach-acme.com"])] = None


class AliasDomainOut(Reply):
    domain_id: Annotated[str, Field(description="The alias domain's id.",
                                    examples=["dom_01hzy3k9"])]
    domain: Annotated[str, Field(description="The alias domain's name.",
                                 examples=["acme-mail.com"])]
    target_id: Annotated[str, Field(description="The target domain's id.",
                                    examples=["dom_01hzy3k8"])]
    target: Annotated[str, Field(description="The target domain's name.",
                                 examples=["outreach-acme.com"])]


class AliasDomains(Reply):
    """The account's alias domains (within the token's domain restriction)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"alias_domains": [
        {"domain_id": "dom_01hzy3k9", "domain": "acme-mail.com",
         "target_id": "dom_01hzy3k8", "target": "outreach-acme.com"}]}]})
    alias_domains: Annotated[list[AliasDomainOut], Field(
        description="Each alias domain and its target.", examples=[[]])]


__all__ = [
    "MAX_TARGETS",
    "Alias",
    "AliasChanged",
    "AliasDeleted",
    "AliasDomain",
    "AliasDomainSet",
    "AliasDomains",
    "AliasFilters",
    "AliasPage",
    "AliasTargets",
    "NewAlias",
]
