"""A Postfix policy service (``check_policy_service``, the SMTPD access policy
delegation protocol) inside the daemon: daily send limits for every submission.

Postfix's submission service asks at RCPT time (refuse early once a mailbox is out of
quota) and at END-OF-MESSAGE (count the message, atomically, in PostgreSQL: a message
past the limit is deferred with a 4xx). API sends are submitted through the same
service, so this is the single place where sends are counted, for the API and for mail
clients alike, and the count survives restarts. While mailforge is down Postfix's
``default_action=DUNNO`` lets mail through uncounted (fail open, by choice). A port 25
smtpd configured with ``mailforge_observe`` asks at RCPT time too: its answer is always
DUNNO, the request only marks the recipient as watched for the scanner's polling. The
shipped configuration no longer does (Dovecot's delivery events tell the scanner,
``mail/events.py``); it is kept for configurations that still name it.

Protocol: ``name=value`` lines ended by an empty line; the answer is ``action=...``
and an empty line; Postfix may reuse a connection for many requests.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg

from ..config import Config
from ..log import get
from ..store.db import Database
from ..store.mail import InboundScans, Sender, Senders, Sending
from . import limits

log = get(__name__)

MAX_LINE = 4096
MAX_ATTRS = 100
WATCH_SECONDS = 60.0


def parse_request(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in lines[:MAX_ATTRS]:
        name, sep, value = raw.decode("utf-8", "replace").rstrip("\r\n").partition("=")
        if sep:
            out[name.strip().lower()] = value
    return out


def defer_text(limit: int) -> str:
    return (f"451 4.7.1 Daily sending limit of {limit} messages reached; "
            "try again after 00:00 UTC")


class PolicyService:
    def __init__(self, pool: asyncpg.Pool, cfg: Config, mail_host: str = "default") -> None:
        db = Database(pool, mail_host)
        self.senders = Senders(db)
        self.sending = Sending(db)
        self.scans = InboundScans(db)
        self.cfg = cfg
        self._server: asyncio.Server | None = None
        self._retry: asyncio.Task[None] | None = None
        self.requests = 0

    async def start(self) -> None:
        if not self.cfg.mail.policy_port:
            return
        address = f"{self.cfg.mail.policy_listen}:{self.cfg.mail.policy_port}"
        try:
            self._server = await asyncio.start_server(
                self._serve, self.cfg.mail.policy_listen, self.cfg.mail.policy_port,
                reuse_address=True, limit=MAX_LINE)
        except OSError as exc:
            # Postfix lets mail through uncounted while we are unreachable (fail open); the
            # rest of the daemon is still useful, so do not die: retry in the background.
            log.error("policy service cannot listen; retrying", address=address,
                      error=str(exc))
            self._retry = asyncio.create_task(self._listen_later(), name="policy-listen")
            return
        log.info("policy service listening", address=address)

    async def _listen_later(self) -> None:
        while self._server is None:
            await asyncio.sleep(2.0)
            with contextlib.suppress(OSError):
                self._server = await asyncio.start_server(
                    self._serve, self.cfg.mail.policy_listen, self.cfg.mail.policy_port,
                    reuse_address=True, limit=MAX_LINE)
        log.info("policy service listening",
                 address=f"{self.cfg.mail.policy_listen}:{self.cfg.mail.policy_port}")

    async def stop(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                lines: list[bytes] = []
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    if line in (b"\n", b"\r\n"):
                        break
                    lines.append(line)
                action = await self.decide(parse_request(lines))
                writer.write(f"action={action}\n\n".encode())
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def decide(self, req: dict[str, str]) -> str:
        """The action for one request. A store failure lets the mail through (fail
        open, like Postfix's default_action when the daemon is down): the mail server
        must not stop because its control plane did."""
        self.requests += 1
        state = req.get("protocol_state", "").upper()
        sasl = req.get("sasl_username", "").strip().lower()
        try:
            if state == "RCPT":
                rcpt = req.get("recipient", "").strip().lower()
                if rcpt:
                    await self.scans.watch(rcpt, WATCH_SECONDS)
                if sasl:
                    return await self._check(sasl)
                return "DUNNO"
            if state == "END-OF-MESSAGE" and sasl:
                return await self._count(sasl)
            return "DUNNO"
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("policy decision failed", error=str(exc), state=state)
            return "DUNNO"

    def _limit(self, sender: Sender) -> int:
        return limits.effective_limit(sender.daily_send_limit,
                                      self.cfg.mail.default_daily_limit, sender.warmup,
                                      limits.utc_today())

    async def _check(self, address: str) -> str:
        sender = await self.senders.by_login(address, limits.utc_today())
        if sender is None:
            return "DUNNO"
        limit = self._limit(sender)
        return defer_text(limit) if sender.sent_today >= limit else "DUNNO"

    async def _count(self, address: str) -> str:
        today = limits.utc_today()
        sender = await self.senders.by_login(address, today)
        if sender is None:
            return "DUNNO"
        limit = self._limit(sender)
        if await self.sending.count(sender, today, limit) is None:
            log.info("send deferred: daily limit reached", mailbox_id=sender.id, limit=limit)
            return defer_text(limit)
        return "DUNNO"
