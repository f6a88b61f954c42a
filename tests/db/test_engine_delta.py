"""Delta passes (issue 11): a pass costs what changed, not the size of the domain.

A backend that takes deltas (``backends.base.DeltaBackend``) is handed only the lagging
mailboxes and aliases of a domain it already holds at the domain's generation
(``DomainState.complete`` False); every domain-wide change (setup, delete, proof of the
name, alias domains, account suspension, DKIM and DNS intent) bumps the domain's
generation and so brings a complete state; the domain steps (DNS) run only while the
domain itself is unconverged. Each case is shown on a real database with the fake
backend of tests/db/fakes.py, which keeps a delta's unlisted objects as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailforge.engine import Engine
from mailforge.errors import PermanentError, TemporaryError
from mailforge.models import DomainState
from mailforge.store.queries import Q
from mailforge.store.store import Store

from . import dbseed
from .fakes import DeltaFakeBackend, FakeBackend, FakeStep
from .test_engine import CFG, a_domain


def engine_with(store: Store, dsn: str, backend: FakeBackend,
                step: FakeStep | None = None) -> Engine:
    return Engine(store, backend, CFG, dsn, steps=[step] if step else [])


def last(backend: FakeBackend, name: str) -> DomainState:
    """The state of domain *name* in the last batch that carried it."""
    for batch in reversed(backend.states):
        for st in batch:
            if st.domain.name == name:
                return st
    raise AssertionError(f"{name} was never applied")


async def converged(store: Store, dsn: str, backend: FakeBackend,
                    step: FakeStep | None = None,
                    mailboxes: Sequence[str] = ("alice", "bob", "carol")
                    ) -> tuple[Engine, str, str, str, list[str]]:
    """A domain converged once (complete): (engine, account, domain id, name, mailboxes)."""
    engine = engine_with(store, dsn, backend, step)
    acct, did, name, mids = await a_domain(store, mailboxes=mailboxes)
    assert await engine.run_once() == 1
    assert last(backend, name).complete
    return engine, acct, did, name, mids


async def test_a_new_mailbox_in_a_converged_domain_is_a_delta(store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    step = FakeStep()
    engine, acct, did, name, _ = await converged(store, db.dsn, backend, step)
    async with store.tx() as conn:
        new = await dbseed.mailbox(conn, acct, did, "dave")
        ali = await dbseed.alias(conn, acct, did, "sales", [f"alice@{name}"])
    job = await dbseed.job(store, acct, [("mailbox", new), ("alias", ali)])

    assert await engine.run_once() == 1

    st = last(backend, name)
    assert not st.complete
    assert [m.address for m in st.mailboxes] == [f"dave@{name}"]
    assert [a.address for a in st.aliases] == [f"sales@{name}"]
    # The backend still holds the others: a delta never removes what it does not list.
    assert set(backend.served[name].mailboxes) == {
        f"{lp}@{name}" for lp in ("alice", "bob", "carol", "dave")}
    assert backend.asked == [[name]]
    # The domain itself did not change: no DNS step for a mailbox.
    assert step.seen == [name]
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "mailboxes", new))["status"] == "active"
        assert (await dbseed.row(conn, "aliases", ali))["observed_generation"] == 1
        assert (await dbseed.row(conn, "jobs", job))["status"] == "completed"
        d = await dbseed.row(conn, "domains", did)
        assert (d["observed_generation"], d["applied_generation"], d["lease_owner"]) \
            == (1, 1, None)


async def test_changed_and_deleted_mailboxes_travel_in_deltas(store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    engine, acct, _did, name, mids = await converged(store, db.dsn, backend)
    async with store.tx() as conn:
        await dbseed.change_mailbox(conn, mids[0], password_hash="{PLAIN}new")
        await dbseed.change_mailbox(conn, mids[1], deleted=True)
    job = await dbseed.job(store, acct, [("mailbox", mids[0]), ("mailbox", mids[1])])
    await engine.run_once()
    st = last(backend, name)
    assert not st.complete
    assert {m.id for m in st.mailboxes} == {mids[0], mids[1]}
    assert backend.served[name].mailboxes == {
        f"alice@{name}": ("{PLAIN}new", True), f"carol@{name}": ("{PLAIN}unused", True)}
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "jobs", job))["status"] == "completed"


async def test_a_permanent_failure_of_a_delta_fails_only_its_lagging_mailboxes(
        store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    engine, acct, did, name, mids = await converged(store, db.dsn, backend)
    async with store.tx() as conn:
        new = await dbseed.mailbox(conn, acct, did, "dave")
    job = await dbseed.job(store, acct, [("mailbox", new)])
    backend.fail_next(name, PermanentError("backend refused"))
    await engine.run_once()
    assert not last(backend, name).complete
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "mailboxes", new))["status"] == "failed"
        assert {(await dbseed.row(conn, "mailboxes", m))["status"] for m in mids} == {"active"}
        assert (await dbseed.row(conn, "jobs", job))["status"] == "failed"


async def test_a_backend_without_deltas_always_gets_complete_states(store: Store,
                                                                   db: Any) -> None:
    backend = FakeBackend()  # no needs_complete: takes only complete states
    engine, acct, did, name, _ = await converged(store, db.dsn, backend)
    async with store.tx() as conn:
        await dbseed.mailbox(conn, acct, did, "dave")
    await engine.run_once()
    st = last(backend, name)
    assert st.complete and len(st.mailboxes) == 4


async def test_the_backend_may_ask_for_complete_states(store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    engine, acct, did, name, _ = await converged(store, db.dsn, backend)
    backend.complete_for.add(name)
    async with store.tx() as conn:
        await dbseed.mailbox(conn, acct, did, "dave")
    await engine.run_once()
    st = last(backend, name)
    assert st.complete and len(st.mailboxes) == 4


async def test_a_backend_failing_to_answer_gets_complete_states(store: Store,
                                                                db: Any) -> None:
    class Broken(DeltaFakeBackend):
        def needs_complete(self, domain_names: Sequence[str]) -> bool:
            raise RuntimeError("a bug in the backend")

    backend = Broken()
    engine, acct, did, name, _ = await converged(store, db.dsn, backend)
    async with store.tx() as conn:
        await dbseed.mailbox(conn, acct, did, "dave")
    assert await engine.run_once() == 1
    st = last(backend, name)
    assert st.complete and len(st.mailboxes) == 4


async def test_a_full_resync_hands_every_domain_complete_once(store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    engine, _acct, _did, name, _ = await converged(store, db.dsn, backend)
    _, _, other, _ = await a_domain(store)
    await engine.run_once()
    backend.batches.clear()
    assert await engine.run_once() == 0  # all converged: nothing to claim

    backend.resync = True
    await engine.queue_resync()
    assert backend.resync is False  # acknowledged after the store marked the domains
    assert backend.resync_done == 0  # both domains still wait for their pass
    assert await engine.run_once() == 2
    assert sorted(backend.batches[0]) == sorted([name, other])
    assert all(st.complete for st in backend.states[-1])
    assert await engine.run_once() == 0  # once
    await engine.check_resync_done()
    await engine.check_resync_done()
    assert backend.resync_done == 1  # told once, when nothing was left


async def test_a_domain_step_still_retrying_does_not_make_mailbox_passes_complete(
        store: Store, db: Any) -> None:
    """The backend held the domain whole at this generation (applied_generation) while
    DNS waits to verify: a mailbox added meanwhile is a delta, the step retries."""
    backend = DeltaFakeBackend()
    step = FakeStep()
    engine = engine_with(store, db.dsn, backend, step)
    acct, did, name, _ = await a_domain(store)
    step.fail_next(name, TemporaryError("dns: waiting for records"))
    await engine.run_once()
    assert last(backend, name).complete
    async with store.tx() as conn:
        d = await dbseed.row(conn, "domains", did)
        assert (d["observed_generation"], d["applied_generation"]) == (0, 1)
        await dbseed.mailbox(conn, acct, did, "dave")
        await dbseed.due_now(conn)
    await engine.run_once()
    st = last(backend, name)
    assert not st.complete and [m.local_part for m in st.mailboxes] == ["dave"]
    assert step.seen == [name, name]  # the domain is unconverged: its step ran again
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "domains", did))["observed_generation"] == 1


async def test_a_pass_with_only_a_step_due_leaves_the_backend_alone(store: Store,
                                                                    db: Any) -> None:
    backend = DeltaFakeBackend()
    step = FakeStep()
    engine = engine_with(store, db.dsn, backend, step)
    _, _, name, _ = await a_domain(store)
    step.fail_next(name, TemporaryError("dns: waiting for records"))
    await engine.run_once()
    async with store.tx() as conn:
        await dbseed.due_now(conn)
    await engine.run_once()
    assert backend.applied(name) == 1  # the re-check did not touch the mail server
    assert step.seen == [name, name]


# ------------------------------------------- domain-wide changes bring complete states


async def _next_is_complete(engine: Engine, backend: DeltaFakeBackend, name: str,
                            step: FakeStep | None = None) -> DomainState:
    before = len(step.seen) if step else 0
    await engine.run_once()
    st = last(backend, name)
    assert st.complete, "a domain-wide change must bring a complete state"
    if step is not None:
        assert len(step.seen) > before, "a domain-wide change must run the domain steps"
    return st


async def test_account_suspension_and_unsuspension_bring_complete_states(
        store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    step = FakeStep()
    engine, acct, _did, name, _ = await converged(store, db.dsn, backend, step)
    async with store.tx() as conn:
        parent = await dbseed.account(conn)
        await conn.execute("UPDATE accounts SET parent_id = $1 WHERE id = $2", parent, acct)
    await store.accounts.set_suspended(parent, acct, True)
    st = await _next_is_complete(engine, backend, name, step)
    assert st.account_suspended and len(st.mailboxes) == 3
    assert not any(ok for _h, ok in backend.served[name].mailboxes.values())
    await store.accounts.set_suspended(parent, acct, False)
    st = await _next_is_complete(engine, backend, name, step)
    assert all(ok for _h, ok in backend.served[name].mailboxes.values())


async def test_alias_domain_added_and_removed_bring_complete_states(store: Store,
                                                                    db: Any) -> None:
    backend = DeltaFakeBackend()
    engine, acct, did, name, _ = await converged(store, db.dsn, backend)
    async with store.tx() as conn:
        alias_id = await dbseed.domain(conn, acct)
    await engine.run_once()
    target = await store.domains.get(acct, did)
    alias = await store.domains.get(acct, alias_id)
    await store.aliases.set_alias_domain(acct, alias, target)
    st = await _next_is_complete(engine, backend, name)
    assert st.alias_domains == (alias.name,)
    await store.aliases.set_alias_domain(acct, alias, None)
    st = await _next_is_complete(engine, backend, name)
    assert st.alias_domains == ()


async def test_an_alias_domain_deleted_or_set_up_brings_its_target_complete(
        store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    engine, acct, did, name, _ = await converged(store, db.dsn, backend)
    async with store.tx() as conn:
        # Proven (check-ns) but not set up yet: it routes nothing into its target.
        alias_id = await dbseed.domain(conn, acct, backend_enabled=False, alias_of=did)
    await engine.run_once()
    alias = await store.domains.get(acct, alias_id)
    await store.domains.setup(acct, alias_id)
    st = await _next_is_complete(engine, backend, name)
    assert st.alias_domains == (alias.name,)
    await store.domains.request_delete(acct, alias_id)
    st = await _next_is_complete(engine, backend, name)
    assert st.alias_domains == ()


async def test_proof_of_the_name_brings_a_complete_state(store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    engine = engine_with(store, db.dsn, backend)
    _, did, name, _ = await a_domain(store, verified=False)
    await engine.run_once()
    assert name not in backend.served
    assert await store.domains.record_ownership(did)
    st = await _next_is_complete(engine, backend, name)
    assert len(st.mailboxes) == 2 and set(backend.served[name].mailboxes) == {
        f"alice@{name}", f"bob@{name}"}


async def test_domain_delete_brings_a_complete_state(store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    engine, acct, did, name, _ = await converged(store, db.dsn, backend)
    await store.domains.request_delete(acct, did)
    await _next_is_complete(engine, backend, name)
    assert name not in backend.served


async def test_dkim_and_dns_intent_bring_complete_states_and_run_the_step(
        store: Store, db: Any) -> None:
    backend = DeltaFakeBackend()
    step = FakeStep()
    engine, acct, did, name, _ = await converged(store, db.dsn, backend, step)
    await store.domains.request_rotation(acct, did)
    await _next_is_complete(engine, backend, name, step)
    assert await store.domains.allow_dns_changes(name, True, False) is not None
    await _next_is_complete(engine, backend, name, step)
    # A time-based DKIM move falling due (dns.step.revisit_loop): the step runs again.
    async with store.tx() as conn:
        await conn.execute("UPDATE domains SET dns_revisit_at = now() WHERE id = $1", did)
    assert await store.dns.requeue_due() == 1
    await _next_is_complete(engine, backend, name, step)


async def test_a_mailbox_change_runs_no_domain_step(store: Store, db: Any) -> None:
    backend = FakeBackend()  # true for complete states too: the step follows the domain
    step = FakeStep()
    engine, _acct, _did, name, mids = await converged(store, db.dsn, backend, step)
    async with store.tx() as conn:
        await dbseed.change_mailbox(conn, mids[0], password_hash="{PLAIN}new")
    await engine.run_once()
    assert backend.applied(name) == 2
    assert step.seen == [name]


# ---------------------------------------------------------------- tenants, indexes


async def test_a_delta_carries_only_its_own_domains_objects(store: Store, db: Any) -> None:
    """Two tenants change a mailbox each in one pass: each delta holds its own only."""
    backend = DeltaFakeBackend()
    engine = engine_with(store, db.dsn, backend)
    a1, _d1, n1, m1 = await a_domain(store)
    _a2, d2, n2, m2 = await a_domain(store)
    await engine.run_once()
    async with store.tx() as conn:
        await dbseed.change_mailbox(conn, m1[0], password_hash="{PLAIN}one")
        await dbseed.change_mailbox(conn, m2[1], password_hash="{PLAIN}two")
    await engine.run_once()
    s1, s2 = last(backend, n1), last(backend, n2)
    assert not s1.complete and not s2.complete
    assert [m.id for m in s1.mailboxes] == [m1[0]]
    assert [m.id for m in s2.mailboxes] == [m2[1]]
    assert {m.account_id for m in s1.mailboxes} == {a1}
    assert {m.domain_id for m in s2.mailboxes} == {d2}
    assert backend.served[n1].mailboxes[f"bob@{n1}"] == ("{PLAIN}unused", True)


async def test_delta_loading_uses_the_partial_indexes(store: Store, db: Any) -> None:
    """Finding a domain's lagging objects reads the partial index of unconverged rows,
    never the domain's mailboxes."""
    acct, did, _name, _ = await a_domain(store, mailboxes=())
    async with store.tx() as conn:
        await conn.execute(
            "INSERT INTO mailboxes (id, account_id, domain_id, local_part, address, "
            "password_hash, quota_mb, generation, observed_generation) "
            "SELECT 'usr_' || i, $1, $2, 'u' || i, 'u' || i || '@' || d.name, 'x', 1, 1, 1 "
            "FROM generate_series(1, 5000) i, domains d WHERE d.id = $2", acct, did)
        await conn.execute(
            "INSERT INTO aliases (id, account_id, domain_id, address, targets, "
            "generation, observed_generation) "
            "SELECT 'ali_' || i, $1, $2, 'a' || i || '@' || d.name, ARRAY['x@y.test'], 1, 1 "
            "FROM generate_series(1, 5000) i, domains d WHERE d.id = $2", acct, did)
        await conn.execute("ANALYZE mailboxes")
        await conn.execute("ANALYZE aliases")
        for query, index in ((Q.domain_mailboxes_lagging, "mailboxes_unconverged_idx"),
                             (Q.domain_aliases_lagging, "aliases_unconverged_idx")):
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query, did))
            assert index in plan, plan
        # The claim (every poll) reads the lagging sets from the partial indexes too,
        # never the mailboxes of each domain (it once seq-scanned them per domain).
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN " + Q.claim_domains, "test-host", 50, "x", 30.0))
        assert "mailboxes_unconverged_idx" in plan and "aliases_unconverged_idx" in plan, plan
        assert "Seq Scan on mailboxes" not in plan, plan


async def test_a_pass_that_lost_its_lease_while_hashing_writes_nothing(store: Store,
                                                                       db: Any) -> None:
    """Hashing runs before the backend applies and can outlast the lease; another
    worker then holds the domain with newer state, which the late pass must not undo."""
    backend = DeltaFakeBackend()
    engine, _acct, did, name, _ = await converged(store, db.dsn, backend)
    backend.batches.clear()
    async with store.tx() as conn:
        await conn.execute("UPDATE mailboxes SET generation = generation + 1"
                           " WHERE domain_id = $1 AND local_part = 'alice'", did)

    async def lose_the_lease(states: list[DomainState]) -> list[DomainState]:
        async with store.tx() as conn:
            await conn.execute("UPDATE domains SET lease_owner = 'other:1:0',"
                               " lease_until = now() + interval '1 minute' WHERE id = $1", did)
        return states

    engine.before_apply = lose_the_lease
    assert await engine.run_once() == 0
    assert backend.batches == []  # nothing written for a domain held by another
    async with store.tx() as conn:
        d = await dbseed.row(conn, "domains", did)
        alice = await conn.fetchrow("SELECT * FROM mailboxes WHERE domain_id = $1"
                                    " AND local_part = 'alice'", did)
    assert d["lease_owner"] == "other:1:0"  # the new holder keeps its lease
    assert alice["observed_generation"] < alice["generation"]  # left for the holder
    assert name


async def test_a_step_failure_keeps_the_lease_until_the_retry_is_recorded(
        store: Store, db: Any) -> None:
    """Between recording what the backend holds and recording the retry, no other
    worker may claim the domain (the retry would then clear that worker's lease and a
    third would claim it while the second still ran)."""
    backend = DeltaFakeBackend()
    step = FakeStep()
    engine = engine_with(store, db.dsn, backend, step)
    _acct, did, name, _ = await a_domain(store)
    (st,) = await store.reconcile.claim_domains("w:1:0", 10, 60)
    await store.reconcile.record_applied(st, "w:1:0", False, {})
    assert await store.reconcile.claim_domains("w:2:0", 10, 60) == []
    async with store.tx() as conn:
        assert (await dbseed.row(conn, "domains", did))["lease_owner"] == "w:1:0"
    await store.reconcile.record_retry(st, "dns: waiting", 1.0, 10.0, 0.0)
    async with store.tx() as conn:
        assert (await dbseed.row(conn, "domains", did))["lease_owner"] is None
    assert name and engine
