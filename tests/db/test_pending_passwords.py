"""Passwords hashed by the reconcile pass (pending_passwords.py) and mailbox limits kept
by migration 0012's trigger, on a real PostgreSQL database with a fake backend: the
backend only ever sees hashed mailboxes, the sealed value is wiped once hashed and the
clear password is never stored, a crash before the hash is written leaves it to the
next pass, a newer password stored meanwhile is not overwritten, an unreadable sealed
value fails its mailbox only, and concurrent creations respect the limit exactly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mailforge import ids, password, pending_passwords
from mailforge.errors import Forbidden
from mailforge.models import Domain, DomainState, from_record
from mailforge.pending_passwords import LOCKED_HASH, PendingPasswords
from mailforge.secretbox import SecretBox
from mailforge.store.mailboxes import MailboxChanges, NewMailbox
from mailforge.store.store import Store

from . import dbseed
from .fakes import FakeBackend
from .test_engine import make_engine

BOX = SecretBox(os.urandom(32))


def _new(local: str, clear: str, scheme: str = "sha512-crypt") -> NewMailbox:
    mid = ids.new_id("usr")
    return NewMailbox(mid, local, "", pending_passwords.seal(BOX, mid, clear, scheme), 1024)


async def _domain(store: Store, limit: int = 100000) -> tuple[str, Domain]:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        await conn.execute("UPDATE accounts SET email_user_limit = $2 WHERE id = $1",
                           acct, limit)
        did = await dbseed.domain(conn, acct)
        row = await conn.fetchrow("SELECT * FROM domains WHERE id = $1", did)
    return acct, from_record(Domain, row)


def _engine(store: Store, db: Any, pool: ThreadPoolExecutor,
            seen: list[DomainState]) -> tuple[Any, PendingPasswords]:
    backend = FakeBackend()

    async def record(states: Sequence[DomainState]) -> None:
        seen.extend(states)

    backend.during_apply = record
    engine = make_engine(store, db.dsn, backend)
    passwords = PendingPasswords(store, BOX, pool, 2)
    engine.before_apply = passwords.settle
    return engine, passwords


@pytest.fixture
def pool() -> Any:
    with ThreadPoolExecutor(max_workers=2) as ex:
        yield ex


async def test_hashed_before_the_backend_and_wiped(store: Store, db: Any, pool: Any) -> None:
    acct, dom = await _domain(store)
    chosen = "Chosen-" + os.urandom(8).hex()
    generated = password.generate(24)
    job, _ = await store.mailboxes.create(
        acct, dom, [_new("ann", chosen), _new("bob", generated, "ssha512")], "test")
    async with db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT row_to_json(m)::text AS j, password_hash, "
                                "pending_password FROM mailboxes m")
    # Stored sealed, never in clear; no hash yet.
    assert all(r["password_hash"] == "" and r["pending_password"] for r in rows)
    assert not any(chosen in r["j"] or generated in r["j"] for r in rows)
    assert not any(chosen.encode() in r["pending_password"] for r in rows)

    seen: list[DomainState] = []
    engine, _ = _engine(store, db, pool, seen)
    assert await engine.run_once() == 1
    # The backend was handed hashes that verify, in the scheme of each password.
    by_local = {m.local_part: m for st in seen for m in st.mailboxes}
    assert by_local["ann"].password_hash.startswith("{SHA512-CRYPT}$6$")
    assert by_local["bob"].password_hash.startswith("{SSHA512}")
    assert password.verify(chosen, by_local["ann"].password_hash)
    assert password.verify(generated, by_local["bob"].password_hash)
    async with db.pool.acquire() as conn:
        rows = await conn.fetch("SELECT local_part, password_hash, pending_password, status "
                                "FROM mailboxes ORDER BY local_part")
        assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) \
            == "completed"
    assert [r["pending_password"] for r in rows] == [None, None]
    assert [r["status"] for r in rows] == ["active", "active"]
    assert rows[0]["password_hash"] == by_local["ann"].password_hash


async def test_password_change_keeps_the_old_hash_until_hashed(store: Store, db: Any,
                                                               pool: Any) -> None:
    acct, dom = await _domain(store)
    _, created = await store.mailboxes.create(acct, dom, [_new("ann", "first-password")],
                                              "test")
    seen: list[DomainState] = []
    engine, passwords = _engine(store, db, pool, seen)
    await engine.run_once()
    mid = created[0].id
    await store.mailboxes.update(acct, mid, MailboxChanges(
        sealed_password=pending_passwords.seal(BOX, mid, "second-password",
                                               "sha512-crypt")))
    async with db.pool.acquire() as conn:
        old = await conn.fetchval("SELECT password_hash FROM mailboxes WHERE id = $1", mid)
    assert password.verify("first-password", old)

    # A crash before the hash is written (here: the write fails): the sealed value stays
    # and the next pass hashes it.
    real = store.mailboxes.settle_passwords

    async def crash(*_a: Any) -> set[str]:
        raise OSError("connection lost")

    store.mailboxes.settle_passwords = crash  # type: ignore[method-assign]
    with pytest.raises(OSError):
        await passwords.settle(await store.reconcile.claim_domains("t", 10, 30))
    store.mailboxes.settle_passwords = real  # type: ignore[method-assign]
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT pending_password IS NOT NULL FROM mailboxes "
                                   "WHERE id = $1", mid)
        await dbseed.expire_leases(conn)
    seen.clear()
    await engine.run_once()
    assert password.verify("second-password", seen[-1].mailboxes[0].password_hash)
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM mailboxes WHERE id = $1", mid)
    assert row["pending_password"] is None and password.verify("second-password",
                                                               row["password_hash"])


async def test_a_newer_password_stored_meanwhile_stays_pending(store: Store, db: Any,
                                                               pool: Any) -> None:
    acct, dom = await _domain(store)
    _, created = await store.mailboxes.create(acct, dom, [_new("ann", "first-password")],
                                              "test")
    mid = created[0].id
    (stale,) = await store.mailboxes.pending_passwords([dom.id])
    async with db.pool.acquire() as conn:
        await conn.execute("UPDATE mailboxes SET pending_password = $2 WHERE id = $1", mid,
                           pending_passwords.seal(BOX, mid, "newer-password", "sha512-crypt"))
    written = await store.mailboxes.settle_passwords(
        [(stale, password.hash_password("first-password"))])
    assert written == set()
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM mailboxes WHERE id = $1", mid)
    assert row["password_hash"] == "" and row["pending_password"] is not None


async def test_unreadable_sealed_value_fails_only_its_mailbox(store: Store, db: Any,
                                                              pool: Any) -> None:
    acct, dom = await _domain(store)
    other = SecretBox(os.urandom(32))  # sealed under a master key since replaced
    mid = ids.new_id("usr")
    bad = NewMailbox(mid, "bad", "", pending_passwords.seal(other, mid, "x" * 12,
                                                            "sha512-crypt"), 1024)
    job, _ = await store.mailboxes.create(acct, dom, [bad, _new("good", "good-password")],
                                          "test")
    seen: list[DomainState] = []
    engine, _ = _engine(store, db, pool, seen)
    await engine.run_once()
    by_local = {m.local_part: m for st in seen for m in st.mailboxes}
    assert by_local["bad"].password_hash == LOCKED_HASH
    assert password.verify("good-password", by_local["good"].password_hash)
    async with db.pool.acquire() as conn:
        rows = {r["local_part"]: r for r in await conn.fetch("SELECT * FROM mailboxes")}
        jstatus = await conn.fetchval("SELECT status FROM jobs WHERE id = $1", job.id)
    assert rows["bad"]["status"] == "failed" and "set a new password" in rows["bad"]["last_error"]
    assert rows["bad"]["pending_password"] is None
    assert rows["bad"]["password_hash"] == LOCKED_HASH
    assert rows["good"]["status"] == "active"
    assert jstatus == "completed"  # one item failed, one done: finished, not stuck


async def test_concurrent_creates_respect_the_limit_exactly(store: Store, db: Any) -> None:
    acct, dom = await _domain(store, limit=7)

    async def one(n: int, size: int) -> tuple[str, Any]:
        try:
            await store.mailboxes.create(acct, dom, [_new(f"u{n}x{k}", "p" * 12)
                                                     for k in range(size)], "test")
            return "ok", size
        except Forbidden as exc:
            return "refused", exc.extra

    results = await asyncio.gather(*(one(n, 1 if n % 3 else 2) for n in range(12)))
    made = sum(v for k, v in results if k == "ok")
    refused = [v for k, v in results if k == "refused"]
    async with db.pool.acquire() as conn:
        count = await conn.fetchval("SELECT count(*) FROM mailboxes WHERE account_id = $1",
                                    acct)
        used = await conn.fetchval("SELECT used FROM mailbox_usage WHERE account_id = $1",
                                   acct)
    assert count == used == made and 6 <= made <= 7
    assert refused and all(r["limit"] == 7 and r["used"] + r["requested"] > 7
                           and r["used"] <= 7 for r in refused)
    # Deleting frees a place; restoring takes it back within the limit.
    async with db.pool.acquire() as conn:
        first = await conn.fetchval("SELECT id FROM mailboxes WHERE account_id = $1 LIMIT 1",
                                    acct)
    await store.mailboxes.delete(acct, [first], 3600)
    async with db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT used FROM mailbox_usage WHERE account_id = $1",
                                   acct) == made - 1
