"""Shared pieces of the benchmark scripts: an API client, timing, and the table printer."""

from __future__ import annotations

import asyncio
import imaplib
import os
import platform
import statistics
import time
from collections.abc import Sequence
from typing import Any

import aiohttp


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self.session = aiohttp.ClientSession(
            headers=self.headers, connector=aiohttp.TCPConnector(limit=100))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One API call; a 429 (the per-token rate limit) is waited out and retried."""
        assert self.session is not None
        while True:
            async with self.session.request(method, self.url + path, json=body) as r:
                if r.status == 429:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    continue
                return r.status, await r.json()

    async def wait_job(self, job_id: str, timeout: float = 120.0,
                       interval: float = 0.01) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, job = await self.call("GET", f"/v1/jobs/{job_id}")
            if job["status"] in ("completed", "failed"):
                return dict(job)
            await asyncio.sleep(interval)
        raise RuntimeError(f"job {job_id} did not finish")


def imap_login(host: str, port: int, user: str, password: str) -> bool:
    try:
        with imaplib.IMAP4(host, port, timeout=10) as im:
            im.login(user, password)
            return True
    except imaplib.IMAP4.error:
        return False


def pct(values: Sequence[float], p: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.node()}: {os.cpu_count()} cores, {mem:.0f} GiB, "
            f"{platform.system()} {platform.release()}, Python {platform.python_version()}")


def table(rows: Sequence[tuple[str, str, str, str]]) -> str:
    head = ("measure", "result", "target", "met")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
              for r in rows]
    return "\n".join(lines)
