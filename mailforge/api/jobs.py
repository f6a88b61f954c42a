"""Job endpoints: the truth about the progress of every long operation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..errors import ValidationFailed
from ..models import Job
from ..service import jobs as service
from .context import CTX
from .http import authenticate, paging
from .render import json_response, rfc3339

routes = web.RouteTableDef()


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.type,
        "status": job.status,
        "progress": job.progress,
        "message": job.message,
        "resource_id": job.resource_id,
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        "created_at": rfc3339(job.created_at),
        "completed_at": rfc3339(job.completed_at),
    }


@routes.get("/v1/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    view = await service.get_job(request.app[CTX], principal, request.match_info["id"])
    out = job_json(view.job)
    out["failures"] = [{"index": f.index, "id": f.object_id, "email": f.address,
                        "error": f.error} for f in view.failures]
    if view.users is not None:
        out["users"] = view.users
    return json_response(out)


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    principal = await authenticate(request, "read")
    limit, offset = paging(request, default=20)
    cursor = request.query.get("cursor")
    if cursor == "":
        raise ValidationFailed(["cursor: not a cursor this API returned"])
    page = await service.list_jobs(request.app[CTX], principal, limit, offset, cursor)
    return json_response({"jobs": [job_json(j) for j in page.jobs], "total": page.total,
                          "limit": page.limit, "offset": page.offset,
                          "next_cursor": page.next_cursor})


_JOB: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "status", "progress", "created_at"],
    "properties": {
        "id": {"type": "string"}, "type": {"type": "string"},
        "status": {"enum": ["pending", "processing", "completed", "failed"]},
        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
        "message": {"type": "string"}, "resource_id": {"type": ["string", "null"]},
        "total": {"type": "integer"}, "done": {"type": "integer"},
        "failed": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "completed_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


def _openapi() -> dict[str, dict[str, Any]]:
    from . import oas  # the OpenAPI building blocks (issue 5)

    one = {**_JOB, "properties": {**_JOB["properties"],
                                  "failures": {"type": "array", "items": {"type": "object"}},
                                  "users": {"type": "array"}}}
    return {
        "/v1/jobs/{id}": {"get": {
            "summary": "A job: status, progress, per-item failures", "operationId": "getJob",
            "tags": ["jobs"], "parameters": [oas.PATH_ID, oas.ACTING],
            "responses": oas.responses({"200": oas.ok("The job.", one)})}},
        "/v1/jobs": {"get": {
            "summary": "Recent jobs of the account", "operationId": "listJobs",
            "tags": ["jobs"],
            "parameters": [oas.LIMIT, oas.OFFSET, oas.ACTING,
                           {"name": "cursor", "in": "query", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 512},
                            "description": "next_cursor of the previous page"}],
            "responses": oas.responses({"200": oas.ok("Jobs.", oas.obj(
                {"jobs": {"type": "array", "items": _JOB}, "total": {"type": "integer"},
                 "limit": {"type": "integer"}, "offset": {"type": "integer"},
                 "next_cursor": oas.NULLABLE_STR},
                ("jobs", "total", "next_cursor")))})}},
    }


openapi_paths: dict[str, dict[str, Any]] = _openapi()
