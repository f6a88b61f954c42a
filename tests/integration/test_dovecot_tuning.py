"""Issue 11, the mail server tuned for many accounts, on the real stack: the Dovecot
the sandbox runs has the settings deploy/ ships (login processes in high-performance
mode, one per core, no auth cache), and because nothing caches a login, a password
change and a suspension take effect at the first login after their job completed
(no waiting out a cache TTL), however often the old password logged in before."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

import pytest
from support import imap_login_ok, ready_domain, ready_mailbox, wait_job

pytestmark = pytest.mark.stack


def _doveconf(sandbox: Any, key: str) -> str:
    return subprocess.run(["doveconf", "-c", sandbox.info["dovecot_config"], "-h", key],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_the_sandbox_runs_the_shipped_tuning(sandbox: Any) -> None:
    cores = str(os.cpu_count() or 1)
    for service in ("imap-login", "pop3-login", "submission-login"):
        assert _doveconf(sandbox, f"service/{service}/service_count") == "0"
        assert _doveconf(sandbox, f"service/{service}/process_min_avail") == cores
    assert _doveconf(sandbox, "service/imap/process_limit") == "4096"
    assert _doveconf(sandbox, "auth_cache_size") == "0"
    # The events exporter mailforge wrote is part of the running configuration.
    assert _doveconf(sandbox, "metric/mailforge_delivery/filter") \
        == "event=mail_delivery_finished"


async def test_password_change_and_suspension_take_effect_at_once(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    imap = (sandbox.info["imap"]["host"], sandbox.info["imap"]["port"])
    await ready_domain(api, unique_domain)
    old = "old-password-" + os.urandom(6).hex()
    user = await ready_mailbox(api, unique_domain, "cached", old)
    addr = user["email"]

    async def login(pw: str) -> bool:
        return await asyncio.to_thread(imap_login_ok, *imap, addr, pw)

    async def logged_in_often(pw: str) -> None:
        # Whatever a cache could hold, it holds now.
        for _ in range(5):
            assert await login(pw)

    await logged_in_often(old)
    new = "new-password-" + os.urandom(6).hex()
    status, body = await api.patch(f"/v1/email-users/{user['id']}", {"password": new})
    assert status == 200, body
    assert (await wait_job(api, body["job_id"]))["status"] == "completed"
    # The very first attempts after the job: the old password is refused, the new works.
    assert not await login(old)
    assert await login(new)

    await logged_in_often(new)
    status, body = await api.post(f"/v1/email-users/{user['id']}/suspend")
    assert status == 202, body
    assert (await wait_job(api, body["job_id"]))["status"] == "completed"
    assert not await login(new)
