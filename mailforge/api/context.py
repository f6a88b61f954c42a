"""What every API handler can reach: the store, the configuration, the secret box."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from .. import password
from ..config import Config
from ..secretbox import SecretBox
from ..store.store import Store


@dataclass
class ApiContext:
    cfg: Config
    store: Store
    box: SecretBox
    # Password hashing is CPU work; it runs off the event loop.
    hashers: ThreadPoolExecutor
    # TEST ONLY: points where the process kills itself with SIGKILL (api/idempotency.py
    # crash_point), from MAILFORGE_TEST_CRASH_AFTER at start-up; empty in production.
    crash_points: frozenset[str] = field(default_factory=frozenset)

    async def hash_passwords(self, passwords: list[str]) -> list[str]:
        loop = asyncio.get_running_loop()
        scheme = self.cfg.passwords.scheme
        futs = [loop.run_in_executor(self.hashers, password.hash_password, p, scheme)
                for p in passwords]
        return list(await asyncio.gather(*futs))


CTX = web.AppKey("mailforge_ctx", ApiContext)
