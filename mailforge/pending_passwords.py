"""Pending passwords: a mailbox's new password is hashed by the reconcile pass, not by
the request that set it.

A create (one mailbox or a bulk of 500) or a password change stores the password
*sealed* under the master key (``seal``: AES-256-GCM bound to the mailbox id) in the
mailbox row's ``pending_password`` and answers at once; 500 SHA512-CRYPT hashes (~4.3 ms
of CPU each here) are no longer on the request path. Just before the backend applies a
batch, the engine calls ``PendingPasswords.settle``: the sealed values of the claimed
domains are opened, hashed in a process pool using every core (crypt(3) holds the GIL,
so threads would not run in parallel and would stall the event loop), and each hash is
written with its sealed value wiped in one compare-and-set statement (only where the
sealed value is still the one hashed). The backend then receives the hashed mailboxes.

Crash safety: a crash before that statement leaves the sealed value to be hashed by
the next pass (the mailbox is still unconverged: storing a pending value always bumps
its generation). The backend is never handed a mailbox without a hash: a new mailbox's
hash is '' until written, and a changed one keeps its old hash meanwhile (the server
serves the previous password until the pass that makes the new one, as it always did).

Secrets: the sealed value and the clear password never appear in logs, job messages,
answers or audit (only mailbox ids are logged); the clear text exists only in memory
here and in the hashing processes. A sealed value that cannot be opened (the master key
was replaced) is wiped, its mailbox recorded failed ("set a new password") and given a
hash no password verifies against, so the domain's other changes still go through.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from cryptography.exceptions import InvalidTag

from . import password
from .config import PasswordConfig
from .log import get
from .models import DomainState, Mailbox
from .secretbox import SecretBox
from .store.mailboxes import PendingPassword
from .store.store import Store

log = get(__name__)

# Written for a mailbox whose sealed password could not be opened and that never had a
# hash: well-formed for the backend (render.py refuses malformed hashes), but its "hash"
# part is not crypt output, so no password verifies against it.
LOCKED_HASH = "{SHA512-CRYPT}$6$locked$" + "x" * 86

UNREADABLE = ("its new password could not be decrypted (was the master key replaced?); "
              "set a new password")

# Schemes cheap enough to hash on the event loop (``ssha512``: one SHA-512).
FAST_SCHEMES = frozenset({"ssha512"})

# Pool tasks per hashing process for a large batch: a few, so a process that got a slow
# share does not hold the batch up, yet few round trips to the pool.
CHUNKS_PER_PROCESS = 4


def context(mailbox_id: str) -> str:
    """The secretbox context of a mailbox's pending password: a sealed value copied to
    another mailbox's row does not open there."""
    return f"mailbox-password:{mailbox_id}"


def scheme_for(cfg: PasswordConfig, generated: bool) -> str:
    """The hash scheme of a password: ``generated_scheme`` for one mailforge generated,
    ``scheme`` for one a user chose."""
    return cfg.generated_scheme if generated else cfg.scheme


def seal(box: SecretBox, mailbox_id: str, clear: str, scheme: str) -> bytes:
    """The value a request stores in ``pending_password``: the password and the scheme
    to hash it with, sealed to the mailbox."""
    return box.seal(f"{scheme}\n{clear}".encode(), context(mailbox_id))


def _open(box: SecretBox, p: PendingPassword) -> tuple[str, str] | None:
    """(password, scheme), or None if the value cannot be opened."""
    try:
        scheme, _, clear = box.open(p.sealed, context(p.mailbox_id)).decode().partition("\n")
    except (InvalidTag, ValueError):
        return None
    return (clear, scheme) if scheme in password.SCHEMES else None


def hashers(processes: int | None = None) -> ProcessPoolExecutor:
    """The hashing processes, one per core. forkserver: never fork the daemon's threads
    and event loop. At nice 10: when the API is busy it gets the CPU first (a bulk must
    not slow other requests); when it is idle, a niced process still gets a whole core
    (nice weighs only processes competing for one)."""
    return ProcessPoolExecutor(max_workers=processes or os.cpu_count() or 2,
                               mp_context=multiprocessing.get_context("forkserver"),
                               initializer=password.lower_priority)


class PendingPasswords:
    """Hashes the pending passwords of a claimed batch before the backend applies it."""

    def __init__(self, store: Store, box: SecretBox, pool: Executor, processes: int,
                 on_jobs_finished: Callable[[Sequence[str]], Awaitable[None]] | None = None
                 ) -> None:
        self.store = store
        self.box = box
        self.pool = pool
        self.processes = max(1, processes)
        self.on_jobs_finished = on_jobs_finished

    async def warm(self) -> None:
        """Start every hashing process now, not on the first mailbox (a process start
        and import cost ~0.1 s)."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.pool, password.hash_many,
                                                    [("warm-up", "sha512-crypt")] * 20)
                               for _ in range(self.processes)))

    async def _hash(self, items: list[tuple[str, str]]) -> list[str]:
        """Slow schemes in the pool, in a few shares per process; a fast one (~4 us a
        hash) here, where a round trip to the pool would cost more than the hash."""
        slow = [n for n, (_, scheme) in enumerate(items) if scheme not in FAST_SCHEMES]
        out = [password.hash_password(p, s) if s in FAST_SCHEMES else ""
               for p, s in items]
        if not slow:
            return out
        loop = asyncio.get_running_loop()
        size = max(1, math.ceil(len(slow) / (self.processes * CHUNKS_PER_PROCESS)))
        shares = [slow[i:i + size] for i in range(0, len(slow), size)]
        for attempt in (1, 2):
            try:
                parts = await asyncio.gather(*(
                    loop.run_in_executor(self.pool, password.hash_many,
                                         [items[n] for n in share]) for share in shares))
                break
            except BrokenProcessPool:
                # A hashing process died (killed, out of memory): a new pool, once.
                log.error("password hashing processes died; starting new ones")
                self.pool = hashers(self.processes)
                if attempt == 2:
                    # An OSError is what the engine's worker survives: the pass fails,
                    # the sealed values wait for the next one.
                    raise OSError("password hashing processes keep dying") from None
        for share, part in zip(shares, parts, strict=True):
            for n, h in zip(share, part, strict=True):
                out[n] = h
        return out

    async def settle(self, states: list[DomainState]) -> list[DomainState]:
        """Hash and store the pending passwords of *states*' domains; return the states
        with those mailboxes carrying their new hashes (the rest unchanged)."""
        pending = await self.store.mailboxes.pending_passwords([s.domain.id for s in states])
        if not pending:
            return states
        opened: list[tuple[PendingPassword, tuple[str, str]]] = []
        unreadable: list[PendingPassword] = []
        for p in pending:
            value = _open(self.box, p)
            if value is None:
                unreadable.append(p)
            else:
                opened.append((p, value))
        hashes: dict[str, str] = {}
        if opened:
            started = time.monotonic()
            made = await self._hash([v for _, v in opened])
            hashed = time.monotonic()
            # Written or not (a newer password stored meanwhile stays pending for the
            # next pass), each hash is of a password the user set for this mailbox:
            # the backend may be handed it with the generation this pass claimed.
            written = await self.store.mailboxes.settle_passwords(
                [(p, h) for (p, _), h in zip(opened, made, strict=True)])
            hashes = {p.mailbox_id: h for (p, _), h in zip(opened, made, strict=True)}
            log.info("passwords hashed", count=len(made), written=len(written),
                     hash_ms=round((hashed - started) * 1000, 1),
                     write_ms=round((time.monotonic() - hashed) * 1000, 1))
        failed: set[str] = set()
        if unreadable:
            recorded, finished = await self.store.mailboxes.fail_passwords(
                unreadable, LOCKED_HASH, UNREADABLE)
            failed = {i for i, deleted in recorded.items() if not deleted}
            log.error("pending passwords could not be decrypted",
                      mailboxes=sorted(recorded), count=len(recorded))
            if finished and self.on_jobs_finished is not None:
                await self.on_jobs_finished(finished)
        return [self._apply(st, hashes, failed) for st in states]

    @staticmethod
    def _apply(st: DomainState, hashes: dict[str, str], failed: set[str]) -> DomainState:
        def one(m: Mailbox) -> Mailbox:
            if m.id in hashes:
                return dataclasses.replace(m, password_hash=hashes[m.id])
            if m.password_hash == "" or m.id in failed:
                # Unreadable: served (delivery works) with no password that verifies,
                # and already recorded as failed, so the pass must not record it again.
                return dataclasses.replace(
                    m, password_hash=LOCKED_HASH if m.id in failed
                    else m.password_hash or LOCKED_HASH,
                    observed_generation=m.generation if m.id in failed
                    else m.observed_generation)
            return m

        if not any(m.id in hashes or m.id in failed or m.password_hash == ""
                   for m in st.mailboxes):
            return st
        return dataclasses.replace(st, mailboxes=tuple(one(m) for m in st.mailboxes))
