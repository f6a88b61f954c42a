"""In-memory stand-ins for what the engine drives: a mail backend and a domain step.

``FakeBackend`` implements the ``MailBackend`` Protocol (mailforge/backends/base.py) the
way the real one behaves where the engine can tell: it converges each domain to the
whole desired state it is handed (idempotently: applying the same state twice leaves
the same server), serves a domain only while ``DomainState.present``, and reports
failures per domain or per mailbox. Tests script its failures and can run code while
an apply is in flight (to change intent meanwhile, or to simulate a crash).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailforge.backends.base import ApplyResult
from mailforge.errors import ReconcileError
from mailforge.models import DomainState


@dataclass(frozen=True)
class Served:
    """What the fake mail server holds for one domain."""

    mailboxes: dict[str, tuple[str, bool]]  # address -> (password hash, may log in)
    aliases: dict[str, tuple[str, ...]]  # address -> targets
    alias_domains: tuple[str, ...]


@dataclass
class FakeBackend:
    name: str = "fake"
    # Domain name -> what the server holds; a domain not served is absent.
    served: dict[str, Served] = field(default_factory=dict)
    # Every batch handed to apply(), in order (the domain names of each).
    batches: list[list[str]] = field(default_factory=list)
    # Domain name -> errors the next applies of that domain fail with, in order.
    domain_failures: dict[str, deque[ReconcileError]] = field(default_factory=dict)
    # Mailbox address -> error: refused individually, every time, while listed.
    mailbox_failures: dict[str, str] = field(default_factory=dict)
    # Raised by apply() itself (a backend bug or a fault outside any one domain).
    raise_on_apply: BaseException | None = None
    # Awaited inside apply() after the server changed, before apply() returns.
    during_apply: Callable[[Sequence[DomainState]], Awaitable[None]] | None = None
    prepared: bool = False
    # Every batch handed to apply(), the states themselves.
    states: list[list[DomainState]] = field(default_factory=list)

    def fail_next(self, domain_name: str, *errors: ReconcileError) -> None:
        self.domain_failures.setdefault(domain_name, deque()).extend(errors)

    def applied(self, domain_name: str) -> int:
        """How many batches carried this domain."""
        return sum(domain_name in b for b in self.batches)

    async def prepare(self) -> None:
        self.prepared = True

    async def apply(self, states: Sequence[DomainState]) -> ApplyResult:
        self.batches.append([s.domain.name for s in states])
        self.states.append(list(states))
        if self.raise_on_apply is not None:
            raise self.raise_on_apply
        domain_errors: dict[str, ReconcileError] = {}
        mailbox_errors: dict[str, str] = {}
        for st in states:
            pending = self.domain_failures.get(st.domain.name)
            if pending:
                domain_errors[st.domain.id] = pending.popleft()
                continue
            if not st.present:
                self.served.pop(st.domain.name, None)
                continue
            old = self.served.get(st.domain.name)
            if not st.complete and old is None:
                raise AssertionError(f"a delta for {st.domain.name}, which is not held")
            # A delta changes only what it lists; a complete state replaces the domain.
            mbs: dict[str, tuple[str, bool]] = (
                {} if st.complete or old is None else dict(old.mailboxes))
            als: dict[str, tuple[str, ...]] = (
                {} if st.complete or old is None else dict(old.aliases))
            for m in st.mailboxes:
                mbs.pop(m.address, None)
                if m.deleted:
                    continue
                if m.address in self.mailbox_failures:
                    mailbox_errors[m.id] = self.mailbox_failures[m.address]
                    continue
                mbs[m.address] = (m.password_hash,
                                  not (m.suspended or st.account_suspended))
            for a in st.aliases:
                als.pop(a.address, None)
                if not a.deleted:
                    als[a.address] = a.targets
            self.served[st.domain.name] = Served(
                mailboxes=mbs, aliases=als, alias_domains=st.alias_domains)
        if self.during_apply is not None:
            await self.during_apply(states)
        return ApplyResult(domain_errors=domain_errors, mailbox_errors=mailbox_errors)

    async def health(self) -> dict[str, Any]:
        return {"backend": self.name, "domains": len(self.served)}


@dataclass
class DeltaFakeBackend(FakeBackend):
    """A ``FakeBackend`` that also takes deltas (``backends.base.DeltaBackend``) and can
    ask for complete states or a full resync, as scripted."""

    complete_for: set[str] = field(default_factory=set)
    asked: list[list[str]] = field(default_factory=list)
    resync: bool = False
    resync_done: int = 0

    def needs_complete(self, domain_names: Sequence[str]) -> bool:
        self.asked.append(list(domain_names))
        return bool(self.complete_for & set(domain_names))

    def full_resync_pending(self) -> bool:
        return self.resync

    def full_resync_queued(self) -> None:
        self.resync = False

    async def full_resync_done(self) -> None:
        self.resync_done += 1


@dataclass
class FakeStep:
    """A domain step (``engine.DomainStep``), e.g. in place of the DNS step: records the
    states it saw, fails as scripted."""

    name: str = "fake-step"
    seen: list[str] = field(default_factory=list)
    failures: dict[str, deque[BaseException]] = field(default_factory=dict)

    def fail_next(self, domain_name: str, *errors: BaseException) -> None:
        self.failures.setdefault(domain_name, deque()).extend(errors)

    async def converge(self, state: DomainState) -> None:
        self.seen.append(state.domain.name)
        pending = self.failures.get(state.domain.name)
        if pending:
            raise pending.popleft()
