"""Fixtures for fast tests of the store and the engine: PostgreSQL only, no mail stack.

One PostgreSQL server for the folder (``Sandbox.up_postgres()``: the sandbox's own
PostgreSQL, started alone; no Postfix, Dovecot, DNS or daemon), one database migrated
once as a template, and for every test a fresh database copied from that
template (``CREATE DATABASE ... TEMPLATE``, tens of milliseconds), dropped after the
test. Tests are isolated from one another without truncating anything, as
procrastinate's and kopf's own test suites do it.

Use in a test module under ``tests/db/``::

    async def test_something(store: Store) -> None:      # a Store on its own database
        ...
    async def test_raw(db: TestDatabase) -> None:        # db.dsn, db.connect(), db.pool
        ...

``store`` is a ``mailforge.store.store.Store`` (mail host ``test-host``) over a small
pool on the test's database; ``db`` gives the DSN (e.g. to build an ``Engine``, which
opens its own LISTEN connection) and raw connections for arranging rows and checking
them. ``tests/db/dbseed.py`` inserts accounts, domains, mailboxes, aliases and jobs.

Environment: ``MAILFORGE_TEST_PG_DSN=postgresql://user:pw@host:port/db`` uses an
existing server instead (the role must be allowed to create databases);
``MAILFORGE_TEST_SANDBOX_DIR`` (as in tests/conftest.py) reuses and keeps that
sandbox's PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from mailforge.sandbox import Sandbox
from mailforge.store import migrate
from mailforge.store.store import Store, create_pool

MAIL_HOST = "test-host"


def with_database(dsn: str, name: str) -> str:
    """*dsn* pointing at database *name*."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


@dataclass
class TestDatabase:
    """One test's own database."""

    __test__ = False  # not a test class, whatever its name

    name: str
    dsn: str
    pool: asyncpg.Pool

    async def connect(self) -> asyncpg.Connection[Any]:
        """A connection of its own (close it), outside the pool the store uses."""
        return await asyncpg.connect(self.dsn)


@pytest.fixture(scope="package")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server (its ``mailforge`` database) for the tests of this
    folder; stopped after them, so it does not run beside the session's sandbox."""
    given = os.environ.get("MAILFORGE_TEST_PG_DSN")
    if given:
        yield given
        return
    keep = os.environ.get("MAILFORGE_TEST_SANDBOX_DIR")
    directory = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mailforge-pg-",
                                                              dir="/tmp"))
    directory.mkdir(parents=True, exist_ok=True)
    sb = Sandbox(directory)
    try:
        info = sb.up_postgres()
    except BaseException:
        sb.down()
        raise
    try:
        yield str(info["postgres_dsn"])
    finally:
        if not keep:
            sb.down()
            shutil.rmtree(directory, ignore_errors=True)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def pg_template(pg_server_dsn: str) -> AsyncIterator[str]:
    """Name of a database holding every migration, the template of each test's database.
    Its name is unique, so sessions sharing a server do not collide."""
    name = f"mf_template_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(with_database(pg_server_dsn, name))
        try:
            await migrate.apply(conn)
        finally:
            # A template must have no session open while it is copied.
            await conn.close()
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def db(pg_server_dsn: str, pg_template: str) -> AsyncIterator[TestDatabase]:
    """A fresh, migrated database for this test alone, dropped afterwards."""
    name = f"mf_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(pg_server_dsn)
    try:
        # FILE_COPY copies the files whole: for a database this small, a little faster
        # than WAL_LOG (PostgreSQL 15's default), which writes every page to the WAL.
        await admin.execute(
            f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}" STRATEGY FILE_COPY')
        dsn = with_database(pg_server_dsn, name)
        pool = await create_pool(dsn, min_size=1, max_size=4)
        try:
            yield TestDatabase(name, dsn, pool)
        finally:
            await pool.close()
    finally:
        # FORCE: an engine's listener or a test's stray connection must not keep it.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def store(db: TestDatabase) -> Store:
    """A ``Store`` (mail host ``test-host``) on this test's own database."""
    return Store(db.pool, MAIL_HOST)
