"""The domain repositories on a per-test database (tests/db): a DKIM rotation request
records intent only and a refused one writes nothing; the worker's keys clear the
request unless a newer one came; the domain page carries each domain's reputation
counts over the window, within the account and the token's domain restriction."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from mailforge.errors import NotFound
from mailforge.store import scope
from mailforge.store.store import Store

from . import dbseed


async def _state(store: Store, domain_id: str) -> dict[str, Any]:
    async with store.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT generation, dkim_rotate_requested_at, next_attempt_at, updated_at, "
            "(SELECT count(*) FROM dkim_keys k WHERE k.domain_id = d.id) AS keys, "
            "(SELECT count(*) FROM jobs j WHERE j.resource_id = d.id) AS jobs "
            "FROM domains d WHERE id = $1", domain_id)
    assert row is not None
    return dict(row)


async def test_a_rotation_request_records_intent_and_makes_no_key(store: Store) -> None:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        did = await dbseed.domain(conn, acct)
    before = await _state(store, did)
    job = await store.domains.request_rotation(acct, did)
    after = await _state(store, did)
    assert job.type == "dkim_rotate" and job.resource_id == did
    assert after["generation"] == before["generation"] + 1
    assert after["dkim_rotate_requested_at"] is not None
    assert after["keys"] == 0 and after["jobs"] == 1


@pytest.mark.parametrize("case", ["not set up", "deleted", "other account", "restricted",
                                  "bad id"])
async def test_a_refused_rotation_request_writes_nothing(store: Store, case: str) -> None:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        other = await dbseed.account(conn)
        name = dbseed.name()
        did = await dbseed.domain(conn, acct, name, backend_enabled=case != "not set up")
        if case == "deleted":
            await conn.execute("UPDATE domains SET deleted = true WHERE id = $1", did)
    before = await _state(store, did)
    caller = other if case == "other account" else acct
    ref = "dom_" if case == "bad id" else did
    scope.set_domains(frozenset({"elsewhere.test"}) if case == "restricted" else None)
    try:
        with pytest.raises(NotFound):
            await store.domains.request_rotation(caller, ref)
    finally:
        scope.set_domains(None)
    assert await _state(store, did) == before


async def test_the_workers_keys_clear_the_request_unless_a_newer_one_came(
        store: Store) -> None:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        did = await dbseed.domain(conn, acct)
    await store.domains.request_rotation(acct, did)
    opts = await store.dns.options(did)
    assert opts is not None and opts.rotation_requested_at is not None
    asked = opts.rotation_requested_at
    # A newer request arrives while the worker makes the keys for the first one.
    async with store.pool.acquire() as conn:
        await conn.execute("UPDATE domains SET dkim_rotate_requested_at = $2 WHERE id = $1",
                           did, asked + timedelta(seconds=1))
    await store.dns.add_keys(did, [("rsa", "mfa-rsa", "pub", b"sealed")], asked)
    still = await store.dns.options(did)
    assert still is not None and still.rotation_requested_at == asked + timedelta(seconds=1)
    # The worker's next keys carry the newer request out: cleared with them.
    await store.dns.add_keys(did, [("ed25519", "mfb-ed25519", "pub", b"sealed")],
                             still.rotation_requested_at)
    done = await store.dns.options(did)
    assert done is not None and done.rotation_requested_at is None
    assert (await _state(store, did))["keys"] == 2


async def test_the_domain_page_counts_each_domains_reputation_in_its_window(
        store: Store) -> None:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        other = await dbseed.account(conn)
        a, b = dbseed.name(), dbseed.name()
        da = await dbseed.domain(conn, acct, a)
        db_ = await dbseed.domain(conn, acct, b)
        dx = await dbseed.domain(conn, other)
        mb = await dbseed.mailbox(conn, acct, da, "alice")
        await conn.execute(
            "INSERT INTO mail_send_counts (mailbox_id, day, domain_id, count) VALUES "
            "($1, current_date, $2, 40), ($1, current_date - 3, $2, 2), "
            "($1, current_date - 40, $2, 1000)", mb, da)
        await conn.executemany(
            "INSERT INTO mail_reputation_events (domain_id, kind, ref, occurred_at) "
            "VALUES ($1, $2, $3, now() - make_interval(days => $4))",
            [(da, "bounce", "b1", 1), (da, "bounce", "b2", 2), (da, "complaint", "c1", 0),
             (da, "bounce", "old", 45), (dx, "complaint", "x1", 0)])
    page = await store.domains.list_page(acct, 10, 0, None, 30)
    counts = {d.id: c for d, c in page.items}
    assert set(counts) == {da, db_} and page.total == 2 and page.next_position is None
    assert (counts[da].sent, counts[da].bounces, counts[da].complaints) == (42, 2, 1)
    assert (counts[db_].sent, counts[db_].bounces, counts[db_].complaints) == (0, 0, 0)
    # The single domain read agrees.
    d, one = await store.domains.get_with_reputation(acct, da, 30)
    assert d.id == da and one == counts[da]
    # Restricted to one name: that one only, counted as such.
    scope.set_domains(frozenset({b}))
    try:
        page = await store.domains.list_page(acct, 10, 0, None, 30)
        with pytest.raises(NotFound):
            await store.domains.get_with_reputation(acct, da, 30)
    finally:
        scope.set_domains(None)
    assert [d.id for d, _ in page.items] == [db_] and page.total == 1
    # Another account's domain is not found.
    with pytest.raises(NotFound):
        await store.domains.get_with_reputation(acct, dx, 30)


async def test_the_domain_page_walks_by_keyset(store: Store) -> None:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
    made = []
    for _ in range(5):  # one transaction each: distinct created_at
        async with store.tx() as conn:
            made.append(await dbseed.domain(conn, acct))
    seen: list[str] = []
    after = None
    while True:
        page = await store.domains.list_page(acct, 2, 0, after, 30)
        seen += [d.id for d, _ in page.items]
        after = page.next_position
        if after is None:
            break
    assert seen == made
