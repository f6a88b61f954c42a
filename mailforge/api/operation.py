"""Declaring an API operation once: its route, its documentation and its input.

A handler is declared with ``@operation(routes, "POST", "/v1/things", ...)``, naming its
tag, summary, description, the permission it needs, its query and body models
(``mailforge.schema``) and its answers. The wrapper authenticates, parses the query and
the body with those very models (400 naming each bad field), and only then calls the
handler, which takes the typed values with ``principal_of``, ``query_of`` and
``body_of``, calls one service function and renders. ``api/openapi.py`` builds the
served document by walking the app's routes and reading each one's ``Operation``: what
is documented is exactly what is validated.

Example::

    @operation(routes, "POST", "/v1/things", tag="things", id="createThing",
               summary="Create a thing", description="...", permission="write",
               body=NewThing, answers={202: ThingAccepted}, idempotent=True)
    async def create(request: web.Request) -> web.StreamResponse:
        thing = body_of(request, NewThing)
        answer = await service.things.create(request.app[CTX], principal_of(request), thing)
        return reply(answer, status=202)
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel

from ..models import Principal
from ..schema.base import Body, Query, validate
from .context import CTX
from .http import PRINCIPAL_KEY, authenticate, json_body

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
B = TypeVar("B", bound=BaseModel)

_QUERY_KEY = web.RequestKey("mailforge_query", BaseModel)
_MODEL_KEY = web.RequestKey("mailforge_model", BaseModel)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    id: str
    tag: str
    summary: str
    description: str
    # None: no authentication (health, the document itself).
    permission: str | None
    query: type[Query] | None = None
    body: type[Body] | None = None
    # Success answers: status -> model, or Raw for a body no model describes.
    answers: Mapping[int, type[BaseModel] | Raw] = field(default_factory=dict)
    # Error statuses this operation can answer beyond the ones every operation can.
    errors: tuple[int, ...] = ()
    # Takes an Idempotency-Key header.
    idempotent: bool = False
    # Describes each path parameter, e.g. {"id": "The email user's id (usr_...)."}.
    path_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Raw:
    """An answer that is not a JSON model: its description and media type ("" for an
    answer without a body, e.g. 204)."""

    description: str
    media_type: str = "application/json"


# Every declared operation, by the handler aiohttp calls for it.
OPERATIONS: dict[Handler, Operation] = {}


def operation(routes: web.RouteTableDef, method: str, path: str, *, id: str, tag: str,
              summary: str, description: str, permission: str | None,
              query: type[Query] | None = None, body: type[Body] | None = None,
              answers: Mapping[int, type[BaseModel] | Raw] | None = None,
              errors: tuple[int, ...] = (), idempotent: bool = False,
              path_params: Mapping[str, str] | None = None) -> Callable[[Handler], Handler]:
    op = Operation(method.upper(), path, id, tag, summary, description, permission, query,
                   body, dict(answers or {200: Raw("Done.")}), errors, idempotent,
                   dict(path_params or {}))

    def wrap(fn: Handler) -> Handler:
        @functools.wraps(fn)
        async def handler(request: web.Request) -> web.StreamResponse:
            cfg = request.app[CTX].cfg
            if op.permission is not None:
                await authenticate(request, op.permission)
            if op.query is not None:
                request[_QUERY_KEY] = validate(op.query, dict(request.query), cfg)
            if op.body is not None:
                request[_MODEL_KEY] = validate(op.body, await json_body(request), cfg)
            return await fn(request)

        OPERATIONS[handler] = op
        routes.route(op.method, path)(handler)
        return handler

    return wrap


def operation_of(handler: Any) -> Operation | None:
    return OPERATIONS.get(handler)


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def query_of(request: web.Request, model: type[B]) -> B:
    value = request[_QUERY_KEY]
    # The declared model, not another: the document and the code cannot drift apart.
    assert type(value) is model, f"{model.__name__} is not this operation's query model"
    return value


def body_of(request: web.Request, model: type[B]) -> B:
    value = request[_MODEL_KEY]
    assert type(value) is model, f"{model.__name__} is not this operation's body model"
    return value


def reply(answer: BaseModel, status: int = 200) -> web.Response:
    """An answer rendered by its model (pydantic's own encoder, fast)."""
    return web.Response(body=answer.model_dump_json().encode(), status=status,
                        content_type="application/json")
