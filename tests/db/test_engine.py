"""The reconcile engine in isolation: a real PostgreSQL database per test, a fake mail
backend (tests/db/fakes.py), no mail stack. Leases, dead workers, retries with backoff,
permanent failures, compare-and-set recording, job settlement, crashes and re-applies,
each shown on the rows the store keeps."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

import pytest

from mailforge import claimant
from mailforge.backends.base import MailBackend
from mailforge.config import WorkerConfig
from mailforge.engine import Engine
from mailforge.errors import PermanentError, TemporaryError
from mailforge.models import DomainState
from mailforge.store.store import Store

from . import dbseed
from .fakes import FakeBackend, FakeStep

# Backoff: base 10 s doubling, capped at 15 s, jitter x0.75..1.25.
CFG = WorkerConfig(concurrency=1, batch_domains=50, poll_interval=0.05, lease_seconds=30.0,
                   retry_base_seconds=10.0, retry_max_seconds=15.0, max_attempts=5)


class Crash(BaseException):
    """The process dying: nothing after it runs, no handler sees it as an error."""


def make_engine(store: Store, dsn: str, backend: FakeBackend, cfg: WorkerConfig = CFG,
                steps: Sequence[FakeStep] = (), finished: list[str] | None = None) -> Engine:
    async def on_finished(job_ids: Sequence[str]) -> None:
        if finished is not None:
            finished.extend(job_ids)

    return Engine(store, backend, cfg, dsn, on_jobs_finished=on_finished, steps=steps)


async def seconds_until_retry(conn: Any, domain_id: str) -> float:
    return float(await conn.fetchval(
        "SELECT extract(epoch FROM next_attempt_at - now()) FROM domains WHERE id = $1",
        domain_id))


async def a_domain(store: Store, mailboxes: Sequence[str] = ("alice", "bob"),
                   **kw: Any) -> tuple[str, str, str, list[str]]:
    """(account id, domain id, domain name, mailbox ids), never converged."""
    name = dbseed.name()
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        did = await dbseed.domain(conn, acct, name, **kw)
        mids = [await dbseed.mailbox(conn, acct, did, lp) for lp in mailboxes]
    return acct, did, name, mids


def test_fake_backend_is_a_mail_backend() -> None:
    assert isinstance(FakeBackend(), MailBackend)


# ---------------------------------------------------------------- a pass, end to end


async def test_a_pass_converges_a_domain_and_settles_its_job(store: Store, db: Any) -> None:
    backend = FakeBackend()
    finished: list[str] = []
    engine = make_engine(store, db.dsn, backend, finished=finished)
    acct, did, name, mids = await a_domain(store)
    async with store.tx() as conn:
        ali = await dbseed.alias(conn, acct, did, "sales", [f"alice@{name}"])
    job = await dbseed.job(store, acct, [("domain", did), *(("mailbox", m) for m in mids),
                                         ("alias", ali)])

    assert await engine.run_once() == 1

    assert backend.batches == [[name]]
    assert set(backend.served[name].mailboxes) == {f"alice@{name}", f"bob@{name}"}
    assert backend.served[name].aliases == {f"sales@{name}": (f"alice@{name}",)}
    async with store.pool.acquire() as conn:
        d = await dbseed.row(conn, "domains", did)
        assert (d["observed_generation"], d["status"], d["lease_owner"], d["attempts"]) == \
            (1, "active", None, 0)
        for mid in mids:
            m = await dbseed.row(conn, "mailboxes", mid)
            assert (m["observed_generation"], m["status"]) == (1, "active")
        assert (await dbseed.row(conn, "aliases", ali))["observed_generation"] == 1
        j = await dbseed.row(conn, "jobs", job)
        assert (j["status"], j["progress"], j["done"], j["failed"]) == ("completed", 100, 4, 0)
        assert {i["state"] for i in await dbseed.job_items(conn, job)} == {"done"}
    assert finished == [job]
    assert await store.reconcile.unconverged() == {"domains": 0, "mailboxes": 0, "aliases": 0}

    # Nothing left to do: the next pass claims nothing and leaves the backend alone.
    assert await engine.run_once() == 0
    assert len(backend.batches) == 1


async def test_other_hosts_domains_are_not_claimed(store: Store, db: Any) -> None:
    backend = FakeBackend()
    _, did, _name, _ = await a_domain(store, mail_host="another-host")
    assert await make_engine(store, db.dsn, backend).run_once() == 0
    assert backend.batches == []
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "domains", did))["lease_owner"] is None


async def test_a_suspended_accounts_mailboxes_are_held_but_cannot_log_in(
        store: Store, db: Any) -> None:
    backend = FakeBackend()
    acct, _did, name, mids = await a_domain(store)
    async with store.tx() as conn:
        await conn.execute("UPDATE accounts SET status = 'suspended' WHERE id = $1", acct)
    await make_engine(store, db.dsn, backend).run_once()
    assert backend.served[name].mailboxes[f"alice@{name}"][1] is False
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "mailboxes", mids[0]))["status"] == "suspended"


# -------------------------------------------------------------------------- leases


async def test_claims_lease_each_domain_to_one_worker(store: Store) -> None:
    dids = [(await a_domain(store, mailboxes=()))[1] for _ in range(6)]

    first, second = await asyncio.gather(store.reconcile.claim_domains("w1", 4, 30),
                                         store.reconcile.claim_domains("w2", 4, 30))
    a = {s.domain.id for s in first}
    b = {s.domain.id for s in second}
    assert not a & b, "SKIP LOCKED and the lease hand each domain to one worker"
    assert a | b == set(dids)
    assert await store.reconcile.claim_domains("w3", 10, 30) == []

    async with store.pool.acquire() as conn:
        for did in dids:
            d = await dbseed.row(conn, "domains", did)
            assert d["lease_owner"] == ("w1" if did in a else "w2")
            left = float(await conn.fetchval(
                "SELECT extract(epoch FROM lease_until - now()) FROM domains WHERE id = $1",
                did))
            assert 29 < left <= 30


async def test_claim_marks_pending_jobs_processing(store: Store) -> None:
    acct, _did, _, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("mailbox", m) for m in mids])
    [state] = await store.reconcile.claim_domains("w1", 10, 30)
    assert [m.id for m in state.mailboxes] == mids
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "jobs", job))["status"] == "processing"


async def test_an_expired_lease_is_claimed_by_another_worker(store: Store) -> None:
    _, did, _, _ = await a_domain(store)
    assert len(await store.reconcile.claim_domains("w1", 10, 0.2)) == 1
    assert await store.reconcile.claim_domains("w2", 10, 30) == []
    await asyncio.sleep(0.3)
    [state] = await store.reconcile.claim_domains("w2", 10, 30)
    assert state.domain.id == did
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "domains", did))["lease_owner"] == "w2"


async def test_release_hands_domains_back_only_for_their_owner(store: Store) -> None:
    _, did, _, _ = await a_domain(store)
    await store.reconcile.claim_domains("w1", 10, 30)
    await store.reconcile.release([did], "someone-else")
    assert await store.reconcile.claim_domains("w2", 10, 30) == []
    await store.reconcile.release([did], "w1")
    assert len(await store.reconcile.claim_domains("w2", 10, 30)) == 1


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not claimant.pid_alive(proc.pid)
    return proc.pid


async def test_dead_workers_leases_are_released_and_live_ones_kept(store: Store) -> None:
    node = claimant.NODE
    dead = dead_pid()
    owners = {"dead": f"{node}:{dead}:0", "alive": f"{node}:{os.getpid()}:0",
              "other node": f"elsewhere:{dead}:0"}
    leased = {}
    for what, owner in owners.items():
        _, did, _, _ = await a_domain(store)
        assert len(await store.reconcile.claim_domains(owner, 1, 300)) == 1
        leased[what] = did

    assert await store.reconcile.release_dead_leases(node, claimant.pid_alive) == 1

    async with store.pool.acquire() as conn:
        kept = {what: (await dbseed.row(conn, "domains", did))["lease_owner"]
                for what, did in leased.items()}
    # Another node's process cannot be checked from here: its lease decides.
    assert kept == {"dead": None, "alive": owners["alive"],
                    "other node": owners["other node"]}


async def test_a_starting_engine_takes_over_a_dead_workers_domains(store: Store,
                                                                   db: Any) -> None:
    backend = FakeBackend()
    acct, _did, name, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("mailbox", m) for m in mids])
    await store.reconcile.claim_domains(f"{claimant.NODE}:{dead_pid()}:0", 10, 300)

    engine = make_engine(store, db.dsn, backend)
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        async with store.pool.acquire() as conn:
            deadline = time.monotonic() + 5
            while (await dbseed.row(conn, "jobs", job))["status"] != "completed":
                assert time.monotonic() < deadline, "the dead worker's lease was kept"
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert backend.applied(name) == 1


async def test_a_running_engine_wakes_on_notify(store: Store, db: Any) -> None:
    """Polling is slow here (30 s): only the NOTIFY can bring the change in time."""
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend,
                         cfg=WorkerConfig(concurrency=1, poll_interval=30.0))
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        deadline = time.monotonic() + 5
        async with store.pool.acquire() as conn:
            # Once its listener is in place a notification can no longer be missed.
            while not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND query LIKE 'LISTEN%'"):
                assert time.monotonic() < deadline, "the engine never listened"
                await asyncio.sleep(0.02)
        _, _did, name, _ = await a_domain(store)
        async with store.pool.acquire() as conn:
            await conn.execute("SELECT pg_notify('mailforge_work', $1)", store.mail_host)
            while name not in backend.served:
                assert time.monotonic() < deadline, "the notification did not wake a worker"
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


# ------------------------------------------------------------------ retries, failures


async def test_temporary_errors_back_off_exponentially_up_to_the_cap(store: Store,
                                                                     db: Any) -> None:
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend)
    acct, did, name, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("domain", did), *(("mailbox", m) for m in mids)])
    backend.fail_next(name, *(TemporaryError(f"busy {n}") for n in range(3)))

    # base 10 s, x2 per attempt, cap 15 s, jitter x0.75..1.25
    expected = [(7.5, 12.5), (11.25, 18.75), (11.25, 18.75)]
    async with store.pool.acquire() as conn:
        for attempt, (low, high) in enumerate(expected, start=1):
            assert await engine.run_once() == 1
            d = await dbseed.row(conn, "domains", did)
            assert (d["attempts"], d["last_error"], d["lease_owner"]) == \
                (attempt, f"busy {attempt - 1}", None)
            assert d["observed_generation"] == 0
            assert low - 0.5 <= await seconds_until_retry(conn, did) <= high
            # Not due yet: the next pass leaves it alone.
            assert await engine.run_once() == 0
            assert (await dbseed.row(conn, "jobs", job))["status"] == "processing"
            await dbseed.due_now(conn)

        assert await engine.run_once() == 1
        d = await dbseed.row(conn, "domains", did)
        assert (d["observed_generation"], d["attempts"], d["last_error"], d["status"]) == \
            (1, 0, None, "active")
        assert (await dbseed.row(conn, "jobs", job))["status"] == "completed"
    assert backend.applied(name) == 4


async def test_a_temporary_errors_own_delay_replaces_the_backoff(store: Store,
                                                                 db: Any) -> None:
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend)
    _, did, name, _ = await a_domain(store)
    backend.fail_next(name, TemporaryError("rate limited", delay=42.0))
    await engine.run_once()
    async with store.pool.acquire() as conn:
        assert 41.5 <= await seconds_until_retry(conn, did) <= 42.0  # no jitter
    assert await engine.run_once() == 0


async def test_an_unexpected_backend_exception_is_retried_for_the_whole_batch(
        store: Store, db: Any) -> None:
    backend = FakeBackend(raise_on_apply=RuntimeError("secret detail"))
    engine = make_engine(store, db.dsn, backend)
    dids = [(await a_domain(store))[1] for _ in range(2)]
    assert await engine.run_once() == 2
    async with store.pool.acquire() as conn:
        for did in dids:
            d = await dbseed.row(conn, "domains", did)
            # The exception's text may carry anything: only its type is recorded.
            assert (d["attempts"], d["last_error"]) == (1, "backend error: RuntimeError")
            assert 7 < await seconds_until_retry(conn, did) < 13


async def test_temporary_errors_become_permanent_after_max_attempts(store: Store,
                                                                    db: Any) -> None:
    backend = FakeBackend()
    cfg = WorkerConfig(retry_base_seconds=1.0, retry_max_seconds=1.0, max_attempts=2)
    engine = make_engine(store, db.dsn, backend, cfg=cfg)
    acct, did, name, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("mailbox", m) for m in mids])
    backend.fail_next(name, TemporaryError("down"), TemporaryError("still down"))
    async with store.pool.acquire() as conn:
        await engine.run_once()
        assert (await dbseed.row(conn, "domains", did))["status"] == "pending"
        await dbseed.due_now(conn)
        await engine.run_once()
        d = await dbseed.row(conn, "domains", did)
        assert (d["status"], d["last_error"]) == ("failed",
                                                  "gave up after 2 attempts: still down")
        assert await conn.fetchval("SELECT next_attempt_at = 'infinity' FROM domains "
                                   "WHERE id = $1", did)
        assert (await dbseed.row(conn, "jobs", job))["status"] == "failed"


async def test_a_permanent_error_is_recorded_and_not_retried_until_intent_changes(
        store: Store, db: Any) -> None:
    backend = FakeBackend()
    finished: list[str] = []
    engine = make_engine(store, db.dsn, backend, finished=finished)
    acct, did, name, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("domain", did), *(("mailbox", m) for m in mids)])
    backend.fail_next(name, PermanentError("zone refused"))

    assert await engine.run_once() == 1
    async with store.pool.acquire() as conn:
        d = await dbseed.row(conn, "domains", did)
        assert (d["status"], d["last_error"], d["lease_owner"]) == \
            ("failed", "zone refused", None)
        for mid in mids:
            m = await dbseed.row(conn, "mailboxes", mid)
            assert (m["status"], m["last_error"]) == ("failed", "zone refused")
        j = await dbseed.row(conn, "jobs", job)
        assert (j["status"], j["failed"], j["message"]) == ("failed", 3, "failed")
        items = await dbseed.job_items(conn, job)
        assert {(i["state"], i["error"]) for i in items} == {("failed", "zone refused")}
        assert finished == [job]

        # Waiting does not bring it back...
        await dbseed.due_now(conn)
        assert await engine.run_once() == 0
        # ...a change of intent does.
        await dbseed.change_mailbox(conn, mids[0], name="Alice")
    job2 = await dbseed.job(store, acct, [("mailbox", mids[0])])
    assert await engine.run_once() == 1
    async with store.pool.acquire() as conn:
        m = await dbseed.row(conn, "mailboxes", mids[0])
        assert (m["status"], m["observed_generation"], m["last_error"]) == ("active", 2, None)
        assert (await dbseed.row(conn, "domains", did))["status"] == "active"
        assert (await dbseed.row(conn, "jobs", job2))["status"] == "completed"


async def test_a_mailbox_refused_alone_fails_alone(store: Store, db: Any) -> None:
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend)
    acct, did, name, mids = await a_domain(store, mailboxes=("alice", "bob", "carol"))
    job = await dbseed.job(store, acct, [("mailbox", m) for m in mids])
    backend.mailbox_failures[f"bob@{name}"] = "home directory refused"
    await engine.run_once()
    async with store.pool.acquire() as conn:
        statuses = [(await dbseed.row(conn, "mailboxes", m))["status"] for m in mids]
        assert statuses == ["active", "failed", "active"]
        assert (await dbseed.row(conn, "domains", did))["status"] == "active"
        j = await dbseed.row(conn, "jobs", job)
        assert (j["status"], j["done"], j["failed"], j["message"]) == \
            ("completed", 2, 1, "completed with 1 of 3 failed")
        items = await dbseed.job_items(conn, job)
        assert [(i["state"], i["error"]) for i in items] == [
            ("done", None), ("failed", "home directory refused"), ("done", None)]
    assert set(backend.served[name].mailboxes) == {f"alice@{name}", f"carol@{name}"}


# -------------------------------------------------------------------- domain steps


async def test_a_failing_step_keeps_the_domain_but_records_its_mailboxes(
        store: Store, db: Any) -> None:
    backend = FakeBackend()
    step = FakeStep()
    engine = make_engine(store, db.dsn, backend, steps=[step])
    acct, did, name, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("domain", did), *(("mailbox", m) for m in mids)])
    step.fail_next(name, TemporaryError("dns: waiting for records"),
                   ValueError("a bug in the step"))

    async with store.pool.acquire() as conn:
        await engine.run_once()
        d = await dbseed.row(conn, "domains", did)
        assert (d["observed_generation"], d["attempts"], d["last_error"], d["lease_owner"]) \
            == (0, 1, "dns: waiting for records", None)
        # The mail server holds the mailboxes although the domain is not done.
        for mid in mids:
            assert (await dbseed.row(conn, "mailboxes", mid))["status"] == "active"
        items = await dbseed.job_items(conn, job)
        assert [i["state"] for i in items] == ["pending", "done", "done"]

        await dbseed.due_now(conn)
        await engine.run_once()
        d = await dbseed.row(conn, "domains", did)
        assert (d["attempts"], d["last_error"]) == (2, "fake-step: unexpected ValueError")

        await dbseed.due_now(conn)
        await engine.run_once()
        assert (await dbseed.row(conn, "domains", did))["observed_generation"] == 1
        assert (await dbseed.row(conn, "jobs", job))["status"] == "completed"
    assert step.seen == [name] * 3


async def test_an_unproven_domain_serves_nothing_until_proven(store: Store,
                                                              db: Any) -> None:
    """As the DNS step does: until the name is proven the step fails temporarily, the
    backend renders the domain absent and its mailboxes stay pending."""
    backend = FakeBackend()
    step = FakeStep()
    engine = make_engine(store, db.dsn, backend, steps=[step])
    acct, did, name, mids = await a_domain(store, verified=False)
    job = await dbseed.job(store, acct, [("mailbox", m) for m in mids])
    step.fail_next(name, TemporaryError("dns: proven; serving it from the next pass"))

    await engine.run_once()
    assert name not in backend.served
    async with store.pool.acquire() as conn:
        for mid in mids:
            m = await dbseed.row(conn, "mailboxes", mid)
            assert (m["status"], m["observed_generation"]) == ("pending", 0)
        assert (await dbseed.row(conn, "jobs", job))["status"] == "processing"
        # The proof is recorded with a new generation (store/dns.py record_ownership).
        await conn.execute("UPDATE domains SET ownership_verified_at = now() WHERE id = $1",
                           did)
        await dbseed.change_domain(conn, did)
    await engine.run_once()
    assert set(backend.served[name].mailboxes) == {f"alice@{name}", f"bob@{name}"}
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "jobs", job))["status"] == "completed"


# ------------------------------------------------------------------ compare-and-set


async def test_a_mailbox_changed_during_apply_stays_pending(store: Store, db: Any) -> None:
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend)
    acct, _did, name, mids = await a_domain(store)
    job1 = await dbseed.job(store, acct, [("mailbox", mids[0])])
    job2: list[str] = []

    async def change_meanwhile(_states: Sequence[DomainState]) -> None:
        backend.during_apply = None
        async with store.tx() as conn:
            await dbseed.change_mailbox(conn, mids[0], password_hash="{PLAIN}new")
        job2.append(await dbseed.job(store, acct, [("mailbox", mids[0])]))

    backend.during_apply = change_meanwhile
    await engine.run_once()
    assert backend.served[name].mailboxes[f"alice@{name}"][0] == "{PLAIN}unused"
    async with store.pool.acquire() as conn:
        m = await dbseed.row(conn, "mailboxes", mids[0])
        # What the backend holds (generation 1) is recorded, not the newer intent.
        assert (m["generation"], m["observed_generation"]) == (2, 1)
        assert (await dbseed.row(conn, "jobs", job1))["status"] == "completed"
        assert (await dbseed.row(conn, "jobs", job2[0]))["status"] != "completed"
    assert (await store.reconcile.unconverged())["mailboxes"] == 1

    # The next pass picks the change up.
    assert await engine.run_once() == 1
    assert backend.served[name].mailboxes[f"alice@{name}"][0] == "{PLAIN}new"
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "mailboxes", mids[0]))["observed_generation"] == 2
        assert (await dbseed.row(conn, "jobs", job2[0]))["status"] == "completed"


async def test_a_domain_deleted_during_apply_is_removed_by_the_next_pass(
        store: Store, db: Any) -> None:
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend)
    acct, did, name, mids = await a_domain(store)
    jobs: list[str] = []

    async def delete_meanwhile(_states: Sequence[DomainState]) -> None:
        backend.during_apply = None
        async with store.tx() as conn:
            await dbseed.change_domain(conn, did, deleted=True)
        jobs.append(await dbseed.job(store, acct, [("domain", did)]))

    backend.during_apply = delete_meanwhile
    await engine.run_once()
    assert name in backend.served
    async with store.pool.acquire() as conn:
        d = await dbseed.row(conn, "domains", did)
        assert (d["deleted"], d["generation"], d["observed_generation"]) == (True, 2, 1)

    await engine.run_once()
    assert name not in backend.served
    async with store.pool.acquire() as conn:
        assert await dbseed.row(conn, "domains", did) == {}  # purged, mailboxes with it
        assert await dbseed.row(conn, "mailboxes", mids[0]) == {}
        assert (await dbseed.row(conn, "jobs", jobs[0]))["status"] == "completed"


async def test_a_late_record_of_an_older_state_does_not_roll_back(store: Store) -> None:
    """A worker whose lease ran out records after a newer pass did: compare-and-set
    keeps the newer observation."""
    _acct, did, _, mids = await a_domain(store, mailboxes=("alice",))
    [old] = await store.reconcile.claim_domains("slow", 10, 30)
    async with store.tx() as conn:
        await dbseed.change_mailbox(conn, mids[0], quota_mb=2048)
        await dbseed.expire_leases(conn)
    [new] = await store.reconcile.claim_domains("fast", 10, 30)
    await store.reconcile.record_applied(new, "fast", True, {})
    await store.reconcile.record_applied(old, "slow", True, {})
    async with store.pool.acquire() as conn:
        m = await dbseed.row(conn, "mailboxes", mids[0])
        assert (m["generation"], m["observed_generation"], m["status"]) == (2, 2, "active")
        assert (await dbseed.row(conn, "domains", did))["observed_generation"] == 1


async def test_recording_the_same_state_twice_changes_nothing_more(store: Store) -> None:
    acct, _did, _, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("mailbox", m) for m in mids])
    [state] = await store.reconcile.claim_domains("w1", 10, 30)
    assert await store.reconcile.record_applied(state, "w1", True, {}) == [job]
    async with store.pool.acquire() as conn:
        before = [await dbseed.row(conn, "mailboxes", m) for m in mids]
        # A job finishes once: the second record reports nothing finished.
        assert await store.reconcile.record_applied(state, "w1", True, {}) == []
        assert [await dbseed.row(conn, "mailboxes", m) for m in mids] == before


# --------------------------------------------------------------- crashes, re-apply


async def test_a_crash_between_apply_and_record_is_redone_after_the_lease(
        store: Store, db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FakeBackend()
    acct, did, name, mids = await a_domain(store)
    job = await dbseed.job(store, acct, [("domain", did), *(("mailbox", m) for m in mids)])

    # The first worker's process dies right after the backend applied.
    doomed_store = Store(db.pool, store.mail_host)

    async def die(*_a: Any, **_k: Any) -> list[str]:
        raise Crash

    monkeypatch.setattr(doomed_store.reconcile, "record_applied", die)
    with pytest.raises(Crash):
        await make_engine(doomed_store, db.dsn, backend).run_once("node:1:0")
    held = dict(backend.served)
    assert name in held

    async with store.pool.acquire() as conn:
        d = await dbseed.row(conn, "domains", did)
        assert (d["lease_owner"], d["observed_generation"]) == ("node:1:0", 0)
        assert (await dbseed.row(conn, "jobs", job))["status"] == "processing"

        survivor = make_engine(store, db.dsn, backend)
        assert await survivor.run_once() == 0  # the lease still stands
        await dbseed.expire_leases(conn)
        assert await survivor.run_once() == 1

        # Applied twice, to the same result: redoing is harmless.
        assert backend.applied(name) == 2
        assert backend.served == held
        d = await dbseed.row(conn, "domains", did)
        assert (d["lease_owner"], d["observed_generation"], d["status"]) == \
            (None, 1, "active")
        assert (await dbseed.row(conn, "jobs", job))["status"] == "completed"


async def test_a_pass_cancelled_mid_apply_hands_its_domains_back(store: Store,
                                                                 db: Any) -> None:
    backend = FakeBackend()
    applying = asyncio.Event()

    async def hang(_states: Sequence[DomainState]) -> None:
        applying.set()
        await asyncio.sleep(3600)

    backend.during_apply = hang
    _, did, _, _ = await a_domain(store)
    task = asyncio.create_task(make_engine(store, db.dsn, backend).run_once("w1"))
    await asyncio.wait_for(applying.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with store.pool.acquire() as conn:
        d = await dbseed.row(conn, "domains", did)
        assert (d["lease_owner"], d["observed_generation"]) == (None, 0)
    assert len(await store.reconcile.claim_domains("w2", 10, 30)) == 1


async def test_expired_job_secrets_are_erased_by_a_pass(store: Store, db: Any) -> None:
    acct, _, _, _ = await a_domain(store, mailboxes=())
    async with store.tx() as conn:
        old = await store.jobs.insert(conn, acct, "test", None, [], sealed_secrets=b"x",
                                      secrets_expire_at=await conn.fetchval(
                                          "SELECT now() - interval '1 second'"))
        new = await store.jobs.insert(conn, acct, "test", None, [], sealed_secrets=b"y",
                                      secrets_expire_at=await conn.fetchval(
                                          "SELECT now() + interval '1 hour'"))
    await make_engine(store, db.dsn, FakeBackend()).run_once()
    async with store.pool.acquire() as conn:
        assert (await dbseed.row(conn, "jobs", old.id))["sealed_secrets"] is None
        assert (await dbseed.row(conn, "jobs", new.id))["sealed_secrets"] == b"y"
