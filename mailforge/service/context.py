"""What every service function can reach: the store, the configuration, the secret box,
the password hashers and (when configured) mail through the API."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import password
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
    # Password hashing is CPU work; it runs off the event loop (in processes: see
    # daemon._hashers).
    hashers: Executor
    # TEST ONLY: points where the process kills itself with SIGKILL
    # (service/idempotency.py crash_point), from MAILFORGE_TEST_CRASH_AFTER at start-up;
    # empty in production.
    crash_points: frozenset[str] = field(default_factory=frozenset)
    # Mail through the API (send, read); None when not configured on this server.
    mail: MailService | None = None

    async def hash_passwords(self, passwords: list[str]) -> list[str]:
        loop = asyncio.get_running_loop()
        scheme = self.cfg.passwords.scheme
        futs = [loop.run_in_executor(self.hashers, password.hash_password, p, scheme)
                for p in passwords]
        return list(await asyncio.gather(*futs))
