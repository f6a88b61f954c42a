"""The desired-state model: frozen records read from the store.

Each desired object has ``generation`` (bumped on every change of intent) and
``observed_generation`` (what the backend was last converged to).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

PERMISSIONS = ("read", "write", "admin")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token of an account, with its permissions."""

    token_id: str
    account_id: str
    permissions: frozenset[str]
    domains: frozenset[str] | None = None
    # The account the token belongs to, when acting for a sub-account.
    acting_from: str | None = None
    # Status of the account acted on: a suspended account may read, not write.
    account_status: str = "active"
    # May the account acted on create sub-accounts (the root account always may)?
    reseller: bool = False

    @property
    def actor_account_id(self) -> str:
        """The account whose token made the call (the parent, when acting for a child)."""
        return self.acting_from or self.account_id

    def allows_domain(self, name: str) -> bool:
        """Is the domain (ASCII name) within this token's domain restriction?"""
        return self.domains is None or name in self.domains

    def can(self, permission: str) -> bool:
        if "admin" in self.permissions:
            return True
        if permission == "read":
            return bool(self.permissions & {"read", "write"})
        return permission in self.permissions


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    status: str
    parent_id: str | None
    domain_limit: int
    email_user_limit: int
    created_at: datetime


@dataclass(frozen=True)
class Domain:
    id: str
    account_id: str
    name: str
    unicode_name: str
    status: str
    mail_host: str
    dns_provider: str
    backend_enabled: bool
    deleted: bool
    generation: int
    observed_generation: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    # When the name's public delegation was first found pointing at its provider's
    # nameservers (``mailforge.dns.providers.base.delegation``). Until then the domain is
    # served nowhere: no map, no login, no signing (docs/security.md).
    ownership_verified_at: datetime | None = None


# Slots: a complete state of a large domain holds one per mailbox (issue 11: memory).
@dataclass(frozen=True, slots=True)
class Mailbox:
    id: str
    account_id: str
    # None for a connected mailbox (kind 'connected', issue 12): it has no domain here,
    # which keeps it out of every backend-facing query.
    domain_id: str | None
    local_part: str
    address: str
    name: str
    password_hash: str
    quota_mb: int
    daily_send_limit: int | None
    signature: str
    suspended: bool
    deleted: bool
    status: str
    generation: int
    observed_generation: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    # Set on a deleted mailbox (a tombstone): when, and until when it can be restored.
    deleted_at: datetime | None = None
    purge_after: datetime | None = None
    # 'managed' (mailforge's own mail server) or 'connected' (its own provider's).
    kind: str = "managed"


@dataclass(frozen=True, slots=True)
class Alias:
    id: str
    account_id: str
    domain_id: str
    address: str
    targets: tuple[str, ...]
    deleted: bool
    generation: int
    observed_generation: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Job:
    id: str
    account_id: str
    type: str
    status: str
    progress: int
    message: str
    resource_id: str | None
    total: int
    done: int
    failed: int
    result: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class DomainState:
    """Everything a backend needs to converge one domain: the desired state, whole."""

    domain: Domain
    mailboxes: tuple[Mailbox, ...] = field(default_factory=tuple)
    aliases: tuple[Alias, ...] = field(default_factory=tuple)
    # Names of the domains that are aliases of this one (their mail comes here).
    alias_domains: tuple[str, ...] = field(default_factory=tuple)
    # The owning account is suspended: no mailbox of it may log in or send.
    account_suspended: bool = False
    # True: ``mailboxes`` and ``aliases`` are every object of the domain (tombstones
    # included), so a backend may remove what is not listed. False (a delta): they hold
    # only the objects whose ``observed_generation`` lags their ``generation``; the
    # domain row, ``alias_domains`` and ``account_suspended`` are still whole and
    # unchanged since the backend last converged the domain, and a backend must change
    # only the listed objects (never remove one because it is not listed). The engine
    # sends a delta when only mailboxes or aliases changed, so the cost of a pass
    # follows the change, not the size of the domain (issue 11).
    complete: bool = True

    @property
    def present(self) -> bool:
        """Should the backend serve this domain at all? Not before its name is proven:
        an unproven domain is rendered exactly like an absent one (its mail, if any, is
        neither moved nor destroyed: it is not deleted, only not served yet)."""
        return (self.domain.backend_enabled and not self.domain.deleted
                and self.domain.ownership_verified_at is not None)


def from_record(cls: type[T], rec: Any) -> T:
    """Build a model from a row, ignoring columns the model does not carry."""
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    kwargs = {k: rec[k] for k in names if k in rec}
    if cls is Alias:
        kwargs["targets"] = tuple(kwargs["targets"])
    return cls(**kwargs)
