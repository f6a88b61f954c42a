"""The mail backend interface: what the reconcile engine needs of a mail server.

A backend converges whole domains: it is handed the complete desired state of each
domain it must touch (``DomainState``) and makes the server match it, idempotently.
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
        """Converge the server to *states* (each the whole desired state of one domain)."""

    async def health(self) -> dict[str, Any]:
        """Cheap liveness facts for the health endpoint."""


def load_backend(cfg: Config) -> MailBackend:
    """Instantiate the configured backend, registered as a ``mailforge.backends`` entry point."""
    found = {ep.name: ep for ep in entry_points(group="mailforge.backends")}
    if cfg.backend.type not in found:
        raise LookupError(f"no backend plugin named {cfg.backend.type!r} "
                          f"(installed: {', '.join(sorted(found)) or 'none'})")
    cls = found[cfg.backend.type].load()
    backend: MailBackend = cls.from_config(cfg)
    return backend
