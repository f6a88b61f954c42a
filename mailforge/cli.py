"""The ``mailforge`` command line: run the daemon, migrate, tokens, sandbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from . import config as config_mod
from . import log as log_mod
from .models import PERMISSIONS, Principal

T = TypeVar("T")

DEFAULT_CONFIG = "/etc/mailforge/mailforge.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mailforge", description=__doc__)
    p.add_argument("--config", "-c",
                   default=os.environ.get("MAILFORGE_CONFIG", DEFAULT_CONFIG),
                   help="YAML configuration file (default: $MAILFORGE_CONFIG or "
                        f"{DEFAULT_CONFIG})")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon (API and reconcile workers)")
    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("status", help="show how much desired state is not yet converged")
    sub.add_parser("check-config", help="load and validate the configuration")

    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_cmd",
                                                                     required=True)
    tc = tok.add_parser("create", help="create a token (shown once)")
    tc.add_argument("--name", required=True)
    tc.add_argument("--permissions", default="admin",
                    help="comma-separated: " + ",".join(PERMISSIONS))
    tc.add_argument("--account", help="account id (default: the operator's root account)")
    tc.add_argument("--domains", help="comma-separated domain names the token is restricted to")
    tc.add_argument("--expires-in", type=int, metavar="SECONDS",
                    help="the token stops working after this many seconds")
    tc.add_argument("--json", action="store_true", help="print a JSON object")
    tl = tok.add_parser("list", help="list live tokens (never their secrets)")
    tl.add_argument("--account", help="account id (default: the operator's root account)")
    tl.add_argument("--json", action="store_true", help="print JSON")
    tr = tok.add_parser("revoke", help="revoke a token; it stops working at once")
    tr.add_argument("id", help="token id (tok_...)")
    tr.add_argument("--account", help="account id (default: the operator's root account)")

    dnsp = sub.add_parser("dns", help="DNS records of domains").add_subparsers(
        dest="dns_cmd", required=True)
    dplan = dnsp.add_parser("plan", help="show the changes setup would make to a domain's "
                                         "DNS, without applying them")
    dplan.add_argument("domain")
    dplan.add_argument("--json", action="store_true")
    dallow = dnsp.add_parser("allow", help="let the next reconcile of DOMAIN apply a large "
                                           "plan (--force) or replace the operator's own "
                                           "SPF/DMARC (--overwrite); requeues the domain")
    dallow.add_argument("domain")
    dallow.add_argument("--force", action="store_true")
    dallow.add_argument("--overwrite", action="store_true")

    sb = sub.add_parser("sandbox", help="a private mail stack on loopback, for trying and "
                                        "testing").add_subparsers(dest="sandbox_cmd",
                                                                  required=True)
    up = sb.add_parser("up", help="start the stack and the daemon; writes DIR/sandbox.json")
    up.add_argument("--dir", required=True)
    up.add_argument("--no-daemon", action="store_true")
    down = sb.add_parser("down", help="stop everything the sandbox started")
    down.add_argument("--dir", required=True)
    return p


def _load(path: str) -> config_mod.Config:
    cfg = config_mod.load(path)
    return cfg


async def _with_store(cfg: config_mod.Config, fn: Any) -> Any:
    from .store import migrate
    from .store.store import Store, create_pool

    pool = await create_pool(cfg.database.dsn, 1, 2)
    try:
        await migrate.apply_pool(pool)
        return await fn(Store(pool, cfg.host.name))
    finally:
        await pool.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "sandbox":
        from .sandbox import Sandbox

        sandbox = Sandbox(args.dir)
        if args.sandbox_cmd == "up":
            info = sandbox.up(start_daemon=not args.no_daemon)
            print(json.dumps(info, indent=2))
        else:
            sandbox.down()
        return 0
    try:
        cfg = _load(args.config)
    except config_mod.ConfigError as exc:
        print(f"mailforge: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{cfg.source}: ok")
        return 0
    if args.command == "run":
        log_mod.setup(cfg.logging)
        from . import daemon

        try:
            daemon.main(cfg)
        except config_mod.ConfigError as exc:
            print(f"mailforge: configuration error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.command == "migrate":
        from .store import migrate
        from .store.store import create_pool

        async def do_migrate() -> list[str]:
            pool = await create_pool(cfg.database.dsn, 1, 1)
            try:
                return await migrate.apply_pool(pool)
            finally:
                await pool.close()

        applied = asyncio.run(do_migrate())
        print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
        return 0
    if args.command == "status":
        counts = asyncio.run(_with_store(cfg, lambda s: s.reconcile.unconverged()))
        print(json.dumps({"unconverged": counts}))
        return 0
    if args.command == "dns":
        from .dns.cli import allow_command, plan_command

        if args.dns_cmd == "allow":
            return int(asyncio.run(_with_store(cfg, lambda s: allow_command(
                s, args.domain, args.force, args.overwrite))))
        return int(asyncio.run(_with_store(cfg, lambda s: plan_command(s, cfg, args.domain,
                                                                       args.json))))
    if args.command == "token":
        return _token_command(args, cfg)
    return 1


def _token_command(args: argparse.Namespace, cfg: config_mod.Config) -> int:
    """``mailforge token create|list|revoke``: the token service, acting as the operator
    (no minting token) for the root account or ``--account``."""

    from . import secretbox
    from .errors import NotFound, ValidationFailed
    from .service import tokens as service
    from .service.context import ServiceContext
    from .store.store import Store

    def run(fn: Callable[[ServiceContext, Principal], Awaitable[T]]) -> T:
        async def with_ctx(store: Store) -> T:
            # The context every service function takes.
            ctx = ServiceContext(cfg=cfg, store=store, box=secretbox.from_config(cfg))
            account = args.account or await store.accounts.ensure_root()
            return await fn(ctx, service.operator(account))

        out: T = asyncio.run(_with_store(cfg, with_ctx))
        return out

    if args.token_cmd == "create":  # noqa: S105
        perms = [p.strip() for p in args.permissions.split(",") if p.strip()]
        bad = [p for p in perms if p not in PERMISSIONS]
        if bad or not perms:
            print(f"mailforge: --permissions must be among {', '.join(PERMISSIONS)}",
                  file=sys.stderr)
            return 2
        domains = ([d.strip() for d in args.domains.split(",") if d.strip()]
                   if args.domains else None)
        if args.expires_in is not None and args.expires_in <= 0:
            print("mailforge: --expires-in must be positive", file=sys.stderr)
            return 2
        item = service.NewToken(name=args.name, permissions=perms,
                                expires_in_seconds=args.expires_in, domains=domains)
        try:
            made = run(lambda ctx, op: service.create_token(ctx, op, item))
        except ValidationFailed as exc:
            print(f"mailforge: {'; '.join(exc.details)}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps({"id": made.info.id, "token": made.token}))
        else:
            print(f"token id: {made.info.id}\ntoken (shown once, store it now): {made.token}")
        return 0
    if args.token_cmd == "list":  # noqa: S105
        tokens = run(service.list_tokens)
        items: list[dict[str, Any]] = [
            {"id": t.id, "name": t.name, "permissions": list(t.permissions),
             "domains": list(t.domains) if t.domains is not None else None,
             "created_at": t.created_at.isoformat(),
             "expires_at": t.expires_at.isoformat() if t.expires_at else None,
             "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None}
            for t in tokens]
        if args.json:
            print(json.dumps({"tokens": items}))
        else:
            for it in items:
                print(f"{it['id']}  {','.join(it['permissions']):<16} {it['name']}"
                      f"  last used: {it['last_used_at'] or 'never'}")
        return 0
    try:
        run(lambda ctx, op: service.revoke_token(ctx, op, args.id))
    except NotFound:
        print(f"mailforge: no live token {args.id} in that account", file=sys.stderr)
        return 1
    print(f"revoked {args.id}")
    return 0
