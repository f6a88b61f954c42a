"""The mail backend interface: what the reconcile engine needs of a mail server.

A backend converges domains: it is handed the desired state of each domain it must
touch (``DomainState``) and makes the server match it, idempotently. A plain backend
always gets complete states; one that also implements ``DeltaBackend`` gets deltas
(only the lagging mailboxes and aliases, ``DomainState.complete`` False) when nothing
domain-wide changed, so a pass costs what changed, not the size of the domain.
Handing it a batch lets a backend apply many changes with one reload (Postfix maps
rebuilt once for 500 new mailboxes, not 500 times). The Postfix + Dovecot backend
renders files; a mailcow backend will diff against mailcow's API. Failures are
raised or returned as ``TemporaryError`` / ``PermanentError`` (``mailforge.errors``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from ..config import Config
from ..errors import ReconcileError
from ..models import DomainState


@dataclass(frozen=True)
class ApplyResult:
    # Domains the backend could not converge, by domain id.
    domain_errors: dict[str, ReconcileError] = field(default_factory=dict)
    # Mailboxes refused individually (the rest of their domain converged), by id.
    mailbox_errors: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class MailBackend(Protocol):
    name: str

    async def prepare(self) -> None:
        """Make the backend ready (directories, empty maps); safe to call on every start."""

    async def apply(self, states: Sequence[DomainState]) -> ApplyResult:
        """Converge the server to *states* (each the desired state of one domain:
        complete, or a delta only for a backend that implements ``DeltaBackend``)."""

    async def health(self) -> dict[str, Any]:
        """Cheap liveness facts for the health endpoint."""


@runtime_checkable
class DeltaBackend(Protocol):
    """Optional: a backend with this method accepts deltas (see ``DomainState.complete``)."""

    def needs_complete(self, domain_names: Sequence[str]) -> bool:
        """Must the domains *domain_names* (ASCII names), about to be handed as deltas,
        be handed complete instead (e.g. the backend does not hold them)? Called on the
        event loop once per pass: answer from memory, quickly."""


@runtime_checkable
class ResyncingBackend(Protocol):
    """Optional: a backend that may need every domain of the host handed to it complete
    once (its tables were rebuilt, e.g. after an upgrade from another table format).
    The engine asks at start: when ``full_resync_pending()`` is true it marks every
    domain of the host for a complete pass (in the store, committed), then calls
    ``full_resync_queued()``, after which the backend stops reporting it (a crash
    between the two marks them again: harmless). Once no domain of the host waits for
    its complete pass any more, the engine calls ``full_resync_done()``: the backend
    now holds every domain (the Postfix backend records its tables as current)."""

    def full_resync_pending(self) -> bool: ...

    def full_resync_queued(self) -> None: ...

    async def full_resync_done(self) -> None: ...


def load_backend(cfg: Config) -> MailBackend:
    """Instantiate the configured backend, registered as a ``mailforge.backends`` entry point."""
    found = {ep.name: ep for ep in entry_points(group="mailforge.backends")}
    if cfg.backend.type not in found:
        raise LookupError(f"no backend plugin named {cfg.backend.type!r} "
                          f"(installed: {', '.join(sorted(found)) or 'none'})")
    cls = found[cfg.backend.type].load()
    backend: MailBackend = cls.from_config(cfg)
    return backend
