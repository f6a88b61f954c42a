"""Issue 2: kill the daemon with SIGKILL while it converges 200 new mailboxes, start it
again: all 200 become live, none twice, and every job completes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from support import imap_login_ok, postfix_maps, ready_domain, wait_job

pytestmark = pytest.mark.stack

DOMAINS = 4
PER_DOMAIN = 50


def spawn_daemon(info: dict[str, Any], **env: str) -> subprocess.Popen[bytes]:
    log = open(Path(info["logs"]["daemon"]).with_name("daemon-crashtest.log"), "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "mailforge", "-c", info["config_path"], "run"],
        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)


async def wait_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(url + "/v1/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("daemon did not become healthy")


async def converged(dsn: str, domains: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(
            """SELECT count(*) FROM mailboxes m JOIN domains d ON d.id = m.domain_id
               WHERE d.name = ANY($1::text[]) AND m.observed_generation >= m.generation""",
            domains))
    finally:
        await conn.close()


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


async def test_sigkill_while_converging_200_mailboxes(sandbox: Any, api: Any,
                                                      unique_domain: str) -> None:
    info = sandbox.info
    domains = [f"d{i}.{unique_domain}" for i in range(DOMAINS)]
    for d in domains:
        await ready_domain(api, d)
    sandbox.stop_service("daemon")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # An API-only daemon records the intent; nothing converges yet.
        api_only = spawn_daemon(info, MAILFORGE__WORKER__CONCURRENCY="0")
        procs.append(api_only)
        await wait_healthy(info["api_url"])
        sem = asyncio.Semaphore(10)

        async def create(d: str, n: int) -> dict[str, Any]:
            async with sem:
                status, body = await api.post("/v1/email-users",
                                              {"domain": d, "username": f"user{n}"})
                assert status == 202, body
                return dict(body)

        users = await asyncio.gather(*(create(d, n) for d in domains
                                       for n in range(PER_DOMAIN)))
        assert len(users) == DOMAINS * PER_DOMAIN
        kill(api_only)
        assert await converged(info["postgres_dsn"], domains) == 0

        # A converging daemon, one domain per pass, killed as soon as the store shows its
        # first converged mailboxes: the other domains are then mid-flight or not started.
        worker = spawn_daemon(info, MAILFORGE__WORKER__BATCH_DOMAINS="1",
                              MAILFORGE__WORKER__CONCURRENCY="1")
        procs.append(worker)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if await converged(info["postgres_dsn"], domains) > 0:
                break
            await asyncio.sleep(0.002)
        else:
            raise AssertionError("the daemon never converged anything")
        kill(worker)
        partial = await converged(info["postgres_dsn"], domains)
        assert 0 < partial < DOMAINS * PER_DOMAIN, partial
    finally:
        for p in procs:
            if p.poll() is None:
                kill(p)
        sandbox.start_service("daemon")

    for u in users:
        job = await wait_job(api, u["job_id"], timeout=60)
        assert job["status"] == "completed", job
    assert await converged(info["postgres_dsn"], domains) == DOMAINS * PER_DOMAIN

    # None twice: each address appears exactly once in the maps Postfix and Dovecot read.
    state = Path(info["state_dir"])
    mailboxes_map = postfix_maps(info["state_dir"])["virtual_mailboxes"]
    db = sqlite3.connect(state / "dovecot" / "auth.sqlite")
    try:
        for d in domains:
            locals_ = [r[0] for r in db.execute(
                "SELECT local_part FROM users WHERE domain = ?", (d,))]
            assert sorted(locals_) == sorted(f"user{n}" for n in range(PER_DOMAIN))
    finally:
        db.close()
    for d in domains:
        in_map = [line for line in mailboxes_map if line.endswith(f"@{d} OK")]
        assert len(in_map) == PER_DOMAIN == len(set(in_map))

    # All live: every one of the 200 logs in over IMAP with its password.
    imap = info["imap"]
    ok = await asyncio.gather(*(asyncio.to_thread(imap_login_ok, imap["host"], imap["port"],
                                                  u["email"], u["password"]) for u in users))
    assert all(ok), [u["email"] for u, good in zip(users, ok, strict=True) if not good]
