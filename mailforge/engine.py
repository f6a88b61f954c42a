"""The reconcile engine: workers that converge the mail backend to the desired state.

Level-triggered: a worker does not replay events, it asks the store which domains
have objects whose ``observed_generation`` lags their ``generation``, claims a batch
of them (``FOR UPDATE SKIP LOCKED`` plus a lease, committed at once), converges the
backend to their *current* desired state outside any transaction, and records the
generations it converged. A crash anywhere leaves the work unconverged and the
lease expires, so another pass redoes it; since applying is idempotent, redoing is
harmless.

Workers wake on PostgreSQL ``NOTIFY`` (a hint, fast) and also poll (the guarantee: a
notification lost while the listener reconnects strands nothing). Outcomes follow
kopf: a ``TemporaryError`` is retried with capped exponential backoff, a
``PermanentError`` is recorded on the domain, its pending objects and their jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import asyncpg
import structlog

from . import claimant
from .backends.base import ApplyResult, DeltaBackend, MailBackend, ResyncingBackend
from .config import WorkerConfig
from .errors import PermanentError, ReconcileError, TemporaryError
from .log import get
from .models import DomainState
from .retention import RetentionPurger
from .store import db
from .store.store import WORK_CHANNEL, Store

log = get(__name__)

JobsFinished = Callable[[Sequence[str]], Awaitable[None]]


class DomainStep(Protocol):
    """A domain-level convergence step run after the mail backend applied a domain
    (DKIM keys, DNS records, verification...). It must be idempotent, and raises
    ``TemporaryError``/``PermanentError``. A domain is converged (its
    ``observed_generation`` recorded) only when the backend and every step succeed; its
    mailboxes are recorded as soon as the backend holds them.

    Steps run only while the domain itself is unconverged (``observed_generation <
    generation``): a pass that only brings mailboxes or aliases skips them (the state
    it sees may then be a delta, so a step must read the domain, not its mailboxes).
    Work a step needs later (a DKIM rotation or retirement falling due) is asked for by
    bumping the domain's generation (``dns.step.revisit_loop``); a step that waits
    (records to verify) raises ``TemporaryError`` and so keeps the domain unconverged."""

    name: str

    async def converge(self, state: DomainState) -> None: ...


@runtime_checkable
class SettlingStep(Protocol):
    """Optional for a DomainStep: work it left running in the background (the DKIM
    signer's restart after a setup) that must finish before a pass records mailboxes
    as served; ``settle`` waits for it (at once when there is none)."""

    async def settle(self) -> None: ...


class Engine:
    def __init__(self, store: Store, backend: MailBackend, cfg: WorkerConfig,
                 dsn: str, on_jobs_finished: JobsFinished | None = None,
                 steps: Sequence[DomainStep] = ()) -> None:
        self.store = store
        self.backend = backend
        self.steps = list(steps)
        # Domain steps talk to slow things (DNS providers): bound how many run at once.
        self._step_slots = asyncio.Semaphore(16)
        self.cfg = cfg
        self.dsn = dsn
        self.on_jobs_finished = on_jobs_finished
        self._wake = asyncio.Event()
        self._node = claimant.NODE
        self._id = f"{self._node}:{os.getpid()}"
        self.passes = 0
        # A full resync was queued and the backend not yet told it is done.
        self._resync_waiting = False
        self.last_pass_at: float | None = None
        # Deleted mailboxes past their retention: purged now and then, between passes.
        self.retention = RetentionPurger(store, backend)

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        released = await self.store.reconcile.release_dead_leases(self._node, claimant.pid_alive)
        if released:
            log.info("released leases of dead workers", count=released)
        await self.queue_resync()
        tasks = [asyncio.create_task(self._listen(stop), name="engine-listen")]
        tasks += [asyncio.create_task(self._worker(n, stop), name=f"engine-worker-{n}")
                  for n in range(self.cfg.concurrency)]
        try:
            await stop.wait()
            # Graceful stop: a pass in flight finishes and records (a cancelled one would
            # keep its domains leased until the lease expires); idle workers return at once.
            self._wake.set()
            if tasks[1:]:
                await asyncio.wait(tasks[1:], timeout=10.0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def queue_resync(self) -> None:
        """A backend that lost or rebuilt its tables (``full_resync_pending``) gets every
        domain of the host complete: marked in the store first, then acknowledged, so a
        crash between the two only marks them again."""
        if not isinstance(self.backend, ResyncingBackend):
            return
        if not self.backend.full_resync_pending():
            return
        n = await self.store.reconcile.request_resync()
        log.info("backend resync queued", domains=n)
        self.backend.full_resync_queued()
        self._resync_waiting = True
        await self.check_resync_done()

    async def check_resync_done(self) -> None:
        """Tell a resyncing backend when no domain of the host waits for its complete
        pass any more (checked when a worker finds nothing to claim)."""
        if not self._resync_waiting or not isinstance(self.backend, ResyncingBackend):
            return
        if await self.store.reconcile.resync_remaining():
            return
        self._resync_waiting = False
        await self.backend.full_resync_done()

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        delay = 1.0
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            try:
                conn = await db.listen(self.dsn, WORK_CHANNEL, self._on_notify)
                delay = 1.0
                self.wake()  # we may have missed notifications while disconnected
                # Check the connection now and then; a dropped one is reopened above.
                while not stop.is_set() and not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("work listener disconnected", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if payload in ("", self.store.mail_host):
            self._wake.set()

    async def _worker(self, n: int, stop: asyncio.Event) -> None:
        owner = f"{self._id}:{n}"
        while not stop.is_set():
            try:
                did = await self.run_once(owner)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The store is unreachable: the mail server keeps its last maps; poll on.
                log.warning("reconcile pass failed", error=str(exc))
                did = 0
            if did:
                continue  # more may be waiting: claim again before sleeping
            with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await self.check_resync_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.cfg.poll_interval)
            self._wake.clear()

    # ------------------------------------------------------------------ one pass

    async def run_once(self, owner: str | None = None) -> int:
        """Claim, converge and record one batch; returns the number of domains handled."""
        owner = owner or f"{self._id}:once"
        self.passes += 1
        self.last_pass_at = time.time()
        await self.store.reconcile.expire_job_secrets()
        try:
            await self.retention.maybe_run()
        except Exception:  # never let housekeeping stop converging
            log.exception("purging deleted mailboxes failed")
        claim_started = time.monotonic()
        states = await self.store.reconcile.claim_domains(
            owner, self.cfg.batch_domains, self.cfg.lease_seconds,
            self._needs_complete if isinstance(self.backend, DeltaBackend) else None)
        if not states:
            return 0
        claim_ms = round((time.monotonic() - claim_started) * 1000, 1)
        with structlog.contextvars.bound_contextvars(pass_id=f"pass_{uuid.uuid4().hex[:12]}"):
            try:
                return await self._converge(states, owner, claim_ms)
            except asyncio.CancelledError:
                # Shutting down mid-pass (domain steps can take a while): hand the
                # domains back now rather than leaving them leased until expiry.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release(states, owner))
                raise

    def _needs_complete(self, domain_names: Sequence[str]) -> bool:
        """The backend's answer; a backend that fails to answer gets complete states
        (always correct, only slower) rather than stopping the worker."""
        assert isinstance(self.backend, DeltaBackend)
        try:
            return self.backend.needs_complete(domain_names)
        except Exception:
            log.exception("backend needs_complete raised; loading complete states")
            return True

    async def _release(self, states: list[DomainState], owner: str) -> None:
        await self.store.reconcile.release([st.domain.id for st in states], owner)

    # Set by the daemon: hashes the batch's pending passwords before the backend sees
    # it (pending_passwords.py); None: nothing to settle (tests, tools).
    before_apply: Callable[[list[DomainState]], Awaitable[list[DomainState]]] | None = None

    async def _converge(self, states: list[DomainState], owner: str,
                        claim_ms: float = 0.0) -> int:
        started = time.monotonic()
        if self.before_apply is not None:
            states = await self.before_apply(states)
            # Hashing can outlast the lease (a tenant's many password changes): only
            # domains still ours are applied; another worker holds the rest, with newer
            # state that an older copy written now would undo (a deleted mailbox served
            # again, a suspension lifted), and nothing would repair it.
            held = await self.store.reconcile.renew_leases(
                [s.domain.id for s in states], owner, self.cfg.lease_seconds)
            if len(held) < len(states):
                log.warning("lease lost while hashing; those domains are left to their "
                            "new holder", domains=[s.domain.name for s in states
                                                   if s.domain.id not in held])
                states = [s for s in states if s.domain.id in held]
                if not states:
                    return 0
        # An empty delta (only a domain step is due, e.g. a DNS re-check) has nothing
        # for the backend.
        to_apply = [s for s in states if s.complete or s.mailboxes or s.aliases]
        try:
            result = await self.backend.apply(to_apply) if to_apply else ApplyResult()
        except ReconcileError as exc:
            result = ApplyResult(domain_errors={s.domain.id: exc for s in to_apply})
        except Exception as exc:  # a bug or an unexpected fault: retry, never crash the loop
            log.exception("backend apply raised")
            fault = TemporaryError(f"backend error: {type(exc).__name__}")
            result = ApplyResult(domain_errors={s.domain.id: fault for s in to_apply})
        # Domain steps only for domains whose own intent changed (see DomainStep).
        applied = time.monotonic()
        step_errors = await asyncio.gather(
            *(self._run_steps(st) for st in states if st.domain.id not in result.domain_errors
              and st.domain.observed_generation < st.domain.generation))
        errors = dict(result.domain_errors)
        errors.update((st_id, e) for st_id, e in step_errors if e is not None)
        if any(not m.deleted and m.observed_generation < m.generation
               for st in to_apply for m in st.mailboxes):
            # Mailboxes about to be recorded as served: steps with work still running
            # in the background (the signer's restart) finish it first.
            for step in self.steps:
                if isinstance(step, SettlingStep):
                    await step.settle()
        stepped = time.monotonic()
        finished: list[str] = []
        for st in states:
            finished += await self._record(st, owner, result, errors.get(st.domain.id))
        log.info("reconciled", domains=len(states),
                 deltas=sum(1 for s in states if not s.complete),
                 mailboxes=sum(1 for s in states for m in s.mailboxes
                               if m.observed_generation < m.generation),
                 errors=len(result.domain_errors),
                 ms=round((time.monotonic() - started) * 1000, 1),
                 # Where the pass went (scripts/bench-domains reads these).
                 claim_ms=claim_ms,
                 apply_ms=round((applied - started) * 1000, 1),
                 steps_ms=round((stepped - applied) * 1000, 1),
                 record_ms=round((time.monotonic() - stepped) * 1000, 1))
        if finished and self.on_jobs_finished is not None:
            await self.on_jobs_finished(finished)
        return len(states)

    async def _run_steps(self, st: DomainState) -> tuple[str, ReconcileError | None]:
        async with self._step_slots:
            for step in self.steps:
                with structlog.contextvars.bound_contextvars(domain=st.domain.name,
                                                            step=step.name):
                    try:
                        await step.converge(st)
                    except ReconcileError as exc:
                        return st.domain.id, exc
                    except Exception as exc:
                        log.exception("domain step raised")
                        return st.domain.id, TemporaryError(
                            f"{step.name}: unexpected {type(exc).__name__}")
        return st.domain.id, None

    async def _record(self, st: DomainState, owner: str, result: ApplyResult,
                      err: ReconcileError | None) -> list[str]:
        backend_ok = st.domain.id not in result.domain_errors
        with structlog.contextvars.bound_contextvars(domain=st.domain.name):
            if err is None:
                return await self.store.reconcile.record_applied(st, owner, True,
                                                                 result.mailbox_errors)
            finished: list[str] = []
            if backend_ok:
                # The mail server holds the mailboxes even though a domain step failed.
                finished = await self.store.reconcile.record_applied(st, owner, False,
                                                                     result.mailbox_errors)
            if isinstance(err, PermanentError):
                log.error("permanent failure", error=str(err))
                return finished + await self.store.reconcile.record_permanent_failure(
                    st, str(err))
            delay = err.delay if isinstance(err, TemporaryError) else None
            attempts = await self.store.reconcile.record_retry(
                st, str(err), self.cfg.retry_base_seconds, self.cfg.retry_max_seconds, delay)
            if attempts >= self.cfg.max_attempts:
                msg = f"gave up after {attempts} attempts: {err}"
                log.error("permanent failure", error=msg)
                return finished + await self.store.reconcile.record_permanent_failure(st, msg)
            log.warning("temporary failure", error=str(err), attempts=attempts)
            return finished
