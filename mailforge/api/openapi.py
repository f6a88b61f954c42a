"""The self-description of the API: the OpenAPI 3.1 document at ``/v1/openapi.json``,
generated from the models each operation is declared with (``api/operation.py``,
``api/openapi_gen.py``), and a
human-readable reference page at ``/v1/docs`` rendered from the same document.

Both are public (no token): they describe the API, they reveal no tenant data.
"""

from __future__ import annotations

import html
import json
from typing import Any

from aiohttp import web

from .. import __version__
from . import openapi_gen as generated
from .context import CTX
from .operation import Raw, operation

routes = web.RouteTableDef()

DOC_KEY = web.AppKey("openapi_document", dict)

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def build_document(app: web.Application, cfg: Any) -> dict[str, Any]:
    """The document of every operation declared with ``api/operation.py`` on *app*'s
    routes, generated from their models, its configuration-bound limits from *cfg*."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {}
    generated.add_operations(app, paths, schemas)
    doc = {
        "openapi": "3.1.0",
        "info": {
            "title": "mailforge control API",
            "version": __version__,
            "description": (
                "Self-hosted mail provisioning: domains, mailboxes, DKIM and DNS, "
                "reconciled onto a real mail server. Every call except health and this "
                "document needs `Authorization: Bearer <token>`. Errors always have the "
                "shape `{\"error\": {\"code\", \"message\", \"details\"}}`."),
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": dict(sorted(schemas.items())),
            "parameters": generated.PARAMETERS,
        },
        "security": [{"bearer": []}],
        "tags": generated.TAGS,
        "paths": dict(sorted(paths.items())),
    }
    generated.resolve_settings(doc, cfg)
    generated.prune_schemas(doc)
    return doc


def _document(request: web.Request) -> dict[str, Any]:
    doc = request.app.get(DOC_KEY)
    if doc is None:
        raise web.HTTPNotFound()
    return doc


@operation(routes, "GET", "/v1/openapi.json", id="openapi", tag="meta",
           summary="This OpenAPI 3.1 document (no authentication)",
           description="Generated at start-up from the models every operation validates "
                       "with, so it says exactly what the API accepts.",
           permission=None, answers={200: Raw("The document.")})
async def openapi_json(request: web.Request) -> web.StreamResponse:
    return web.json_response(_document(request), dumps=lambda o: json.dumps(o, indent=1))


def render_reference(doc: dict[str, Any]) -> str:
    """A plain, self-contained HTML page: one section per endpoint, with its
    parameters, body schema and answers."""
    esc = html.escape
    parts = [f"<!doctype html><html lang=en><meta charset=utf-8>"
             f"<title>{esc(doc['info']['title'])}</title>"
             "<style>body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem "
             "auto;padding:0 1rem}code,pre{background:#f4f4f4}pre{padding:.5rem;"
             "overflow:auto;font-size:13px}h3{margin-top:2rem}.m{font-weight:bold;"
             "text-transform:uppercase}</style>",
             f"<h1>{esc(doc['info']['title'])} <small>{esc(doc['info']['version'])}</small>"
             f"</h1><p>{esc(doc['info']['description'])}</p>"
             "<p>Machine-readable: <a href=/v1/openapi.json>/v1/openapi.json</a> "
             "(OpenAPI 3.1).</p><h2>Endpoints</h2><ul>"]
    ops = [(path, method, {**op, "parameters": [*item.get("parameters", []),
                                                  *op.get("parameters", [])]})
           for path, item in doc["paths"].items()
           for method, op in item.items() if method in HTTP_METHODS]
    for path, method, op in ops:
        parts.append(f"<li><a href=#{esc(op.get('operationId', ''))}><span class=m>"
                     f"{esc(method)}</span> <code>{esc(path)}</code></a> — "
                     f"{esc(op.get('summary', ''))}</li>")
    parts.append("</ul>")
    for path, method, op in ops:
        parts.append(f"<h3 id={esc(op.get('operationId', ''))}><span class=m>{esc(method)}"
                     f"</span> <code>{esc(path)}</code></h3><p>{esc(op.get('summary', ''))}"
                     "</p>")
        if op.get("security") == []:
            parts.append("<p>No authentication.</p>")
        params = op.get("parameters", [])
        if params:
            parts.append("<p>Parameters:</p><ul>")
            for p in params:
                if "$ref" in p:  # a shared parameter (components/parameters)
                    p = doc["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]]
                parts.append(f"<li><code>{esc(p['name'])}</code> ({esc(p['in'])}"
                             f"{', required' if p.get('required') else ''})"
                             f"{' — ' + esc(p['description']) if p.get('description') else ''}"
                             "</li>")
            parts.append("</ul>")
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            parts.append("<p>Body (JSON):</p><pre>"
                         + esc(json.dumps(body["schema"], indent=1)) + "</pre>")
        parts.append("<p>Answers:</p><ul>")
        for status, resp in op.get("responses", {}).items():
            parts.append(f"<li><code>{esc(status)}</code> {esc(resp.get('description', ''))}"
                         "</li>")
        parts.append("</ul>")
    parts.append("</html>")
    return "".join(parts)


@operation(routes, "GET", "/v1/docs", id="reference", tag="meta",
           summary="The human-readable API reference (HTML, no authentication)",
           description="One section per operation, rendered from the OpenAPI document.",
           permission=None, answers={200: Raw("An HTML page.", "text/html")})
async def reference_page(request: web.Request) -> web.StreamResponse:
    page = request.app.get(PAGE_KEY)
    if page is None:
        page = render_reference(_document(request))
    return web.Response(text=page, content_type="text/html")


PAGE_KEY = web.AppKey("reference_page", str)


def install(app: web.Application) -> None:
    doc = build_document(app, app[CTX].cfg)
    app[DOC_KEY] = doc
    app[PAGE_KEY] = render_reference(doc)
