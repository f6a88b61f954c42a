"""OAuth2 access tokens for XOAUTH2 from a refresh token (RFC 6749 section 6), at the
token endpoint the tenant gave (Google's, Microsoft's, the sandbox's).

The request goes through aiohttp with the guard's resolver (the connection goes to
the address the guard checked), TLS verified with the network's context, redirects
not followed. Plain http:// is allowed only to addresses the operator allowed
explicitly (``outbound.allow_networks``: the tests' loopback), never over the public
internet. Tokens and the client secret never appear in an error, a log line or a
repr; the endpoint's own ``error`` / ``error_description`` are shown (scrubbed).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from yarl import URL

from .. import netguard
from .network import Network
from .settings import RemoteError, scrub

_TOKEN = re.compile(r"[\x21-\x7e]{1,8192}")
MAX_BODY = 65536
DEFAULT_EXPIRES = 3600


@dataclass(frozen=True, repr=False)
class Grant:
    token_url: str
    client_id: str
    client_secret: str | None
    refresh_token: str

    def __repr__(self) -> str:
        return (f"Grant(token_url={self.token_url!r}, client_id={self.client_id!r}, "
                f"client_secret={'***' if self.client_secret else None}, refresh_token=***)")

    __str__ = __repr__


@dataclass(frozen=True, repr=False)
class AccessToken:
    token: str
    expires_at: datetime
    refresh_token: str | None  # rotated, if the server sent one

    def __repr__(self) -> str:
        return (f"AccessToken(token=***, expires_at={self.expires_at.isoformat()}, "
                f"refresh_token={'***' if self.refresh_token else None})")

    __str__ = __repr__


def _explicit(guard: netguard.Guard, addr: str) -> bool:
    """Inside a range the operator allowed (not merely public)."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in guard.allow)


class _PlainResolver(netguard.GuardedResolver):
    """For http:// token URLs: only addresses the operator allowed explicitly."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if not all(_explicit(self.guard, str(r["host"])) for r in results):
            raise netguard.Blocked(host)
        return results


def _fail(detail: str, secrets: tuple[str, ...]) -> RemoteError:
    return RemoteError("oauth_failed", scrub(detail, secrets))


async def refresh(net: Network, grant: Grant) -> AccessToken:
    """A fresh access token. Raises RemoteError("oauth_failed" | "blocked", ...)."""
    secrets = tuple(s for s in (grant.refresh_token, grant.client_secret) if s)
    try:
        url = URL(grant.token_url)
        host = url.raw_host or ""
    except (ValueError, TypeError):
        raise _fail("the token URL is not a valid URL", secrets) from None
    if url.scheme not in ("https", "http") or not host:
        raise _fail("the token URL must be an https:// URL", secrets)
    plain = url.scheme == "http"
    blocked = RemoteError("blocked", f"the token endpoint {host} is not an allowed destination")
    try:
        net.guard.check_url(url)
    except netguard.Blocked:
        raise blocked from None
    literal = netguard.ip_literal(host)
    if plain and literal is not None and not _explicit(net.guard, str(literal)):
        raise _fail("the token URL must use https://", secrets)
    resolver = _PlainResolver(net.guard) if plain else net.guard.resolver()
    form = {"grant_type": "refresh_token", "refresh_token": grant.refresh_token,
            "client_id": grant.client_id}
    if grant.client_secret:
        form["client_secret"] = grant.client_secret
    connector = aiohttp.TCPConnector(resolver=resolver, ssl=net.context, limit=1)
    try:
        async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=net.timeout),
                trust_env=False, cookie_jar=aiohttp.DummyCookieJar()) as session, \
                session.post(url, data=form, allow_redirects=False,
                             headers={"Accept": "application/json"}) as resp:
            status = resp.status
            body = await resp.content.read(MAX_BODY)
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, netguard.Blocked) or \
                isinstance(exc.__cause__, netguard.Blocked):
            if plain:
                raise _fail("the token URL must use https:// (plain http:// only to "
                            "addresses the operator allowed)", secrets) from None
            raise blocked from None
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            raise _fail(f"the certificate of the token endpoint {host} is not trusted",
                        secrets) from None
        raise _fail(f"cannot connect to the token endpoint {host}", secrets) from None
    except TimeoutError:
        raise _fail(f"the token endpoint {host} did not answer in time", secrets) from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        raise _fail(f"the token endpoint {host} failed ({type(exc).__name__})",
                    secrets) from None
    return _parse(status, body, host, secrets)


def _parse(status: int, body: bytes, host: str, secrets: tuple[str, ...]) -> AccessToken:
    data: Any
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        data = None
    if 300 <= status < 400:
        raise _fail(f"the token endpoint {host} redirected (HTTP {status}): give the final "
                    "token URL", secrets)
    if status != 200 or not isinstance(data, dict):
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            desc = data.get("error_description")
            extra = f" ({desc})" if isinstance(desc, str) and desc else ""
            raise _fail(f"the token endpoint {host} refused the refresh (HTTP {status}): "
                        f"{data['error']}{extra}", secrets)
        raise _fail(f"the token endpoint {host} answered HTTP {status} without a token",
                    secrets)
    token = data.get("access_token")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise _fail(f"the token endpoint {host} answered without a usable access_token",
                    secrets)
    kind = data.get("token_type")
    if kind is not None and (not isinstance(kind, str) or kind.lower() != "bearer"):
        raise _fail(f"the token endpoint {host} gave a token of type {kind!s:.20}, not "
                    "Bearer", (*secrets, token))
    expires = data.get("expires_in", DEFAULT_EXPIRES)
    if isinstance(expires, str) and expires.isdigit():
        expires = int(expires)
    if not isinstance(expires, int) or isinstance(expires, bool) or expires <= 0:
        expires = DEFAULT_EXPIRES
    rotated = data.get("refresh_token")
    if not isinstance(rotated, str) or not _TOKEN.fullmatch(rotated):
        rotated = None
    return AccessToken(token, datetime.now(UTC) + timedelta(seconds=min(expires, 86400 * 30)),
                       rotated)
