"""What every service function can reach: the store, the configuration, the secret box
and (when configured) mail through the API. Passwords are not hashed here: a request
seals them for the reconcile pass to hash (``pending_passwords``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Config
from ..secretbox import SecretBox
from ..store.store import Store

if TYPE_CHECKING:
    from ..mail.service import MailService


@dataclass
class ServiceContext:
    cfg: Config
    store: Store
    box: SecretBox
    # TEST ONLY: points where the process kills itself with SIGKILL
    # (service/idempotency.py crash_point), from MAILFORGE_TEST_CRASH_AFTER at start-up;
    # empty in production.
    crash_points: frozenset[str] = field(default_factory=frozenset)
    # Mail through the API (send, read); None when not configured on this server.
    mail: MailService | None = None
