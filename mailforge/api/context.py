"""What every API handler can reach: the store, the configuration, the secret box."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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

    async def hash_passwords(self, passwords: list[str]) -> list[str]:
        loop = asyncio.get_running_loop()
        scheme = self.cfg.passwords.scheme
        futs = [loop.run_in_executor(self.hashers, password.hash_password, p, scheme)
                for p in passwords]
        return list(await asyncio.gather(*futs))


CTX = web.AppKey("mailforge_ctx", ApiContext)
