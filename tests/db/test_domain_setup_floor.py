"""Domain setup at the floor (issue 11): check-ns proves the name and queues the setup
in one transaction (one pass serves and sets the domain up), asking again for the setup
of a domain already set up is no new intent (no second pass; its job completes with
the pass in flight, or at once when the domain is converged), and a failed domain's
setup still brings a new generation."""

from __future__ import annotations

from typing import Any

from mailforge.store.store import Store

from . import dbseed
from .fakes import FakeBackend
from .test_engine import make_engine


async def _domain(store: Store, **kw: Any) -> tuple[str, str]:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        did = await dbseed.domain(conn, acct, **kw)
    return acct, did


async def _row(store: Store, did: str) -> dict[str, Any]:
    async with store.pool.acquire() as conn:
        return await dbseed.row(conn, "domains", did)


async def test_check_ns_proves_and_sets_up_in_one_change(store: Store, db: Any) -> None:
    acct, did = await _domain(store, backend_enabled=False, verified=False)
    before = await _row(store, did)
    job = await store.domains.prove_and_setup(acct, did)
    after = await _row(store, did)
    assert after["ownership_verified_at"] is not None and after["backend_enabled"]
    assert after["generation"] == before["generation"] + 2
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend)
    assert await engine.run_once() == 1  # one pass serves it and sets it up
    assert await engine.run_once() == 0
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "jobs", job.id))["status"] == "completed"


async def test_setup_again_while_a_pass_is_due_adds_no_generation(store: Store,
                                                                  db: Any) -> None:
    acct, did = await _domain(store, backend_enabled=False)
    first = await store.domains.setup(acct, did)
    gen = (await _row(store, did))["generation"]
    second = await store.domains.setup(acct, did)
    assert (await _row(store, did))["generation"] == gen
    engine = make_engine(store, db.dsn, FakeBackend())
    assert await engine.run_once() == 1
    assert await engine.run_once() == 0  # no second pass for the second call
    async with store.pool.acquire() as conn:
        for j in (first, second):
            assert (await dbseed.row(conn, "jobs", j.id))["status"] == "completed"


async def test_setup_of_a_converged_domain_completes_at_once(store: Store, db: Any) -> None:
    acct, did = await _domain(store)
    await make_engine(store, db.dsn, FakeBackend()).run_once()
    job = await store.domains.setup(acct, did)
    d = await _row(store, did)
    assert (d["generation"], d["observed_generation"], d["status"]) == (1, 1, "active")
    async with store.pool.acquire() as conn:
        j = await dbseed.row(conn, "jobs", job.id)
        assert (j["status"], j["progress"]) == ("completed", 100)


async def test_setup_of_a_failed_domain_is_new_intent(store: Store) -> None:
    acct, did = await _domain(store)
    async with store.tx() as conn:
        await conn.execute("UPDATE domains SET status = 'failed', next_attempt_at = "
                           "'infinity' WHERE id = $1", did)
    await store.domains.setup(acct, did)
    d = await _row(store, did)
    assert (d["generation"], d["status"]) == (2, "provisioning")


async def test_a_setup_during_the_connected_only_pass_is_not_made_active(
        store: Store, db: Any) -> None:
    """The pass of the connected domain records its generation after the setup moved
    the intent on: the domain stays 'provisioning' (never 'active' before it is
    served), and the next pass sets it up."""
    acct, did = await _domain(store, backend_enabled=False, verified=False)
    backend = FakeBackend()
    jobs: list[str] = []

    async def set_up_meanwhile(_states: Any) -> None:
        backend.during_apply = None
        jobs.append((await store.domains.setup(acct, did)).id)

    backend.during_apply = set_up_meanwhile
    engine = make_engine(store, db.dsn, backend)
    await engine.run_once()
    d = await _row(store, did)
    assert (d["observed_generation"], d["generation"], d["status"]) == (1, 2, "provisioning")
