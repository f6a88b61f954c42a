"""Job endpoints: the truth about the progress of every long operation."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..models import Job
from ..schema.tenancy import JobDetailReply, JobList, JobPage, JobReply
from ..service import connected
from ..service import jobs as service
from .context import CTX
from .operation import operation, principal_of, query_of, reply
from .render import rfc3339

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


@operation(routes, "GET", "/v1/jobs/{id}", id="getJob", tag="jobs",
           summary="A job: status, progress, per-item failures",
           description="Poll it until status is completed or failed. A bulk mailbox job "
                       "also reports each failed item and, until they expire, the "
                       "generated passwords of the users it created. A job of another "
                       "account, or outside a restricted token's domains, is not found.",
           permission="read", answers={200: JobDetailReply},
           path_params={"id": "The job's id (job_...)."})
async def get_job(request: web.Request) -> web.StreamResponse:
    view = await service.get_job(request.app[CTX], principal_of(request),
                                 request.match_info["id"])
    out = job_json(view.job)
    out["failures"] = [{"index": f.index, "id": f.object_id, "email": f.address,
                        "error": f.error} for f in view.failures]
    if view.users is not None:
        out["users"] = view.users
    if view.job.type == "connect_email_users":
        out["items"] = await connected.job_items(request.app[CTX], view.job)
    return reply(JobDetailReply.model_validate(out))


@operation(routes, "GET", "/v1/jobs", id="listJobs", tag="jobs",
           summary="Recent jobs of the account, newest first",
           description="A batch view of every job of the account (of a restricted "
                       "token's domains only), newest first, with total and next_cursor.",
           permission="read", query=JobPage, answers={200: JobList})
async def list_jobs(request: web.Request) -> web.StreamResponse:
    q = query_of(request, JobPage)
    page = await service.list_jobs(request.app[CTX], principal_of(request), q.limit,
                                   q.offset, q.cursor)
    return reply(JobList(jobs=[JobReply.model_validate(job_json(j)) for j in page.jobs],
                         total=page.total, limit=page.limit, offset=page.offset,
                         next_cursor=page.next_cursor))
