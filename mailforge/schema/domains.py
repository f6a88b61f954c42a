"""Requests and answers of the domain and DNS operations: connect, set up, list, read,
delete, dns-status, check-ns, DKIM rotation."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field

from .base import Body, Query, Reply
from .common import Page, PageInfo

# At most this many names in one connect (all or none).
MAX_CONNECT = 100

DOMAIN_ID = "dom_01hzy3k8q6r2t5v7w9x1b3c5d7"
JOB_ID = "job_01hzy3m2p4r6t8v0x2z4b6d8f0"
TIME = "2026-12-02T12:00:00Z"

DomainStatus = Literal["pending", "provisioning", "active", "failed", "deleting"]
ReputationStatus = Literal["healthy", "watch", "blocked"]


# --------------------------------------------------------------------------- requests


class ConnectDomains(Body):
    """Domains to connect, all or none."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"domains": ["outreach-acme.com", "mail-acme.com"]},
        {"domains": ["outreach-acme.com"], "dns_provider": "cloudflare",
         "cloudflare_api_token": "cf_token_..."}]})
    domains: Annotated[list[str], Field(
        min_length=1, max_length=MAX_CONNECT,
        description="Domain names (Unicode or A-labels, any case, trailing dot allowed); "
                    "each is stored in its canonical form. A name at, under or above a "
                    "domain of another account, or of this mail host, is refused.",
        examples=[["outreach-acme.com", "mail-acme.com"]])]
    dns_provider: Annotated[str | None, Field(
        max_length=64,
        description="The DNS provider that publishes the domain's records: one of the "
                    "providers configured on this server (dns.providers); the configured "
                    "default when absent.",
        examples=["powerdns"])] = None
    cloudflare_api_token: Annotated[str | None, Field(
        min_length=1, max_length=200,
        description="A Cloudflare API token that may edit the domain's zone (only with "
                    "dns_provider cloudflare); stored sealed, never shown again.",
        examples=["cf_token_..."])] = None


class DomainRef(Body):
    """A domain named by id or by name."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"domain": "outreach-acme.com"}, {"domain": DOMAIN_ID}]})
    domain: Annotated[str, Field(
        min_length=1, max_length=300,
        description="The domain's id (dom_...) or its name in any spelling.",
        examples=["outreach-acme.com"])]


class DomainPage(Page):
    """Paging of the domain list."""


class ServedDomain(Query):
    """The domain a public answer (MTA-STS policy, autoconfig) is for, when the Host
    header does not name it."""

    domain: Annotated[str | None, Field(
        max_length=300,
        description="The domain, when the request's Host is not mta-sts.<domain> or "
                    "autoconfig.<domain>.", examples=["outreach-acme.com"])] = None


# ---------------------------------------------------------------------------- answers


class Reputation(Reply):
    """The domain's sending reputation over the window: counts, rates and status."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "healthy", "window_days": 30, "sent": 1200, "bounces": 6,
        "complaints": 0, "bounce_rate": 0.005, "complaint_rate": 0.0}]})
    status: Annotated[ReputationStatus, Field(
        description="healthy; watch (rates above the watch thresholds); blocked (new "
                    "mailboxes, aliases and API sends are refused with 409 "
                    "domain_reputation_blocked).", examples=["healthy"])]
    window_days: Annotated[int, Field(description="The window counted, in days.",
                                      examples=[30])]
    sent: Annotated[int, Field(description="Messages sent from the domain in the window.",
                               examples=[1200])]
    bounces: Annotated[int, Field(description="Bounces about messages it sent, in the "
                                              "window.", examples=[6])]
    complaints: Annotated[int, Field(description="Complaints (feedback reports) about "
                                                 "messages it sent, in the window.",
                                     examples=[0])]
    bounce_rate: Annotated[float, Field(description="Bounces per message sent (over at "
                                                    "least the minimum volume).",
                                        examples=[0.005])]
    complaint_rate: Annotated[float, Field(description="Complaints per message sent (over "
                                                       "at least the minimum volume).",
                                           examples=[0.0])]


_DOMAIN_EXAMPLE: dict[str, Any] = {
    "id": DOMAIN_ID, "name": "outreach-acme.com", "unicode_name": "outreach-acme.com",
    "status": "active", "dns_provider": "powerdns", "mail_host": "default",
    "last_error": None, "ownership_verified": True, "created_at": TIME, "updated_at": TIME}
_REPUTATION_EXAMPLE: dict[str, Any] = {
    "status": "healthy", "window_days": 30, "sent": 1200, "bounces": 6, "complaints": 0,
    "bounce_rate": 0.005, "complaint_rate": 0.0}


class DomainFields(Reply):
    """A domain."""

    id: Annotated[str, Field(description="The domain's id.", examples=[DOMAIN_ID])]
    name: Annotated[str, Field(description="The canonical name (A-labels, lower case).",
                               examples=["outreach-acme.com"])]
    unicode_name: Annotated[str, Field(description="The name in Unicode.",
                                       examples=["outreach-acme.com"])]
    status: Annotated[DomainStatus, Field(
        description="pending (connected), provisioning (being set up), active (records "
                    "verified, serving mail), failed (see last_error), deleting.",
        examples=["active"])]
    dns_provider: Annotated[str, Field(description="The provider publishing its records.",
                                       examples=["powerdns"])]
    mail_host: Annotated[str, Field(description="The mail host that serves it.",
                                    examples=["default"])]
    last_error: Annotated[str | None, Field(
        description="Why the last attempt did not converge; null when it did.",
        examples=[None])]
    ownership_verified: Annotated[bool, Field(
        description="Whether the name's public delegation was found pointing at its "
                    "provider; until then the domain receives no mail and nothing is "
                    "signed for it.", examples=[True])]
    created_at: Annotated[datetime, Field(description="When it was connected.",
                                          examples=[TIME])]
    updated_at: Annotated[datetime, Field(description="When it last changed.",
                                          examples=[TIME])]


class Domain(DomainFields):
    """A domain with its sending reputation."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**_DOMAIN_EXAMPLE, "reputation": _REPUTATION_EXAMPLE}]})
    reputation: Annotated[Reputation, Field(description="Its sending reputation.",
                                            examples=[_REPUTATION_EXAMPLE])]


class ConnectedDomain(DomainFields):
    """A domain just connected, with the nameservers to delegate it to."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {**_DOMAIN_EXAMPLE, "status": "pending", "ownership_verified": False,
         "nameservers": ["ns1.example.net.", "ns2.example.net."]}]})
    nameservers: Annotated[list[str], Field(
        description="Delegate the domain to these nameservers at its registrar (empty "
                    "when the provider hosts no zones, or was unreachable: setup retries).",
        examples=[["ns1.example.net.", "ns2.example.net."]])]


class Connected(Reply):
    """The connected domains."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"domains": [
        {**_DOMAIN_EXAMPLE, "status": "pending", "ownership_verified": False,
         "nameservers": ["ns1.example.net.", "ns2.example.net."]}]}]})
    domains: Annotated[list[ConnectedDomain], Field(
        description="In request order.",
        examples=[[{**_DOMAIN_EXAMPLE, "status": "pending", "ownership_verified": False,
                    "nameservers": ["ns1.example.net.", "ns2.example.net."]}]])]


class DomainList(PageInfo):
    """A page of the account's domains, oldest first, each with its reputation."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "domains": [{**_DOMAIN_EXAMPLE, "reputation": _REPUTATION_EXAMPLE}], "total": 1,
        "limit": 50, "offset": 0, "next_cursor": None}]})
    domains: Annotated[list[Domain], Field(
        description="The domains of this page.",
        examples=[[{**_DOMAIN_EXAMPLE, "reputation": _REPUTATION_EXAMPLE}]])]


class DomainJob(Reply):
    """The job that carries the change out (poll GET /v1/jobs/{id})."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"job_id": JOB_ID, "status": "pending", "domain_id": DOMAIN_ID}]})
    job_id: Annotated[str, Field(description="The job's id.", examples=[JOB_ID])]
    status: Annotated[str, Field(description="The job's status (pending at first).",
                                 examples=["pending"])]
    domain_id: Annotated[str, Field(description="The domain it is about.",
                                    examples=[DOMAIN_ID])]


class RecordStatus(Reply):
    """One record mailforge expects, checked at the authoritative servers."""

    name: Annotated[str, Field(description="Owner name (fully qualified).",
                               examples=["outreach-acme.com."])]
    type: Annotated[str, Field(description="Record type.", examples=["MX"])]
    purpose: Annotated[str, Field(description="Why it is wanted (mx, spf, dmarc, "
                                              "dkim:<selector>, ...).", examples=["mx"])]
    required: Annotated[bool, Field(description="Whether the domain needs it to be "
                                                "active.", examples=[True])]
    status: Annotated[Literal["ok", "missing", "mismatch"], Field(
        description="ok (found as expected), missing, or mismatch (other content).",
        examples=["ok"])]
    expected: Annotated[str, Field(description="The content mailforge wants.",
                                   examples=["10 mail.example.net."])]
    found: Annotated[list[str], Field(description="What the servers answered.",
                                      examples=[["10 mail.example.net."]])]
    error: Annotated[str | None, Field(
        description="Why nothing could be checked (the provider was unreachable); only "
                    "on the first record.", examples=["provider unavailable"])] = None
    conflict: Annotated[bool | None, Field(
        description="true: the operator's own record of this kind is there; it stays "
                    "theirs, reported but not blocking.", examples=[True])] = None


class DnsStatus(Reply):
    """The records expected for the domain, checked live against its authoritative
    servers."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "domain": "outreach-acme.com", "domain_id": DOMAIN_ID, "verified": True,
        "provider": "powerdns", "conflicts": [],
        "records": [{"name": "outreach-acme.com.", "type": "MX", "purpose": "mx",
                     "required": True, "status": "ok", "expected": "10 mail.example.net.",
                     "found": ["10 mail.example.net."]}]}]})
    domain: Annotated[str, Field(description="The domain's name.",
                                 examples=["outreach-acme.com"])]
    domain_id: Annotated[str, Field(description="The domain's id.", examples=[DOMAIN_ID])]
    verified: Annotated[bool, Field(description="Every required record verified (a "
                                                "conflict left to the operator counts as "
                                                "verified).", examples=[True])]
    provider: Annotated[str, Field(description="The domain's DNS provider.",
                                   examples=["powerdns"])]
    records: Annotated[list[RecordStatus], Field(
        description="Each expected record.",
        examples=[[{"name": "outreach-acme.com.", "type": "MX", "purpose": "mx",
                    "required": True, "status": "ok", "expected": "10 mail.example.net.",
                    "found": ["10 mail.example.net."]}]])]
    conflicts: Annotated[list[str], Field(
        description="Records of the operator's that mailforge left alone (last setup).",
        examples=[[]])]


class NsCheck(Reply):
    """The domain's delegation as found, and what a verified one started."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "verified": True, "nameservers": ["ns1.example.net.", "ns2.example.net."],
        "expected": ["ns1.example.net.", "ns2.example.net."],
        "message": "Nameservers verified. Domain queued for provisioning.",
        "setup_job_id": JOB_ID}]})
    verified: Annotated[bool, Field(description="The public delegation points at the "
                                                "provider's nameservers.",
                                    examples=[True])]
    nameservers: Annotated[list[str], Field(description="The nameservers found.",
                                            examples=[["ns1.example.net."]])]
    expected: Annotated[list[str], Field(description="The nameservers to delegate to.",
                                         examples=[["ns1.example.net."]])] = []
    message: Annotated[str, Field(description="What to do next, or what happened.",
                                  examples=["Nameservers verified."])]
    setup_job_id: Annotated[str | None, Field(
        description="When the check verified a domain not yet set up, the setup it "
                    "queued (its job); null otherwise.", examples=[JOB_ID])] = None
