"""The daemon: migrates the store, prepares the backend, serves the API and runs the
reconcile workers until SIGTERM/SIGINT.

With ``api.workers`` above 1, the daemon also starts that many minus one API-only
processes (``python -m mailforge.daemon --api-worker``) listening on the same port with
SO_REUSEPORT, so the kernel spreads connections over them and the API uses more than
one core. They serve the API only (no reconcile workers, no policy service, no
inbound scanning), each with its own pool and token cache; they stop with the daemon
(and on their own if it dies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from . import config as config_mod
from . import log as log_mod
from . import pending_passwords, secretbox
from .api.app import make_app
from .api.http import TOKEN_CACHE
from .api.server import ApiRunner
from .backends.base import load_backend
from .config import Config
from .connected import worker as connected_worker
from .dns.step import DnsService, DnsStep, revisit_loop
from .engine import Engine
from .log import get
from .mail.service import MailService
from .pending_passwords import PendingPasswords
from .service.context import ServiceContext
from .service.idempotency import crash_points_from_env
from .store import migrate
from .store.store import Store, create_pool
from .store.tokencache import TokenCache

log = get(__name__)

FOLD_SECONDS = 60.0


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())


def workers_for(cfg: Config) -> int:
    """API processes to run: ``api.workers``, or one per core (at most 4) for 0."""
    if cfg.api.workers:
        return cfg.api.workers
    return max(1, min(4, len(os.sched_getaffinity(0))))


def start(main: Coroutine[Any, Any, None], use_uvloop: bool = True) -> None:
    """Run *main* to completion on uvloop when asked for and installed (measured in
    docs/benchmarks.md), else on asyncio's own loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def main(cfg: Config) -> None:
    """``mailforge run``."""
    start(run(cfg), cfg.api.uvloop)


async def _serve(app: web.Application, cfg: Config, shared: bool) -> ApiRunner:
    """Listen on the API port; *shared*: with SO_REUSEPORT, beside other processes."""
    cache = TokenCache(cfg.database.dsn, cfg.api.token_cache_seconds)
    if cfg.api.token_cache_seconds > 0:
        app[TOKEN_CACHE] = cache
        await cache.start()
        await cache.wait_listening(5.0)
    app.on_cleanup.append(lambda _app: cache.close())
    runner = ApiRunner(
        app, access_log=None, handler_cancellation=True,
        keepalive_timeout=cfg.api_limits.keepalive_timeout_seconds,
        header_timeout=cfg.api_limits.header_read_timeout_seconds)
    await runner.setup()
    site = web.TCPSite(runner, cfg.api.listen, cfg.api.port, reuse_address=True,
                       reuse_port=shared or None)
    await site.start()
    return runner


async def _supervise(cfg: Config, count: int, stop: asyncio.Event) -> None:
    """Keep *count* API-only processes running until *stop*; then stop them."""
    argv = [sys.executable, "-m", "mailforge.daemon", "--api-worker"]
    if cfg.source and not cfg.source.startswith("<"):
        argv.append(cfg.source)
    procs: dict[int, asyncio.subprocess.Process] = {}

    async def one(n: int) -> None:
        while not stop.is_set():
            proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
            procs[n] = proc
            log.info("api worker started", worker=n, pid=proc.pid)
            code = await proc.wait()
            if stop.is_set():
                return
            log.error("api worker exited; restarting", worker=n, pid=proc.pid, code=code)
            await asyncio.sleep(1.0)

    tasks = [asyncio.create_task(one(n), name=f"api-worker-{n}") for n in range(1, count)]
    try:
        await stop.wait()
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in procs.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _fold_counts_loop(store: Store, stop: asyncio.Event,
                            every: float = FOLD_SECONDS) -> None:
    """Keep the mailbox counter rows few (store/mailboxes.py ``fold_counts``)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        if stop.is_set():
            return
        try:
            await store.mailboxes.fold_counts()
        except Exception as exc:
            log.warning("folding mailbox counts failed", error=f"{type(exc).__name__}: {exc}")


async def run(cfg: Config) -> None:
    box = secretbox.from_config(cfg)
    pool = await create_pool(cfg.database.dsn, cfg.database.pool_min, cfg.database.pool_max)
    try:
        applied = await migrate.apply_pool(pool)
        if applied:
            log.info("migrations applied", versions=applied)
        store = Store(pool, cfg.host.name)
        backend = load_backend(cfg)
        await backend.prepare()
        dns_svc = DnsService(store, cfg, box)
        dns_svc.key_pool.prime()  # RSA keys ready before the first setup asks
        mail = MailService(pool, cfg, box, cfg.host.name)
        engine = Engine(store, backend, cfg.worker, cfg.database.dsn,
                        on_jobs_finished=mail.dispatcher.on_jobs_finished,
                        steps=[DnsStep(dns_svc)])
        # Passwords are hashed by the reconcile pass, in processes of their own on every
        # core (crypt(3) holds the GIL: hashing in threads stalled every request, health
        # checks included, while a bulk ran); the API only seals them.
        processes = len(os.sched_getaffinity(0))
        hashing = pending_passwords.hashers(processes)
        passwords = PendingPasswords(store, box, hashing, processes,
                                     mail.dispatcher.on_jobs_finished)
        engine.before_apply = passwords.settle
        await passwords.warm()
        ctx = ServiceContext(cfg=cfg, store=store, box=box,
                             crash_points=crash_points_from_env(), mail=mail)
        app = make_app(ctx)
        workers = workers_for(cfg)
        runner = await _serve(app, cfg, shared=workers > 1)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        supervisor = asyncio.create_task(_supervise(cfg, workers, stop), name="api-workers")
        log.info("mailforge started", api=f"http://{cfg.api.listen}:{cfg.api.port}",
                 host=cfg.host.name, backend=backend.name, api_workers=workers)
        await mail.start(stop)
        sd_notify("READY=1")
        revisits = asyncio.create_task(revisit_loop(dns_svc, stop, cfg.worker.poll_interval),
                                       name="dns-revisits")
        folds = asyncio.create_task(_fold_counts_loop(store, stop), name="mailbox-counts")
        # Connected mailboxes' connection tests (issue 12).
        connections = connected_worker.build(store, cfg, box, cfg.database.dsn,
                                             mail.dispatcher.on_jobs_finished)
        testing = asyncio.create_task(connections.run(stop), name="connected-tests")
        try:
            await engine.run(stop)
            await revisits
            await folds
            await testing
        finally:
            stop.set()
            await supervisor
            await mail.close()
            sd_notify("STOPPING=1")
            log.info("mailforge stopping")
            await runner.cleanup()
            passwords.pool.shutdown(wait=False)
    finally:
        await pool.close()


async def run_api_worker(cfg: Config, parent: int | None = None) -> None:
    """One API-only process: the same application on the same port (SO_REUSEPORT),
    until SIGTERM/SIGINT or until *parent* (the daemon) is gone."""
    box = secretbox.from_config(cfg)
    pool = await create_pool(cfg.database.dsn, cfg.database.pool_min, cfg.database.pool_max)
    mail = MailService(pool, cfg, box, cfg.host.name)
    try:
        # Sending and reading through the API; the policy service and the inbound
        # scanner run in the daemon's own process only.
        ctx = ServiceContext(cfg=cfg, store=Store(pool, cfg.host.name), box=box,
                             crash_points=crash_points_from_env(), mail=mail)
        app = make_app(ctx)
        mail.imap.start()
        mail.remote_imap.start()
        runner = await _serve(app, cfg, shared=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("api worker serving", api=f"http://{cfg.api.listen}:{cfg.api.port}")
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                if parent is not None and os.getppid() != parent:
                    log.warning("daemon gone; api worker stopping")
                    break
        finally:
            await runner.cleanup()
            await mail.imap.close()
            await mail.remote_imap.close()
            mail.submitter.close()
            mail.remote_smtp.close()
    finally:
        await pool.close()


def worker_main(argv: list[str] | None = None) -> int:
    """``python -m mailforge.daemon --api-worker [CONFIG]``: an API-only process (the
    daemon starts these; also usable on its own beside a daemon)."""
    ap = argparse.ArgumentParser(prog="mailforge-api-worker")
    ap.add_argument("--api-worker", action="store_true", required=True)
    ap.add_argument("config", nargs="?")
    args = ap.parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print(f"mailforge: configuration error: {exc}", file=sys.stderr)
        return 2
    log_mod.setup(cfg.logging)
    start(run_api_worker(cfg, os.getppid()), cfg.api.uvloop)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
