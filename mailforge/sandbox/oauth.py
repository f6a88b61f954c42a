"""The sandbox's OAuth2 server: it stands for Google's or Microsoft's token endpoint.

Connected mailboxes may log in by XOAUTH2 (issue 12): mailforge keeps a refresh token,
trades it at the provider's token endpoint for a short-lived access token, and presents
that to SMTP and IMAP. Here the provider is the sandbox's own Postfix + Dovecot, and
Dovecot checks each bearer token by asking this server (its ``oauth2`` passdb with
``introspection_mode = post``), so the whole path runs against real servers.

``python -m mailforge.sandbox.oauth --config FILE`` (the sandbox starts it; FILE is a
JSON object written by the sandbox, mode 0600, because it holds the secrets):

- ``POST /token``: the refresh-token grant (RFC 6749 section 6). The client is
  ``client_id`` (form field or HTTP Basic); a ``client_secret``, when sent, must be
  right (a public client sends none). Answers ``{access_token, token_type, expires_in,
  scope}`` (+ a new ``refresh_token`` when the grant rotates, the old one then dead),
  or the RFC's errors: 400 ``invalid_grant`` / ``unsupported_grant_type`` /
  ``invalid_request``, 401 ``invalid_client``.
- ``POST /introspect``: token introspection (RFC 7662) for Dovecot, which authenticates
  with its own client id and secret in the form body: ``{active: true, username, exp,
  ...}`` or ``{active: false}`` (unknown, expired or revoked).
- ``POST /mint`` (``Authorization: Bearer <mint secret>``), JSON ``{email,
  expires_in?, rotate?}``: a new refresh token for that address, what a person's
  consent screen gives an application. For the tests and the demo; ``expires_in`` is
  the life of the access tokens it yields (default ``access_ttl``, short, so that
  mailforge's refresh is exercised).
- ``POST /revoke`` (mint secret), JSON ``{refresh_token}`` or ``{email}``: kills the
  refresh token(s) and every access token they gave.
- ``GET /stats[?email=]`` (mint secret): counters (grants, introspections).
- ``GET /health``.

Tokens are random (``secrets``); the server keeps only their SHA-256, in memory and in
an append-only journal (``state_file``) replayed at start, so a restart keeps every
refresh token and live access token. No token, secret or request body is ever logged.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import atomic

log = logging.getLogger("mailforge.sandbox.oauth")

DEFAULT_ACCESS_TTL = 120
MAX_TTL = 86400
SCOPE = "https://mail.google.com/"  # what Google's SMTP/IMAP tokens carry; informative
MAX_BODY = 16 * 1024


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Refresh:
    email: str
    ttl: int
    rotate: bool


@dataclass
class Access:
    email: str
    exp: float
    refresh: str  # digest of the refresh token that gave it


@dataclass
class Store:
    """Refresh and access tokens by digest, with the journal that makes them survive
    a restart."""

    journal: Path
    refresh: dict[str, Refresh] = field(default_factory=dict)
    access: dict[str, Access] = field(default_factory=dict)

    def load(self) -> None:
        try:
            lines = self.journal.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                rec = json.loads(line)
                self._apply(rec)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash: the rest still counts
        self.compact()

    def _apply(self, rec: dict[str, Any]) -> None:
        op = rec["op"]
        if op == "refresh":
            self.refresh[rec["h"]] = Refresh(str(rec["email"]), int(rec["ttl"]),
                                             bool(rec["rotate"]))
        elif op == "access":
            self.access[rec["h"]] = Access(str(rec["email"]), float(rec["exp"]), rec["rt"])
        elif op == "revoke":
            self._revoke(rec["h"])

    def _revoke(self, h: str) -> int:
        gone = 1 if self.refresh.pop(h, None) is not None else 0
        for ah in [k for k, a in self.access.items() if a.refresh == h]:
            del self.access[ah]
        return gone

    def _append(self, rec: dict[str, Any]) -> None:
        # Append, not rewrite: a token grant costs one short write, even with
        # thousands of tokens (a bulk connect of 500 mailboxes refreshes 500 at once).
        fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(rec, separators=(",", ":")) + "\n").encode())
        finally:
            os.close(fd)

    def compact(self) -> None:
        now = time.time()
        self.access = {h: a for h, a in self.access.items() if a.exp > now}
        lines = [{"op": "refresh", "h": h, "email": r.email, "ttl": r.ttl, "rotate": r.rotate}
                 for h, r in self.refresh.items()]
        lines += [{"op": "access", "h": h, "email": a.email, "exp": a.exp, "rt": a.refresh}
                  for h, a in self.access.items()]
        atomic.write_bytes(self.journal, "".join(
            json.dumps(rec, separators=(",", ":")) + "\n" for rec in lines).encode(),
            mode=0o600)

    def add_refresh(self, email: str, ttl: int, rotate: bool) -> str:
        token = "sbx-rt-" + secrets.token_urlsafe(32)
        rec = {"op": "refresh", "h": digest(token), "email": email, "ttl": ttl,
               "rotate": rotate}
        self._apply(rec)
        self._append(rec)
        return token

    def add_access(self, email: str, ttl: int, refresh_digest: str) -> str:
        token = "sbx-at-" + secrets.token_urlsafe(32)
        rec = {"op": "access", "h": digest(token), "email": email, "exp": time.time() + ttl,
               "rt": refresh_digest}
        self._apply(rec)
        self._append(rec)
        if len(self.access) > 4 * len(self.refresh) + 1000:
            self.compact()  # expired access tokens pile up otherwise
        return token

    def revoke(self, refresh_digest: str) -> int:
        n = self._revoke(refresh_digest)
        self._append({"op": "revoke", "h": refresh_digest})
        return n

    def active(self, token: str) -> Access | None:
        a = self.access.get(digest(token))
        if a is None or a.exp <= time.time():
            return None
        return a


@dataclass(frozen=True, repr=False)
class Settings:
    host: str
    port: int
    state_file: Path
    client_id: str
    client_secret: str
    introspection_client_id: str
    introspection_client_secret: str
    mint_secret: str
    access_ttl: int = DEFAULT_ACCESS_TTL

    @classmethod
    def load(cls, path: Path) -> Settings:
        raw = json.loads(path.read_text())
        return cls(host=str(raw["host"]), port=int(raw["port"]),
                   state_file=Path(raw["state_file"]), client_id=str(raw["client_id"]),
                   client_secret=str(raw["client_secret"]),
                   introspection_client_id=str(raw["introspection_client_id"]),
                   introspection_client_secret=str(raw["introspection_client_secret"]),
                   mint_secret=str(raw["mint_secret"]),
                   access_ttl=int(raw.get("access_ttl", DEFAULT_ACCESS_TTL)))


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _oauth_error(status: int, error: str, description: str,
                 headers: Mapping[str, str] | None = None) -> web.Response:
    hdrs = {"Cache-Control": "no-store", "Pragma": "no-cache", **(headers or {})}
    return web.json_response({"error": error, "error_description": description},
                             status=status, headers=hdrs)


def _basic(request: web.Request) -> tuple[str, str] | None:
    """(client_id, client_secret) from an HTTP Basic header (RFC 6749 section 2.3.1:
    each form-urlencoded before base64), None without one."""
    auth = request.headers.get("Authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        raw = base64.b64decode(auth[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    cid, _, secret = raw.partition(":")
    return urllib.parse.unquote_plus(cid), urllib.parse.unquote_plus(secret)


class Server:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.store = Store(settings.state_file)
        self.store.load()
        self.counts: dict[str, int] = {}
        self.by_email: dict[str, dict[str, int]] = {}

    def _count(self, what: str, email: str | None = None) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        if email is not None:
            per = self.by_email.setdefault(email, {})
            per[what] = per.get(what, 0) + 1

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post("/token", self.token)
        app.router.add_post("/introspect", self.introspect)
        app.router.add_post("/mint", self.mint)
        app.router.add_post("/revoke", self.revoke)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/health", self.health)
        return app

    async def _form(self, request: web.Request) -> dict[str, str] | None:
        if request.content_type != "application/x-www-form-urlencoded":
            return None
        form = await request.post()
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _admin(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and _same(auth[7:].strip(), self.s.mint_secret)

    async def token(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if form is None:
            return _oauth_error(400, "invalid_request",
                                "send application/x-www-form-urlencoded")
        basic = _basic(request)
        cid, secret = basic if basic is not None else (form.get("client_id", ""),
                                                       form.get("client_secret"))
        challenge = {"WWW-Authenticate": 'Basic realm="sandbox"'} if basic else {}
        if not _same(cid, self.s.client_id) or (
                secret is not None and not _same(secret, self.s.client_secret)):
            self._count("invalid_client")
            log.info("token: invalid_client")
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret",
                                challenge)
        if form.get("grant_type") != "refresh_token":
            return _oauth_error(400, "unsupported_grant_type",
                                "only grant_type=refresh_token is served here")
        rt = form.get("refresh_token", "")
        h = digest(rt)
        grant = self.store.refresh.get(h) if rt else None
        if grant is None:
            self._count("invalid_grant")
            log.info("token: invalid_grant (unknown or revoked refresh token)")
            return _oauth_error(400, "invalid_grant", "the refresh token is not valid")
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": grant.ttl,
                                "scope": SCOPE}
        if grant.rotate:
            # Rotation (as Microsoft does): a new refresh token; the old one is dead,
            # with the access tokens it gave.
            new_rt = self.store.add_refresh(grant.email, grant.ttl, grant.rotate)
            self.store.revoke(h)
            h = digest(new_rt)
            body["refresh_token"] = new_rt
        body["access_token"] = self.store.add_access(grant.email, grant.ttl, h)
        self._count("refresh_grants", grant.email)
        log.info("token: refresh grant for %s: access token for %d s%s", grant.email,
                 grant.ttl, " (refresh token rotated)" if grant.rotate else "")
        return web.json_response(body, headers={"Cache-Control": "no-store",
                                                "Pragma": "no-cache"})

    async def introspect(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if form is None:
            return _oauth_error(400, "invalid_request",
                                "send application/x-www-form-urlencoded")
        basic = _basic(request)
        cid, secret = basic if basic is not None else (form.get("client_id", ""),
                                                       form.get("client_secret", ""))
        if not (_same(cid, self.s.introspection_client_id)
                and _same(secret or "", self.s.introspection_client_secret)):
            log.info("introspect: invalid_client")
            return _oauth_error(401, "invalid_client", "unknown client or wrong secret")
        a = self.store.active(form.get("token", ""))
        if a is None:
            self._count("introspections_inactive")
            log.info("introspect: inactive token")
            return web.json_response({"active": False})
        self._count("introspections_active", a.email)
        log.info("introspect: active token of %s", a.email)
        return web.json_response({
            # Dovecot: username_attribute = username, active_attribute = active.
            "active": True, "username": a.email, "email": a.email, "sub": a.email,
            "exp": int(a.exp), "scope": SCOPE, "client_id": self.s.client_id,
            "token_type": "Bearer"})

    async def _json(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def mint(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await self._json(request)
        if body is None:
            return web.json_response({"error": "a JSON object is required"}, status=400)
        email = body.get("email")
        if not isinstance(email, str) or "@" not in email or len(email) > 254 \
                or any(c.isspace() for c in email):
            return web.json_response({"error": "email: an address is required"}, status=400)
        ttl = body.get("expires_in", self.s.access_ttl)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL:
            return web.json_response({"error": f"expires_in: 1-{MAX_TTL} seconds"},
                                     status=400)
        rotate = body.get("rotate", False)
        if not isinstance(rotate, bool):
            return web.json_response({"error": "rotate: true or false"}, status=400)
        email = email.lower()
        token = self.store.add_refresh(email, ttl, rotate)
        self._count("minted", email)
        log.info("mint: refresh token for %s (access tokens of %d s%s)", email, ttl,
                 ", rotating" if rotate else "")
        return web.json_response({"refresh_token": token, "email": email,
                                  "expires_in": ttl, "rotate": rotate})

    async def revoke(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await self._json(request)
        if body is None:
            return web.json_response({"error": "a JSON object is required"}, status=400)
        if isinstance(body.get("refresh_token"), str):
            targets = [digest(body["refresh_token"])]
        elif isinstance(body.get("email"), str):
            email = body["email"].lower()
            targets = [h for h, r in self.store.refresh.items() if r.email == email]
        else:
            return web.json_response({"error": "refresh_token or email is required"},
                                     status=400)
        n = sum(self.store.revoke(h) for h in targets)
        log.info("revoke: %d refresh token(s)", n)
        return web.json_response({"revoked": n})

    async def stats(self, request: web.Request) -> web.Response:
        if not self._admin(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        email = request.query.get("email")
        counts = dict(self.by_email.get(email.lower(), {})) if email else dict(self.counts)
        counts["refresh_tokens"] = sum(1 for r in self.store.refresh.values()
                                       if email is None or r.email == email.lower())
        return web.json_response(counts)

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})


# ----------------------------------------------------------------------------- clients
# For the tests, the demo and the benchmarks: *info* is the sandbox.json content.


def _admin_call(info: Mapping[str, Any], path: str, body: dict[str, Any] | None) -> Any:
    base = str(info["external"]["oauth"]["mint_url"]).rsplit("/", 1)[0]
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(  # noqa: S310 - the sandbox's own loopback server
        base + path, data=data, method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {info['secrets']['oauth_mint_secret']}",
                 "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read())


def mint(info: Mapping[str, Any], email: str, expires_in: int | None = None,
         rotate: bool = False) -> str:
    """A new refresh token for *email* at the sandbox's OAuth2 server."""
    body: dict[str, Any] = {"email": email, "rotate": rotate}
    if expires_in is not None:
        body["expires_in"] = expires_in
    return str(_admin_call(info, "/mint", body)["refresh_token"])


def revoke(info: Mapping[str, Any], *, refresh_token: str | None = None,
           email: str | None = None) -> int:
    body = {"refresh_token": refresh_token} if refresh_token else {"email": email}
    return int(_admin_call(info, "/revoke", body)["revoked"])


def stats(info: Mapping[str, Any], email: str | None = None) -> dict[str, int]:
    q = "?" + urllib.parse.urlencode({"email": email}) if email else ""
    return dict(_admin_call(info, "/stats" + q, None))


def refresh(info: Mapping[str, Any], refresh_token: str,
            client_secret: str | None = None) -> dict[str, Any]:
    """The refresh-token grant, as a client does it (tests without mailforge's own
    client): the token response; urllib.error.HTTPError for an OAuth error."""
    o = info["external"]["oauth"]
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": o["client_id"],
            "client_secret": o["client_secret"] if client_secret is None else client_secret}
    req = urllib.request.Request(  # noqa: S310
        o["token_url"], data=urllib.parse.urlencode(form).encode(), method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return dict(json.loads(resp.read()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mailforge.sandbox.oauth", description=__doc__)
    p.add_argument("--config", required=True, type=Path)
    args = p.parse_args(argv)
    settings = Settings.load(args.config)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    server = Server(settings)
    log.info("oauth server on %s:%d (%d refresh tokens)", settings.host, settings.port,
             len(server.store.refresh))
    # The access log shows method, path and status only: tokens travel in POST bodies.
    web.run_app(server.app(), host=settings.host, port=settings.port, print=None,
                access_log_format='%a "%r" %s %b %Tfs')
    return 0


if __name__ == "__main__":
    sys.exit(main())
