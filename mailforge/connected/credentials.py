"""The secrets of a connected mailbox, unsealed only when a connection needs them.

Passwords, OAuth2 client secrets and tokens are sealed with the master key
(``secretbox``), each to its mailbox and kind (``context``): a blob copied to another
row or column does not open. For XOAUTH2, the stored access token serves while it has
more than a minute left; otherwise the refresh token is exchanged at the tenant-given
token endpoint (``connected.oauth.refresh``, through the outbound guard) and the new
access token (and a rotated refresh token) stored sealed, by compare-and-set on the
refresh token used, so a PATCH of the credentials meanwhile wins.

Used by the connection worker (``connected.worker``) and the mail service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from ..errors import NotFound
from ..secretbox import SecretBox
from ..store.store import Store
from . import oauth
from .network import Network
from .settings import AuthMethod, Endpoint, Remote, RemoteError, Secrets, Security

# An access token with less than this left is refreshed before use.
FRESH_MARGIN = timedelta(seconds=60)

# (network, grant) -> access token: ``oauth.refresh``; tests pass their own.
Refresh = Callable[[Network, oauth.Grant], Awaitable[oauth.AccessToken]]


def context(kind: str, mailbox_id: str) -> str:
    """The seal context of one secret of a connected mailbox: *kind* is ``smtp``,
    ``imap``, ``refresh``, ``access`` or ``client``."""
    return f"connected-{kind}:{mailbox_id}"


def seal(box: SecretBox, kind: str, mailbox_id: str, value: str | None) -> bytes | None:
    return None if value is None else box.seal(value.encode(), context(kind, mailbox_id))


def _open(box: SecretBox, kind: str, mailbox_id: str, blob: Any) -> str | None:
    return None if blob is None else box.open(bytes(blob), context(kind, mailbox_id)).decode()


def remote_of(row: Any) -> Remote:
    """Where and as whom, from a ``mailbox_connections`` row (joined with its mailbox)."""
    return Remote(
        mailbox_id=row["mailbox_id"], address=row["address"],
        smtp=Endpoint(row["smtp_host"], int(row["smtp_port"]),
                      cast(Security, row["smtp_security"]), row["smtp_username"]),
        imap=Endpoint(row["imap_host"], int(row["imap_port"]),
                      cast(Security, row["imap_security"]), row["imap_username"]),
        auth=cast(AuthMethod, row["auth"]))


class Credentials:
    def __init__(self, store: Store, box: SecretBox, net: Network,
                 refresh: Refresh | None = None) -> None:
        self.store = store
        self.box = box
        self.net = net
        self._refresh = refresh or oauth.refresh
        # One refresh per mailbox at a time in this process (others wait and reuse it).
        self._locks: dict[str, asyncio.Lock] = {}

    async def for_mailbox(self, mailbox_id: str) -> tuple[Remote, Secrets]:
        """Where, as whom, and the secrets to log in to connected mailbox *mailbox_id*
        (NotFound if it is not one, or was disconnected). RemoteError("oauth_failed")
        when its access token cannot be refreshed."""
        row = await self.store.connections.secrets(mailbox_id)
        if row is None:
            raise NotFound("email user")
        remote = remote_of(row)
        if remote.auth == "password":
            return remote, Secrets(
                smtp_password=_open(self.box, "smtp", mailbox_id, row["sealed_smtp_password"]),
                imap_password=_open(self.box, "imap", mailbox_id, row["sealed_imap_password"]))
        lock = self._locks.setdefault(mailbox_id, asyncio.Lock())
        async with lock:
            token = await self._access_token(mailbox_id)
        if not lock.locked():
            self._locks.pop(mailbox_id, None)
        return remote, Secrets(access_token=token)

    async def _access_token(self, mailbox_id: str) -> str:
        # Read again under the lock: another caller may just have refreshed it.
        row = await self.store.connections.secrets(mailbox_id)
        if row is None:
            raise NotFound("email user")
        expires = row["access_expires_at"]
        if row["sealed_access_token"] is not None and expires is not None \
                and expires - FRESH_MARGIN > datetime.now(UTC):
            token = _open(self.box, "access", mailbox_id, row["sealed_access_token"])
            assert token is not None
            return token
        refresh_used = bytes(row["sealed_refresh_token"])
        grant = oauth.Grant(
            token_url=row["oauth_token_url"], client_id=row["oauth_client_id"],
            client_secret=_open(self.box, "client", mailbox_id,
                                row["sealed_oauth_client_secret"]),
            refresh_token=_open(self.box, "refresh", mailbox_id, refresh_used) or "")
        got = await self._refresh(self.net, grant)
        if not isinstance(got.token, str) or not got.token:
            raise RemoteError("oauth_failed", "the token endpoint answered no access token")
        await self.store.connections.store_access(
            mailbox_id, self.box.seal(got.token.encode(), context("access", mailbox_id)),
            got.expires_at, seal(self.box, "refresh", mailbox_id, got.refresh_token),
            refresh_used)
        return str(got.token)
