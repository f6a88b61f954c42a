"""The daemon: migrates the store, prepares the backend, serves the API and runs the
reconcile workers until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from . import secretbox
from .api.app import make_app
from .api.context import ApiContext
from .api.server import ApiRunner
from .backends.base import load_backend
from .config import Config
from .dns.step import DnsService, DnsStep, revisit_loop
from .engine import Engine
from .log import get
from .mail.service import MailService
from .service.idempotency import crash_points_from_env
from .store import migrate
from .store.store import Store, create_pool

log = get(__name__)


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


async def run(cfg: Config) -> None:
    box = secretbox.from_config(cfg)
    pool = await create_pool(cfg.database.dsn, cfg.database.pool_min, cfg.database.pool_max)
    try:
        async with pool.acquire() as conn:
            applied = await migrate.apply(conn)
        if applied:
            log.info("migrations applied", versions=applied)
        store = Store(pool, cfg.host.name)
        backend = load_backend(cfg)
        await backend.prepare()
        dns_svc = DnsService(store, cfg, box)
        mail = MailService(pool, cfg, box, cfg.host.name)
        engine = Engine(store, backend, cfg.worker, cfg.database.dsn,
                        on_jobs_finished=mail.dispatcher.on_jobs_finished,
                        steps=[DnsStep(dns_svc)])
        ctx = ApiContext(cfg=cfg, store=store, box=box,
                         hashers=ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                                    thread_name_prefix="hash"),
                         crash_points=crash_points_from_env(), mail=mail)
        app = make_app(ctx)
        runner = ApiRunner(
            app, access_log=None, handler_cancellation=True,
            keepalive_timeout=cfg.api_limits.keepalive_timeout_seconds,
            header_timeout=cfg.api_limits.header_read_timeout_seconds)
        await runner.setup()
        site = web.TCPSite(runner, cfg.api.listen, cfg.api.port, reuse_address=True)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("mailforge started", api=f"http://{cfg.api.listen}:{cfg.api.port}",
                 host=cfg.host.name, backend=backend.name)
        await mail.start(stop)
        sd_notify("READY=1")
        revisits = asyncio.create_task(revisit_loop(dns_svc, stop, cfg.worker.poll_interval),
                                       name="dns-revisits")
        try:
            await engine.run(stop)
            await revisits
        finally:
            await mail.close()
            sd_notify("STOPPING=1")
            log.info("mailforge stopping")
            await runner.cleanup()
            ctx.hashers.shutdown(wait=False)
    finally:
        await pool.close()
