"""Schema migrations: plain ``.sql`` files in ``migrations/``, applied in name order.

Applied under a PostgreSQL advisory lock, so several daemons starting together
apply each migration exactly once. Each file runs in its own transaction together
with its row in ``schema_migrations``; a file changed after it was applied is
reported, not silently skipped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Arbitrary constant identifying mailforge's migration lock among advisory locks.
MIGRATION_LOCK_ID = 0x6D61_696C_666F_7267 & 0x7FFF_FFFF_FFFF_FFFF


class MigrationError(Exception):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available() -> list[Migration]:
    root = resources.files("mailforge.store") / "migrations"
    found = [Migration(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8"))
             for p in root.iterdir() if p.name.endswith(".sql")]
    return sorted(found, key=lambda m: m.version)


def declared_schema() -> str:
    return (resources.files("mailforge.store") / "schema.sql").read_text(encoding="utf-8")


async def apply(conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> list[str]:
    """Apply pending migrations; return the versions applied now."""
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())""")
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {r["version"]: r["checksum"] for r in rows}
        for m in available():
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version} changed after it was applied; "
                        "write a new migration instead of editing an applied one")
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    m.version, m.checksum)
            done.append(m.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return done


async def apply_pool(pool: asyncpg.Pool) -> list[str]:
    """``apply`` on a connection of *pool*."""
    async with pool.acquire() as conn:
        return await apply(conn)
