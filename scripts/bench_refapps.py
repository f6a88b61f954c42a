"""The two bare aiohttp reference apps of ``scripts/bench-api`` (issue 10), each run as
its own process like the daemon:

- ``const``: answers a constant (``{"hello": "world"}``): what aiohttp itself costs;
- ``rows``: fetches the same 100 mailbox rows as ``GET /v1/email-users?limit=100``
  (the account's first page by creation time, with the domain's name) with asyncpg
  and encodes them with the standard ``json``: what the job costs without mailforge.

Both on asyncio's own event loop, no authentication, no logging.

Usage: python scripts/bench_refapps.py const|rows PORT [DSN ACCOUNT_ID]
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

ROWS = """SELECT m.*, d.name AS domain_name
FROM mailboxes m JOIN domains d ON d.id = m.domain_id
WHERE m.account_id = $1 AND m.status <> 'deleted'
ORDER BY m.created_at, m.id LIMIT 100"""


def _plain(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    app = web.Application()
    if kind == "const":
        async def const(_request: web.Request) -> web.Response:
            return web.json_response({"hello": "world"})
        app.router.add_get("/", const)
    else:
        dsn, account = sys.argv[3], sys.argv[4]
        pools: dict[str, asyncpg.Pool] = {}

        async def start(_app: web.Application) -> None:
            pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
            assert pool is not None
            pools["p"] = pool

        async def rows(_request: web.Request) -> web.Response:
            async with pools["p"].acquire() as conn:
                got = await conn.fetch(ROWS, account)
            body = {"users": [{k: _plain(v) for k, v in r.items() if k != "password_hash"}
                              for r in got]}
            return web.Response(text=json.dumps(body), content_type="application/json")

        app.on_startup.append(start)
        app.router.add_get("/", rows)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
