"""The layering rules of issue 10, checked on the source: PostgreSQL is reached only
from ``store/`` (no module elsewhere runs a query, takes a pooled connection or loads
the named SQL), and no module outside ``api/`` imports ``api`` except the daemon, the
composition root that assembles the API server with the engine."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mailforge"
# The daemon builds the process: it must import what it starts, the API included.
COMPOSITION_ROOTS = {"daemon.py"}
QUERY_METHODS = {"fetch", "fetchrow", "fetchval", "execute", "executemany", "acquire",
                 "copy_records_to_table", "cursor", "add_listener"}


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(f, ast.parse(f.read_text(encoding="utf-8"), str(f)))
            for f in sorted(PACKAGE.rglob("*.py"))]


def _imports(tree: ast.Module, path: Path) -> list[str]:
    pkg = ["mailforge", *path.relative_to(PACKAGE).parent.parts]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[:len(pkg) - node.level + 1] if node.level else []
            mod = ".".join([*base, node.module] if node.module else base)
            out += [mod] + [f"{mod}.{a.name}" for a in node.names]
    return out


def test_postgresql_is_reached_only_from_the_store() -> None:
    offenders = []
    for path, tree in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ("store",):
            continue
        # The backend's SQLite projection (read by Dovecot) and the sandbox's installer
        # (psql) are not the store; they never touch the store's database through asyncpg.
        if rel.parts[0] in ("backends", "sandbox"):
            continue
        imports = _imports(tree, path)
        if any(i.startswith("mailforge.store.queries") for i in imports):
            offenders.append(f"{rel}: loads the store's SQL")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in QUERY_METHODS
                    and isinstance(node.func.value, ast.Name | ast.Attribute)
                    and (getattr(node.func.value, "id", None) in ("conn", "pool", "db")
                         or getattr(node.func.value, "attr", None) in ("pool", "conn"))):
                offenders.append(f"{rel}:{node.lineno}: {node.func.attr}() on a connection")
    assert not offenders, "\n".join(offenders)


def test_no_module_outside_api_imports_api() -> None:
    offenders = []
    for path, tree in _modules():
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "api" or str(rel) in COMPOSITION_ROOTS:
            continue
        bad = sorted({i for i in _imports(tree, path)
                      if i == "mailforge.api" or i.startswith("mailforge.api.")})
        if bad:
            offenders.append(f"{rel}: {', '.join(bad)}")
    assert not offenders, "\n".join(offenders)
