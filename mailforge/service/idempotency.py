"""Idempotency keys: a write retried with the same key gets the first answer, also
after the daemon died in the middle of the first attempt.

The key is checked first, before anything about the request's target is (readiness,
limits, reputation): a retry gets the stored answer even if the domain changed since.
Keys are the calling token's own. A key is claimed under a lease naming the process that
handles it (``claimant``), renewed while the request runs; the first job the request
creates is tied to the key in the job's own transaction (``Idempotency.scope``);
the answer is recorded last, sealed (it may hold a generated password). A retry that
finds the claim of a dead request takes it over and answers with the job it committed,
if any, or runs the request.

The answer is opaque here: a status number and a JSON object, recorded as the caller
(the API) produced them and replayed verbatim.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..claimant import claimant_alive, claimant_id
from ..errors import Conflict, Unprocessable, ValidationFailed
from ..log import get
from ..models import Job, Principal
from ..store.idempotency import Idempotency
from .context import ServiceContext

log = get("mailforge.service")

# Printable ASCII without spaces, full string: the key is stored and compared verbatim.
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
CRASH_ENV = "MAILFORGE_TEST_CRASH_AFTER"


@dataclass(frozen=True)
class Answer:
    """What a write answered: its status number and JSON body."""

    status: int
    body: dict[str, Any]
    # True when this answer is the stored one of an earlier attempt.
    replayed: bool = False


Produce = Callable[[], Awaitable[Answer]]
# Builds the answer of a request whose first attempt died after committing *job*.
Recover = Callable[[Job], Awaitable[Answer]]


def crash_points_from_env() -> frozenset[str]:
    """TEST ONLY: ``MAILFORGE_TEST_CRASH_AFTER=idempotency_claim,idempotency_job`` makes
    the daemon SIGKILL itself at those points, so the crash tests can land a kill in a
    window too narrow to hit from outside. Read once at start-up."""
    raw = os.environ.get(CRASH_ENV, "")
    return frozenset(p.strip() for p in raw.split(",") if p.strip())


def crash_point(ctx: ServiceContext, name: str) -> None:
    if name in ctx.crash_points:
        log.warning("test crash point reached: SIGKILL", point=name)
        os.kill(os.getpid(), signal.SIGKILL)


def fingerprint(operation: str, body: dict[str, Any]) -> bytes:
    """What a key is bound to: the operation (method and path) and the parsed body."""
    return hashlib.sha256(f"{operation}\n".encode()
                          + json.dumps(body, sort_keys=True).encode()).digest()


def check_key(key: str) -> None:
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationFailed(["Idempotency-Key: must be 1-200 printable ASCII characters "
                                "without spaces"])


def _in_use() -> Conflict:
    return Conflict("idempotency_key_in_use",
                    "A request with this Idempotency-Key is being handled.", retry_after=1)


_RESOURCE_FIELD = {"domain_setup": "domain_id", "alias_create": "id",
                   "email_user_create": "id", "email_user_update": "id"}


async def recover_job(job: Job) -> Answer:
    """The answer for a request whose first attempt committed *job* and died before
    answering: the job (what every job-creating operation answers), marked recovered.
    Operations whose first answer held more pass their own ``recover``."""
    out: dict[str, Any] = {"job_id": job.id, "status": "pending", "recovered": True}
    if job.resource_id is not None:
        out["resource_id"] = job.resource_id
        # The field the first answer named the resource with, where it is known.
        out[_RESOURCE_FIELD.get(job.type, "resource_id")] = job.resource_id
    return Answer(202, out)


async def keep_lease(keys: Idempotency, account_id: str, key: str, me: str,
                     lease: float) -> None:
    while True:
        await asyncio.sleep(lease / 3)
        try:
            await keys.renew(account_id, key, me, lease)
        except Exception as exc:  # the request itself will meet the same fault
            log.warning("idempotency lease not renewed", error=str(exc))


async def idempotent(ctx: ServiceContext, principal: Principal, key: str | None,
                     digest: bytes, produce: Produce,
                     recover: Recover = recover_job) -> Answer:
    """Run *produce* once per key; a retry with the same *digest* (``fingerprint``)
    gets the first answer, a reuse with another gets ``idempotency_key_reused``.

    Crash-safe in every order: the key is claimed under a lease naming this process
    (renewed while *produce* runs); the first job *produce* creates is tied to the key
    in the job's own transaction (``Idempotency.scope``); the answer is recorded
    last. A retry that finds the claim of a dead request (same host: its process is
    gone; any host: its lease ran out) takes it over: if the dead attempt committed a
    job, the answer is that job (*recover*), never a second one; if not, nothing was
    written and *produce* runs.
    """
    if key is None:
        return await produce()
    check_key(key)
    store = ctx.store
    keys = store.idempotency
    acct = principal.account_id
    # Keys are the calling token's own: another token of the account (another domain
    # restriction, or a sub-account's token against its reseller's) can neither be
    # answered from this token's first request nor occupy this token's keys.
    key = f"{principal.token_id}/{key}"
    context = f"idempotency:{acct}:{key}"
    lease = ctx.cfg.api_limits.idempotency_lease_seconds
    me = claimant_id()
    dead_job: str | None = None
    if not await keys.claim(acct, key, digest, me, lease):
        prior = await keys.get(acct, key)
        if prior is None:  # released by a failed first attempt just now: try again
            raise _in_use()
        if prior.request_hash != digest:
            raise Unprocessable("idempotency_key_reused",
                                "This Idempotency-Key was used with a different request.")
        if prior.status != 0 and prior.sealed_body is not None:
            return Answer(prior.status, json.loads(ctx.box.open(prior.sealed_body, context)),
                          replayed=True)
        # In use while its lease runs (a running request renews it) and its process is
        # not known to be gone. An expired lease also frees a claim whose process
        # lives on but lost track of it (e.g. the answer could not be recorded).
        if not prior.lease_expired and claimant_alive(prior.claimant) is not False:
            raise _in_use()
        taken, dead_job = await keys.take_over(acct, key, prior.claimant, me, lease)
        if not taken:  # another retry took it over first
            raise _in_use()
        log.info("idempotency claim of a dead request taken over", dead=prior.claimant,
                 job_id=dead_job)
    crash_point(ctx, "idempotency_claim")
    renew = asyncio.create_task(keep_lease(keys, acct, key, me, lease))
    try:
        if dead_job is not None:
            answer = await recover((await store.jobs.get(acct, dead_job)).job)
            answer = Answer(answer.status, answer.body, replayed=True)
        else:
            with keys.scope(acct, key, me):
                answer = await produce()
            crash_point(ctx, "idempotency_job")
    except BaseException:
        # A refused or failed attempt records no answer: the client may retry it.
        renew.cancel()
        try:
            await keys.release(acct, key, me)
        except Exception as exc:
            log.warning("idempotency key not released", error=str(exc))
        raise
    renew.cancel()
    sealed = ctx.box.seal(json.dumps(answer.body).encode(), context)
    if not await keys.put(acct, key, me, answer.status, sealed):
        log.warning("idempotency answer not recorded: the claim was taken over")
    return answer
