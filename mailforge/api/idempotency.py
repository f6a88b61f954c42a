"""The HTTP edge of idempotency (``service/idempotency.py`` holds the rules): reads the
``Idempotency-Key`` header, binds the key to the method, path and body, and renders the
answer, marking a replayed one with ``Idempotent-Replayed: true``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..models import Job, Principal
from ..service import idempotency as rules
from ..service.idempotency import CRASH_ENV, IDEMPOTENCY_KEY, crash_points_from_env
from .context import CTX
from .http import BODY_KEY
from .render import json_response

__all__ = ["CRASH_ENV", "IDEMPOTENCY_KEY", "crash_points_from_env", "idempotent",
           "recover_job"]

Handler = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]
# Builds the answer of a request whose first attempt died after committing its job.
Recover = Callable[[web.Request, Principal, Job], Awaitable[tuple[int, dict[str, Any]]]]


async def recover_job(request: web.Request, principal: Principal,
                      job: Job) -> tuple[int, dict[str, Any]]:
    answer = await rules.recover_job(job)
    return answer.status, answer.body


def key_of(request: web.Request) -> tuple[str | None, bytes]:
    """The request's ``Idempotency-Key`` and what it is bound to: the method, the path
    and the body as sent (parsed JSON), for the service's ``idempotent``."""
    return (request.headers.get("Idempotency-Key"),
            rules.fingerprint(f"{request.method} {request.path}",
                              request.get(BODY_KEY) or {}))


def render(answer: rules.Answer) -> web.Response:
    resp = json_response(answer.body, status=answer.status)
    if answer.replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


async def idempotent(request: web.Request, principal: Principal, body: dict[str, Any],
                     produce: Handler, recover: Recover = recover_job) -> web.Response:
    """Run *produce* once per ``Idempotency-Key`` (``service.idempotency.idempotent``);
    *body* is the parsed request body the key is bound to."""

    async def run() -> rules.Answer:
        return rules.Answer(*await produce())

    async def rebuild(job: Job) -> rules.Answer:
        return rules.Answer(*await recover(request, principal, job))

    key = request.headers.get("Idempotency-Key")
    digest = rules.fingerprint(f"{request.method} {request.path}", body)  # as key_of
    return render(await rules.idempotent(request.app[CTX], principal, key, digest, run,
                                         rebuild))
