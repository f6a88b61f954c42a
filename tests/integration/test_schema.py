"""The migrations, applied in order, produce exactly the declared schema (schema.sql)."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import pytest

from mailforge.store import migrate

pytestmark = pytest.mark.stack

CATALOG = """
SELECT 'column' AS kind, table_name || '.' || column_name AS name,
       concat_ws(' ', data_type, is_nullable, column_default) AS def
FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', indexname, regexp_replace(indexdef, ' ON [^ ]+ ', ' ON ')
FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'trigger', event_object_table || '.' || trigger_name, action_statement
FROM information_schema.triggers WHERE trigger_schema = 'public'
UNION ALL
SELECT 'function', p.proname, pg_get_functiondef(p.oid)
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


async def _catalog(dsn: str) -> set[tuple[str, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(CATALOG)
    finally:
        await conn.close()
    return {(r["kind"], r["name"], r["def"]) for r in rows
            if not r["name"].startswith("schema_migrations")}


def _dsn_for(dsn: str, db: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{db}"


async def test_migrations_produce_declared_schema(sandbox: Any) -> None:
    dsn = sandbox.info["postgres_dsn"]
    suffix = secrets.token_hex(4)
    dbs = {"migrated": f"mf_schema_m_{suffix}", "declared": f"mf_schema_d_{suffix}"}
    admin = await asyncpg.connect(dsn)
    try:
        for db in dbs.values():
            await admin.execute(f'CREATE DATABASE "{db}"')
        conn = await asyncpg.connect(_dsn_for(dsn, dbs["migrated"]))
        try:
            applied = await migrate.apply(conn)
            assert applied == [m.version for m in migrate.available()]
            # A second run (e.g. a second daemon starting) applies nothing.
            assert await migrate.apply(conn) == []
        finally:
            await conn.close()
        conn = await asyncpg.connect(_dsn_for(dsn, dbs["declared"]))
        try:
            await conn.execute(migrate.declared_schema())
        finally:
            await conn.close()
        migrated = await _catalog(_dsn_for(dsn, dbs["migrated"]))
        declared = await _catalog(_dsn_for(dsn, dbs["declared"]))
        assert migrated, "the catalog query found nothing"
        assert migrated - declared == set(), "in migrations but not in schema.sql"
        assert declared - migrated == set(), "in schema.sql but not in migrations"
    finally:
        for db in dbs.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}"')
        await admin.close()
