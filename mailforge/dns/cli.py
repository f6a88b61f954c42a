"""``mailforge dns plan DOMAIN``: what setup would change in the domain's DNS, computed
exactly as the reconcile step does (same records, same ownership), never applied. For
the ``manual`` provider it lists every record the operator has to create."""

from __future__ import annotations

import json
import sys

from .. import secretbox, validation
from ..config import Config
from ..errors import ReconcileError
from ..store.store import Store
from .step import DnsService


async def plan_command(store: Store, cfg: Config, name: str, as_json: bool) -> int:
    try:
        ascii_name = validation.domain_name(name)
    except ValueError as exc:
        print(f"mailforge: domain: {exc}", file=sys.stderr)
        return 2
    d = await store.domains.by_name_any(ascii_name)
    if d is None:
        print(f"mailforge: no domain {ascii_name}", file=sys.stderr)
        return 1
    svc = DnsService(store, cfg, secretbox.from_config(cfg))
    try:
        prov = await svc.provider_for(d.id, d.dns_provider)
        p = await svc.compute_plan(d.id, d.name, prov, deleting=d.deleted)
    except ReconcileError as exc:
        print(f"mailforge: {d.dns_provider}: {exc}", file=sys.stderr)
        return 1
    expected = await svc.expected(d.id, d.name)
    if as_json:
        print(json.dumps({
            "domain": d.name, "provider": d.dns_provider, "publishes": prov.publishes,
            "creates": [r.__dict__ for r in p.creates],
            "deletes": [r.__dict__ for r in p.deletes], "conflicts": list(p.conflicts),
            "refused": p.refused,
            "records": [{**e.record.__dict__, "purpose": e.purpose, "required": e.required}
                        for e in expected]}, indent=2))
        return 0
    print(f"# {d.name} (provider {d.dns_provider}); nothing is applied")
    if not prov.publishes:
        print("# manual provider: create these records at your DNS host")
        for e in expected:
            label = "required" if e.required else "recommended"
            print(f"{e.record.name} {e.record.ttl} IN {e.record.rtype} {e.record.content}"
                  f"  ; {e.purpose}, {label}")
        return 0
    lines = p.lines()
    print("\n".join(lines) if lines else "# no changes")
    return 0


async def allow_command(store: Store, name: str, force: bool, overwrite: bool) -> int:
    """Record the operator's permission on the domain and queue it for reconcile."""
    try:
        ascii_name = validation.domain_name(name)
    except ValueError as exc:
        print(f"mailforge: domain: {exc}", file=sys.stderr)
        return 2
    allowed = await store.domains.allow_dns_changes(ascii_name, force, overwrite)
    if allowed is None:
        print(f"mailforge: no domain {ascii_name}", file=sys.stderr)
        return 1
    print(f"{ascii_name}: force={allowed.force} overwrite={allowed.overwrite}; queued")
    return 0
