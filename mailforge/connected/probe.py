"""The connection test of a connected mailbox: log in by SMTP and by IMAP exactly as
sending and reading will (same network, TLS and AUTH code), and find the Sent folder
by SPECIAL-USE. The two logins run side by side; a remote failure is a result, never
an exception (the SMTP one is reported first when both fail)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import imap, smtp
from .network import Network, classify
from .settings import Remote, RemoteError, Secrets


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str | None      # REASONS
    detail: str             # "" when ok
    sent_folder: str | None
    seconds: float


_threads: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """smtplib blocks: probes get their own threads (created on demand), not the loop's
    default executor (a handful of threads on a small machine would serialise a bulk
    connect of 500)."""
    global _threads
    if _threads is None:
        _threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="connected-probe")
    return _threads


async def _smtp(net: Network, remote: Remote, secrets: Secrets) -> None:
    addresses = await net.addresses(remote.smtp)
    loop = asyncio.get_running_loop()
    conn = await loop.run_in_executor(_pool(), smtp.connect_and_login, net, remote.smtp,
                                      addresses, remote.auth, secrets)
    await loop.run_in_executor(_pool(), smtp._quit, conn)


async def _imap(net: Network, remote: Remote, secrets: Secrets) -> str | None:
    client = await imap.connect_and_login(net, remote, secrets)
    try:
        return await imap.find_sent(client, remote.imap)
    except Exception as exc:
        raise classify(exc, remote.imap, secrets.values(), "listing folders",
                       "imap_error") from None
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.logout(), 2)
        client.abort()


async def probe(net: Network, remote: Remote, secrets: Secrets) -> ProbeResult:
    start = time.monotonic()
    results = await asyncio.gather(_smtp(net, remote, secrets), _imap(net, remote, secrets),
                                   return_exceptions=True)
    seconds = time.monotonic() - start
    for res, ep, what in ((results[0], remote.smtp, "SMTP"), (results[1], remote.imap, "IMAP")):
        if isinstance(res, BaseException):
            if isinstance(res, asyncio.CancelledError):
                raise res
            err = res if isinstance(res, RemoteError) else \
                classify(res, ep, secrets.values(), "testing",
                         "smtp_rejected" if what == "SMTP" else "imap_error")
            return ProbeResult(False, err.reason, f"{what}: {err.detail}", None, seconds)
    sent = results[1]
    return ProbeResult(True, None, "", sent if isinstance(sent, str) else None, seconds)
