"""Shared fixtures: the session sandbox (real mail stack + daemon) and small helpers.

Only tests that request ``sandbox`` (directly or through ``api``) start the stack;
unit tests never do. When such a test fails, the tails of every log in the sandbox's
``logs/`` directory are attached to its report.

Set ``MAILFORGE_TEST_SANDBOX_DIR=/some/dir`` to reuse (and keep) a sandbox between
runs instead of a fresh temporary one.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from mailforge.sandbox import Sandbox

LOG_TAIL_LINES = 60

# Every Sandbox a fixture brought up in this session (the session one and any private
# ones, e.g. tests/integration/test_sandbox_stack.py's), for log tails on failure.
ACTIVE_SANDBOXES: list[Sandbox] = []


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        data = path.read_bytes()[-200_000:]
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def log_tails(sb: Sandbox, lines: int = LOG_TAIL_LINES) -> list[tuple[str, str]]:
    """(title, text) for every log file of *sb*, ``logs/*`` sorted by name."""
    out = []
    for path in sorted(sb.log_dir.glob("*")):
        if path.is_file():
            out.append((f"sandbox log {path.name} (last {lines} lines)", tail(path, lines)))
    return out


def bring_up(directory: Path, start_daemon: bool = True) -> Sandbox:
    sb = Sandbox(directory)
    try:
        sb.up(start_daemon=start_daemon)
    except BaseException:
        for title, text in log_tails(sb):
            print(f"\n----- {title} -----\n{text}")
        sb.down()
        raise
    ACTIVE_SANDBOXES.append(sb)
    return sb


def take_down(sb: Sandbox, remove: bool) -> None:
    if sb in ACTIVE_SANDBOXES:
        ACTIVE_SANDBOXES.remove(sb)
    try:
        sb.down()
    finally:
        if remove:
            shutil.rmtree(sb.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The real stack with the mailforge daemon, once per session."""
    keep = os.environ.get("MAILFORGE_TEST_SANDBOX_DIR")
    if keep:
        directory = Path(keep)
        directory.mkdir(parents=True, exist_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="mailforge-sandbox-", dir="/tmp"))
    sb = bring_up(directory, start_daemon=True)
    yield sb
    if keep:
        ACTIVE_SANDBOXES.remove(sb)  # left running on purpose
    else:
        take_down(sb, remove=True)


class SandboxFactory:
    """Private sandboxes for tests that must not share the session one."""

    up = staticmethod(bring_up)
    down = staticmethod(take_down)


@pytest.fixture(scope="session")
def sandbox_factory() -> Iterator[SandboxFactory]:
    """``sandbox_factory.up(dir, start_daemon=False)`` / ``.down(sb, remove)``; any
    sandbox still up at the end of the session is taken down."""
    before = list(ACTIVE_SANDBOXES)
    yield SandboxFactory()
    for sb in [s for s in ACTIVE_SANDBOXES if s not in before]:
        take_down(sb, remove=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    funcargs = getattr(item, "funcargs", {})
    used = [v for v in funcargs.values() if isinstance(v, Sandbox)]
    if "sandbox" in getattr(item, "fixturenames", ()) and not used:
        # Failed during setup (e.g. up() itself): funcargs is not filled yet.
        used = list(ACTIVE_SANDBOXES)
    seen: set[Path] = set()
    for sb in used:
        if sb.dir in seen:
            continue
        seen.add(sb.dir)
        for title, text in log_tails(sb):
            rep.sections.append((f"{title} [{sb.dir}]", text))


class ApiClient:
    """A small async client for the daemon's API with the admin bearer token."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.token = token

    def with_token(self, token: str | None) -> ApiClient:
        """The same client authenticated with *token* (None: no Authorization header)."""
        return ApiClient(self.session, self.base_url, token)

    async def request(self, method: str, path: str, json: Any = None,
                      params: dict[str, Any] | None = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any]:
        hdrs = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        hdrs.update(headers or {})
        async with self.session.request(method, self.base_url + path, json=json,
                                        params=params, headers=hdrs) as resp:
            body = await resp.read()
            if not body:
                return resp.status, None
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, body.decode("utf-8", "replace")

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("POST", path, json=json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PATCH", path, json=json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.request("PUT", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.request("DELETE", path, **kw)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def api(sandbox: Sandbox) -> AsyncIterator[ApiClient]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield ApiClient(session, sandbox.info["api_url"], sandbox.info["admin_token"])


@pytest.fixture(scope="session")
def external(sandbox: Sandbox) -> dict[str, Any]:
    """sandbox.json's ``external`` block: the sandbox's Postfix + Dovecot as a provider
    mailforge connects to (TLS listeners, ``ca_file``, ``bad_tls``, ``oauth``)."""
    return dict(sandbox.info["external"])


@pytest.fixture(scope="session")
def oauth_mint(sandbox: Sandbox) -> Callable[..., str]:
    """``oauth_mint(address, expires_in=None, rotate=False)``: a refresh token for the
    address at the sandbox's OAuth2 server (access tokens live *expires_in* seconds)."""
    from mailforge.sandbox import oauth

    def mint(address: str, expires_in: int | None = None, rotate: bool = False) -> str:
        return oauth.mint(sandbox.info, address, expires_in=expires_in, rotate=rotate)

    return mint


@pytest.fixture
def unique_domain() -> str:
    """A fresh domain name per test, e.g. ``t3f9a1c2b7d.test``."""
    return f"t{secrets.token_hex(5)}.test"


@pytest.fixture
def make_domain() -> Callable[[], str]:
    """A factory for more than one fresh domain name in a test."""
    return lambda: f"t{secrets.token_hex(5)}.test"
