"""The connection worker: tests connected mailboxes in the background, never in a request.

Level-triggered, like the reconcile engine: the state to reach is in PostgreSQL
(``mailbox_connections.test_generation`` against ``tested_generation``, and
``next_test_at``), and a worker pass

1. claims up to ``connected.test_concurrency`` due connections under a lease
   (``FOR UPDATE SKIP LOCKED`` and a lease committed at once: no transaction is held
   while a remote server is talked to);
2. for each, outside any transaction: refreshes the DNS check of the address's domain
   when due, then logs in by SMTP AUTH and IMAP (the probe) with the unsealed secrets;
3. records the result by compare-and-set on the test generation it tested: a PATCH
   made meanwhile bumped it, so the stale result is dropped and the new settings are
   tested at once. The record settles the mailbox's job items (the connect job) and
   queues the ``email_user.connected`` / ``email_user.connection_failed`` events in
   the same transaction.

A failed mailbox is tested again after ``retest_backoff_base`` seconds doubling to
``retest_backoff_max``; an active one every ``recheck_interval``. A worker that dies
mid-probe leaves its lease to expire; the next pass tests again (probing is harmless
to repeat). Workers wake on NOTIFY (a connect or a PATCH) and poll as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from .. import netguard
from ..config import Config, ConnectedConfig
from ..errors import NotFound
from ..log import get
from ..secretbox import SecretBox
from ..store import db
from ..store.connected import CHANNEL, Due
from ..store.store import Store
from . import dnscheck, probe
from .credentials import Credentials
from .network import Network
from .probe import ProbeResult
from .settings import Remote, RemoteError, Secrets

log = get(__name__)


# (remote, secrets) -> result; never raises for a remote failure (``probe.probe`` bound
# to a network; tests pass their own).
Probe = Callable[[Remote, Secrets], Awaitable[ProbeResult]]
# (domain, resolver address, DKIM selector) -> the DNS check (``dnscheck.check``).
DnsCheck = Callable[[str, str | None, str | None], Awaitable[dict[str, Any]]]
JobsFinished = Callable[[Sequence[str]], Awaitable[None]]


def make_network(cfg: ConnectedConfig, guard: netguard.Guard) -> Network:
    """Every connection to a tenant-given host through the outbound guard, TLS verified
    against the system store plus ``connected.ca_file``."""
    return Network(guard, cfg.ca_file or None, cfg.timeout)


def _probe_with(net: Network) -> Probe:
    return functools.partial(probe.probe, net)


def _check(domain: str, resolver: str | None, selector: str | None
           ) -> Awaitable[dict[str, Any]]:
    return dnscheck.check(domain, resolver, selector)


def backoff(failures: int, cfg: ConnectedConfig) -> float:
    """Seconds until the next test after *failures* failures in a row (>= 1)."""
    return float(min(cfg.retest_backoff_max,
                     cfg.retest_backoff_base * 2.0 ** max(0, failures - 1)))


class ConnectionWorker:
    def __init__(self, store: Store, cfg: ConnectedConfig, credentials: Credentials,
                 probe: Probe | None = None, dns_check: DnsCheck | None = None,
                 dsn: str | None = None, resolver_address: str | None = None,
                 on_jobs_finished: JobsFinished | None = None,
                 lease_seconds: float | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.credentials = credentials
        self.probe = probe if probe is not None else _probe_with(credentials.net)
        self.dns_check = dns_check if dns_check is not None else _check
        self.dsn = dsn
        self.resolver_address = resolver_address
        self.on_jobs_finished = on_jobs_finished
        # Longer than a whole probe can take (an SMTP and an IMAP login, each a few
        # commands bounded by the timeout), so a live worker never loses its lease.
        self.lease_seconds = lease_seconds or max(120.0, 8 * cfg.timeout)
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self.tested = 0

    def wake(self) -> None:
        self._wake.set()

    # ------------------------------------------------------------------- the loop

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until *stop*: at once while there was work, else after
        ``poll_interval`` or a NOTIFY."""
        listener = asyncio.create_task(self._listen(stop), name="connected-listen") \
            if self.dsn else None
        try:
            while not stop.is_set():
                try:
                    n = await self.run_once()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("connection test pass failed", error=str(exc))
                    n = 0
                if n:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._next(stop), self.cfg.poll_interval)
                self._wake.clear()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _next(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _listen(self, stop: asyncio.Event) -> None:
        assert self.dsn is not None
        delay = 1.0
        while not stop.is_set():
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await db.listen(self.dsn, CHANNEL, lambda *_: self._wake.set())
                delay = 1.0
                self.wake()  # notifications may have been missed while disconnected
                while not stop.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("connected listener disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    async def run_once(self) -> int:
        """Claim the due connections (at most ``test_concurrency``) and handle them
        concurrently; the number claimed."""
        due = await self.store.connections.claim_due(
            self.owner, self.cfg.test_concurrency, self.lease_seconds,
            self.cfg.dns_check_interval)
        if due:
            await asyncio.gather(*(self._handle(d) for d in due))
        return len(due)

    # ----------------------------------------------------------------- one mailbox

    async def _handle(self, d: Due) -> None:
        try:
            if d.dns_due:
                await self._check_dns(d)
            if d.test_due:
                await self._test(d)
        except Exception as exc:
            # Never the exception's text: it could quote a server's answer to a secret.
            log.warning("connection test could not run", mailbox_id=d.mailbox_id,
                        error=type(exc).__name__)
            with contextlib.suppress(Exception):
                await self.store.connections.release(d.mailbox_id, self.owner,
                                                     self.cfg.retest_backoff_base)

    async def _check_dns(self, d: Due) -> None:
        domain = d.address.rpartition("@")[2]
        try:
            result = await self.dns_check(domain, self.resolver_address, None)
        except Exception as exc:
            result = {"status": "error", "error": type(exc).__name__}
        await self.store.connections.record_dns(d.mailbox_id, result, self.owner,
                                                release=not d.test_due)

    async def _test(self, d: Due) -> None:
        started = time.monotonic()
        sent_folder: str | None = None
        reason: str | None
        try:
            remote, secrets_ = await self.credentials.for_mailbox(d.mailbox_id)
        except NotFound:
            return  # disconnected meanwhile: its row (and lease) is gone
        except RemoteError as exc:  # the access token could not be refreshed
            ok, reason, detail = False, exc.reason, exc.detail
        else:
            result = await self.probe(remote, secrets_)
            ok, reason, detail = result.ok, result.reason, result.detail
            sent_folder = result.sent_folder
        if ok:
            next_in = self.cfg.recheck_interval
        else:
            next_in = backoff(await self.store.connections.failures(d.mailbox_id) + 1,
                              self.cfg)
        rec = await self.store.connections.record_test(
            d.mailbox_id, d.test_generation, ok, None if ok else (reason or "unreachable"),
            "" if ok else detail, sent_folder, next_in)
        self.tested += 1
        if rec is None:
            # The settings changed while we tested: drop this result, test the new ones.
            await self.store.connections.release(d.mailbox_id, self.owner, 0)
            self.wake()
            return
        log.info("connection tested", mailbox_id=d.mailbox_id, ok=ok, reason=reason,
                 status=rec.status, seconds=round(time.monotonic() - started, 3))
        if rec.finished_jobs and self.on_jobs_finished is not None:
            await self.on_jobs_finished(rec.finished_jobs)

    # ------------------------------------------------------------ from the mail path

    async def report_failure(self, mailbox_id: str, reason: str, detail: str) -> None:
        """The mail service failed to log in to an active connected mailbox (e.g.
        ``auth_failed``): it is marked failed at once (``email_user.connection_failed``)
        and tested again with backoff; *detail* must hold no secret."""
        changed = await self.store.connections.report_failure(
            mailbox_id, reason, detail, backoff(1, self.cfg))
        if changed:
            log.info("connected mailbox failed in use", mailbox_id=mailbox_id, reason=reason)


def build(store: Store, cfg: Config, box: SecretBox, dsn: str | None,
          on_jobs_finished: JobsFinished | None = None) -> ConnectionWorker:
    """The daemon's worker: the transport's network behind the one outbound guard
    (``outbound.allow_networks``), the credentials, the DNS check with the resolver of
    ``dns.ns_resolver``."""
    net = make_network(cfg.connected, netguard.Guard.from_config(cfg.outbound.allow_networks))
    return ConnectionWorker(store, cfg.connected, Credentials(store, box, net), dsn=dsn,
                            resolver_address=cfg.dns.ns_resolver or None,
                            on_jobs_finished=on_jobs_finished)
