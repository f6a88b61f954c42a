"""The mail service the API and the daemon share: send through Postfix submission with
a copy in Sent, read through the IMAP pool, sending quotas, and the inbound scanner
(new mail -> webhooks, DSNs and ARF reports -> reputation).

It acts for a ``Sender`` (``store/mail.py``), which only a lookup scoped by account and
by the token's domain restriction gives out (``service/mail.py`` makes it), so nothing
here decides who may act as a mailbox; it decides whether the mailbox can send or read
now (readiness, reputation, quota). Its queries are the store's (``store/mail.py``,
``store/webhooks.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import asyncpg

from .. import netguard, paging, reputation, webhooks
from ..config import Config
from ..connected.credentials import Credentials
from ..connected.imap import RemoteImapPool
from ..connected.network import Network
from ..connected.settings import RemoteError
from ..connected.smtp import RemoteSubmitter
from ..connected.worker import backoff
from ..errors import (
    Conflict,
    NotFound,
    TooManyRequests,
    Unavailable,
    UpstreamRefused,
    ValidationFailed,
)
from ..log import get
from ..secretbox import SecretBox
from ..store.db import Database
from ..store.mail import InboundScans, Sender, Sending, Watched
from ..store.store import Store
from . import compose, events, limits, master, reports
from .events import EventListener
from .imap import Conn, ImapError, ImapPool
from .msgid import MessageIds, MessageRef, canonical_folder
from .policy import PolicyService
from .submit import Submitter

log = get(__name__)

# Backoff of a mailbox whose scans fail: 5 s, doubling, at most 15 minutes.
SCAN_BACKOFF_BASE = 5.0
SCAN_BACKOFF_MAX = 900.0
# Mailbox scans at once (each holds one IMAP session).
SCAN_CONCURRENCY = 8
# Deliveries to one mailbox within this many seconds share one scan.
EVENT_DEBOUNCE = 0.05
# Mailboxes scanned per event batch (one query), and most waiting for their scan: past
# it events are dropped and the sweep finds their mail (a flood is bounded in memory).
EVENT_BATCH = 200
MAX_PENDING = 20_000
# Mailboxes per page of the sweep's keyset walk.
SWEEP_PAGE = 200
# A report larger than this is read only this far (the original is at its end anyway
# in the few cases where it is attached whole; its headers come first).
MAX_REPORT_BYTES = 1_000_000
LIST_HEADERS = "MESSAGE-ID FROM TO CC SUBJECT DATE IN-REPLY-TO REFERENCES"
_ATTACHMENT = re.compile(r'"attachment"', re.IGNORECASE)


def _rfc3339(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return _rfc3339(parsedate_to_datetime(value))
    except (TypeError, ValueError, IndexError):
        return None


_CURSOR_STALE = "cursor: not a cursor of this list (use next_cursor as given)"


def _inbox_cursor(cursor: str, folder: str, unread_only: bool) -> tuple[int, int]:
    """(UIDVALIDITY, UID) a page of *folder* starts below; 400 naming ``cursor`` for a
    cursor of another folder or filter."""
    f, unread, validity, uid = paging.decode(cursor, "inbox", 4)
    if f != folder or unread != int(unread_only) or not isinstance(validity, int) \
            or not isinstance(uid, int):
        raise ValidationFailed([_CURSOR_STALE])
    return validity, uid


def _msgid_list(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


async def _first(*events_: asyncio.Event) -> None:
    """Return when any of *events_* is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events_]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class MailService:
    def __init__(self, pool: asyncpg.Pool, cfg: Config, box: SecretBox,
                 mail_host: str = "default") -> None:
        # The pool is lent to reputation's functions, which take a connection.
        self.pool = pool
        self.db = Database(pool, mail_host)
        self.sending = Sending(self.db)
        self.scans = InboundScans(self.db)
        self.cfg = cfg
        self.box = box
        self.mail_host = mail_host
        m = cfg.mail
        self.ids = MessageIds(box)
        self.imap = ImapPool(m.imap_host, m.imap_port,
                             lambda a: master.login_name(a, cfg), m.master_password,
                             m.imap_pool_per_mailbox, m.imap_idle_seconds, m.imap_timeout)
        self.policy = PolicyService(pool, cfg, mail_host)
        self.submitter = Submitter(m.submission_host, m.submission_port, m.master_password)
        guard = netguard.Guard.from_config(cfg.outbound.allow_networks)
        self.dispatcher = webhooks.Dispatcher(pool, box, cfg.webhooks, guard)
        # Connected mailboxes (issue 12): their own servers, reached through the one
        # guard for tenant-given hosts, with pooled connections bounded per remote host.
        c = cfg.connected
        self.net = Network(guard, c.ca_file, c.timeout)
        self.remote_smtp = RemoteSubmitter(self.net, c.per_host_connections, c.idle_seconds,
                                           threads=max(4, c.per_host_connections))
        self.remote_imap = RemoteImapPool(self.net, c.per_host_connections,
                                          c.per_mailbox_connections, c.idle_seconds)
        self.credentials = Credentials(Store(pool, mail_host), box, self.net)
        self._tasks: list[asyncio.Task[None]] = []
        # mailbox id -> (consecutive failed scans, loop time before which it is skipped)
        self._scan_failures: dict[str, tuple[int, float]] = {}
        # Delivery events waiting for their scan: address -> loop time it is due (one
        # entry per mailbox however many deliveries: coalesced), at most MAX_PENDING.
        self._due: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._scanning: set[str] = set()  # mailbox ids being scanned now
        self.events_dropped = 0
        self._dropped_logged = 0.0
        self.events = EventListener(cfg, box, self.notify_delivery)

    # ------------------------------------------------------------ lifecycle

    async def start(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(master.write_passdb, self.cfg)
        if not self.cfg.mail.master_password:
            log.warning("mail.master_password is not set: sending and reading through the "
                        "API are unavailable")
        self.imap.start()
        self.remote_imap.start()
        await self.policy.start()
        await self._dovecot_events_conf()
        await self.events.start()
        self._tasks = [asyncio.create_task(self.dispatcher.run(stop), name="webhooks"),
                       asyncio.create_task(self._scan_loop(stop), name="inbound-scan"),
                       asyncio.create_task(self._event_loop(stop), name="inbound-events"),
                       asyncio.create_task(self._sweep_loop(stop), name="inbound-sweep"),
                       asyncio.create_task(self._connected_loop(stop),
                                           name="inbound-connected")]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.events.stop()
        await self.policy.stop()
        await self.imap.close()
        await self.remote_imap.close()
        self.submitter.close()
        self.remote_smtp.close()

    # ------------------------------------------------------------ readiness and quota

    def require_ready(self, s: Sender) -> None:
        """Mail through the API is configured and the mailbox is active (not suspended,
        not still being created, a connected one whose last test passed): else 503 or
        409."""
        if s.kind == "connected":
            if not s.active:
                state = "paused" if s.suspended else s.status
                raise Conflict("email_user_not_active",
                               f"The connected mailbox {s.address} is {state}; only an "
                               "active one can send and read mail (see its /connection).")
            return
        if not self.cfg.mail.master_password:
            raise Unavailable("mail_unavailable", "Mail through the API is not configured "
                              "on this server (mail.master_password).")
        if not s.active:
            raise Conflict("email_user_not_active",
                           f"The mailbox {s.address} is {s.status}; only an active "
                           "mailbox can send and read mail.")

    def limit(self, s: Sender) -> int:
        return limits.effective_limit(s.daily_send_limit, self.cfg.mail.default_daily_limit,
                                      s.warmup, limits.utc_today())

    def quota(self, s: Sender, sent: int | None = None) -> dict[str, Any]:
        """The sending quota of *s* with *sent* messages today (default: the count read
        with the sender)."""
        sent = s.sent_today if sent is None else sent
        limit = self.limit(s)
        w = s.warmup
        reset = datetime.now(UTC) + timedelta(seconds=limits.seconds_until_reset())
        return {"daily_send_limit": s.daily_send_limit,
                "default_daily_limit": self.cfg.mail.default_daily_limit,
                "effective_limit": limit, "sent_today": sent,
                "remaining": max(0, limit - sent),
                "resets_at": _rfc3339(reset.replace(hour=0, minute=0, second=0,
                                                    microsecond=0)),
                "warmup": None if w is None else {
                    "start_limit": w.start_limit, "days": w.days,
                    "started_on": w.started_on.isoformat()}}

    def _over_limit(self, q: dict[str, Any]) -> TooManyRequests:
        retry = limits.seconds_until_reset()
        return TooManyRequests("send_limit_reached",
                               f"The daily send limit of {q['effective_limit']} messages is "
                               "reached; it resets at 00:00 UTC.",
                               extra={"limit": q["effective_limit"], "remaining": 0,
                                      "retry_after": retry}, retry_after=retry)

    # ------------------------------------------------------------ connections

    @contextlib.asynccontextmanager
    async def _session(self, mailbox_id: str, address: str, connected: bool,
                       keep: bool = True) -> AsyncIterator[Conn]:
        """An IMAP session of the mailbox: the local Dovecot as the master user, or a
        connected mailbox's own server with its own credentials (a refusal of those
        is reported: the mailbox is marked failed and re-tested)."""
        if not connected:
            async with self.imap.session(address, keep) as c:
                yield c
            return
        remote, secrets = await self._remote(mailbox_id)
        try:
            async with self.remote_imap.session(remote, secrets, keep) as c:
                yield c
        except RemoteError as exc:
            raise await self._remote_failed(mailbox_id, exc) from None

    async def _remote(self, mailbox_id: str) -> tuple[Any, Any]:
        try:
            return await self.credentials.for_mailbox(mailbox_id)
        except RemoteError as exc:  # the OAuth token endpoint refused or is away
            raise await self._remote_failed(mailbox_id, exc) from None

    async def _remote_failed(self, mailbox_id: str, exc: RemoteError) -> Exception:
        """The API error for a connected mailbox's server failing in use; credentials
        refused (password or token) also mark the mailbox failed."""
        log.warning("connected mailbox's server failed", mailbox_id=mailbox_id,
                    reason=exc.reason, detail=exc.detail[:200])
        if exc.reason in ("auth_failed", "oauth_failed"):
            # Marked failed at once (with its webhook event); the connection worker
            # tests it again with backoff.
            try:
                await self.credentials.store.connections.report_failure(
                    mailbox_id, exc.reason, exc.detail, backoff(1, self.cfg.connected))
            except Exception:  # the answer to the client matters more
                log.exception("could not record a connected mailbox's failure")
        text = f"The mailbox's own mail server failed: {exc.reason}: {exc.detail}"[:300]
        if exc.reason in ("unreachable", "timeout"):
            return Unavailable("remote_unavailable", text)
        return UpstreamRefused("remote_refused", text)

    # ------------------------------------------------------------ send

    async def send(self, s: Sender, req: compose.SendRequest) -> dict[str, Any]:
        """Submit *req* as *s* (readiness, the reputation guard and the quota first) and
        keep a copy in Sent: ``message_id``, ``status`` and ``remaining``."""
        self.require_ready(s)
        if s.kind == "connected":
            return await self._send_connected(s, req)
        assert s.domain_id is not None  # a managed mailbox always has its domain
        await reputation.require_not_blocked(self.pool, s.domain_id, s.domain,
                                             self.cfg.reputation)
        q = self.quota(s)
        if q["remaining"] <= 0:
            raise self._over_limit(q)
        msg = compose.compose(req, s.address, s.name, s.signature, s.domain)
        m = self.cfg.mail
        msgid = str(msg["Message-ID"])
        # The evidence a later DSN or complaint must name, recorded before the message
        # leaves: a bounce can come back within milliseconds.
        await reputation.record_sent(self.pool, s.domain_id, s.id, msgid,
                                     req.recipients, self.cfg.reputation.evidence_days)
        result = await self.submitter.submit(master.login_name(s.address, self.cfg),
                                             s.address, req.recipients, msg)
        if not result.ok:
            await reputation.forget_sent(self.pool, s.domain_id, msgid)
            if "sending limit" in result.text.lower():
                raise self._over_limit(self.quota(s, await self._sent_today(s)))
            log.warning("submission refused", mailbox_id=s.id, code=result.code,
                        reply=result.text[:200])
            kind = UpstreamRefused if result.code >= 500 or result.code == 0 else Unavailable
            raise kind("submission_refused",
                       f"The mail server refused the message: {result.code} "
                       f"{result.text[:200]}")
        # The copy in Sent keeps Bcc (only the sender sees it) and is marked read.
        if req.bcc:
            msg["Bcc"] = ", ".join(req.bcc)
        try:
            async with self.imap.session(s.address) as c:
                await self.imap.append(c, m.sent_folder, msg.as_bytes(), r"(\Seen)")
        except (ImapError, OSError, TimeoutError) as exc:
            # The message left already; a missing Sent copy must not make the client
            # retry (and send twice).
            log.warning("could not store the Sent copy", mailbox_id=s.id, error=str(exc))
        q = self.quota(s, await self._sent_today(s))
        out: dict[str, Any] = {"message_id": msg["Message-ID"], "status": "sent",
                               "remaining": q["remaining"]}
        if result.refused:
            out["refused"] = list(result.refused)
        return out

    async def _send_connected(self, s: Sender, req: compose.SendRequest) -> dict[str, Any]:
        """Send through a connected mailbox's own SMTP server. No policy service sees
        these messages, so mailforge counts them itself, before they leave (atomic:
        concurrent sends cannot pass the limit), and gives the count back when the
        server refuses the message."""
        day = limits.utc_today()
        limit = self.limit(s)
        sent = await self.sending.count(s, day, limit)
        if sent is None:
            raise self._over_limit(self.quota(s, limit))
        msg = compose.compose(req, s.address, s.name, s.signature, s.domain)
        try:
            remote, secrets = await self._remote(s.id)
            try:
                result = await self.remote_smtp.submit(remote, secrets, s.address,
                                                       req.recipients, msg)
            except RemoteError as exc:
                raise await self._remote_failed(s.id, exc) from None
        except Exception:
            # Not sent: the count goes back. (Cancelled midway it stays: the message may
            # have left, and counting one too many is the safe side of a limit.)
            await self.sending.uncount(s, day)
            raise
        if not result.ok:
            await self.sending.uncount(s, day)
            log.warning("connected mailbox's server refused a message", mailbox_id=s.id,
                        code=result.code, reply=result.text[:200])
            kind = UpstreamRefused if result.code >= 500 or result.code == 0 else Unavailable
            raise kind("submission_refused",
                       f"The mailbox's mail server refused the message: {result.code} "
                       f"{result.text[:200]}")
        if s.save_sent:
            if req.bcc:
                msg["Bcc"] = ", ".join(req.bcc)
            try:
                async with self._session(s.id, s.address, True) as c:
                    await self.imap.append(c, s.sent_folder or self.cfg.mail.sent_folder,
                                           msg.as_bytes(), r"(\Seen)")
            except (ImapError, OSError, TimeoutError, UpstreamRefused, Unavailable) as exc:
                log.warning("could not store the Sent copy", mailbox_id=s.id,
                            error=str(exc)[:300])
        out: dict[str, Any] = {"message_id": msg["Message-ID"], "status": "sent",
                               "remaining": max(0, limit - sent)}
        if result.refused:
            out["refused"] = list(result.refused)
        return out

    async def _sent_today(self, s: Sender) -> int:
        # Read again after a submission: the policy service counted it meanwhile.
        return await self.sending.sent_on(s, limits.utc_today())

    # ------------------------------------------------------------ read

    async def list(self, s: Sender, folder: str, unread_only: bool, limit: int,
                   offset: int, cursor: str | None = None) -> dict[str, Any]:
        """A page of *folder*, newest first: from *offset*, or below the UID a
        *cursor* (a ``next_cursor`` of the same list) names."""
        self.require_ready(s)
        folder = canonical_folder(folder)
        if s.kind == "connected" and s.sent_folder and folder == self.cfg.mail.sent_folder:
            # "Sent" means the connected server's own Sent folder, whatever its name
            # there ("[Gmail]/Sent Mail", "Sent Items"): found by SPECIAL-USE.
            folder = s.sent_folder
        below = None
        if cursor is not None:
            below = _inbox_cursor(cursor, folder, unread_only)
        async with self._session(s.id, s.address, s.kind == "connected") as c:
            try:
                validity = await self.imap.select(c, folder)
            except ImapError:
                raise NotFound("folder") from None
            uids = await self.imap.uid_search(c, "UNSEEN" if unread_only else "ALL")
            uids.sort(reverse=True)
            if below is not None:
                if below[0] != validity:
                    # The folder was recreated: its UIDs mean other messages now.
                    raise ValidationFailed([_CURSOR_STALE])
                offset = 0
                uids_after = [u for u in uids if u < below[1]]
                page = uids_after[:limit]
                more = len(uids_after) > limit
            else:
                page = uids[offset:offset + limit]
                more = offset + limit < len(uids)
            fetched = []
            if page:
                fetched = await self.imap.uid_fetch(
                    c, ",".join(map(str, page)),
                    f"(UID FLAGS INTERNALDATE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS "
                    f"({LIST_HEADERS})])")
        items: dict[int, dict[str, Any]] = {}
        for text, lits in fetched:
            m = re.search(r"\bUID (\d+)", text)
            if not m:
                continue
            uid = int(m.group(1))
            flags_m = re.search(r"FLAGS \(([^)]*)\)", text)
            flags = flags_m.group(1).split() if flags_m else []
            raw = next((lit for before, lit in lits if "HEADER.FIELDS" in before.upper()), b"")
            h = compose.parse(raw)
            idate = re.search(r'INTERNALDATE "([^"]+)"', text)
            date = _date(h.get("Date"))
            if date is None and idate:
                with contextlib.suppress(ValueError):
                    date = _rfc3339(datetime.strptime(idate.group(1), "%d-%b-%Y %H:%M:%S %z"))
            structure = text + " ".join(before for before, _ in lits)
            msg_id = self.ids.encode(MessageRef(s.id, folder, validity, uid))
            items[uid] = {
                # uid is the message's id too: integrations written for the hosted API
                # read a body at /v1/inbox/{uid}/body (the Winnr reply loop does).
                "uid": msg_id,
                "imap_uid": uid,
                "id": msg_id,
                "message_id": compose.header_text(h.get("Message-ID")),
                "from": compose.header_text(h.get("From")),
                "to": compose.address_list(compose.header_text(h.get("To"))),
                "cc": compose.address_list(compose.header_text(h.get("Cc"))),
                "subject": compose.header_text(h.get("Subject")) or "",
                "date": date,
                "is_read": "\\Seen" in flags,
                "in_reply_to": next(iter(_msgid_list(
                    compose.header_text(h.get("In-Reply-To")))), None),
                "references": _msgid_list(compose.header_text(h.get("References"))),
                "has_attachments": bool(_ATTACHMENT.search(structure)),
            }
        next_cursor = paging.encode("inbox", [folder, int(unread_only), validity, page[-1]]) \
            if page and more else None
        return {"messages": [items[u] for u in page if u in items], "total": len(uids),
                "limit": limit, "offset": offset, "next_cursor": next_cursor,
                "folder": folder}

    def ref(self, msg_id: str) -> MessageRef:
        """What a message id points at (a forged or altered id is 404 ``message``); the
        mailbox it names must still be looked up like a mailbox id."""
        ref = self.ids.decode(msg_id)
        if ref is None:
            raise NotFound("message")
        return ref

    async def raw(self, s: Sender, ref: MessageRef) -> bytes:
        """The message *ref* of mailbox *s*, as stored."""
        if ref.mailbox_id != s.id:
            raise NotFound("message")
        self.require_ready(s)
        async with self._session(s.id, s.address, s.kind == "connected") as c:
            try:
                validity = await self.imap.select(c, ref.folder)
            except ImapError:
                raise NotFound("message") from None
            if validity != ref.uidvalidity:
                raise NotFound("message")
            fetched = await self.imap.uid_fetch(c, str(ref.uid), "(UID BODY.PEEK[])")
        for _text, lits in fetched:
            for before, lit in lits:
                if "BODY[]" in before.upper():
                    return lit
        raise NotFound("message")

    async def set_read(self, s: Sender, ref: MessageRef, read: bool) -> None:
        if ref.mailbox_id != s.id:
            raise NotFound("message")
        self.require_ready(s)
        async with self._session(s.id, s.address, s.kind == "connected") as c:
            try:
                validity = await self.imap.select(c, ref.folder)
            except ImapError:
                raise NotFound("message") from None
            if validity != ref.uidvalidity:
                raise NotFound("message")
            if ref.uid not in await self.imap.uid_search(c, "UID", str(ref.uid)):
                raise NotFound("message")
            await self.imap.uid_store(c, ref.uid, "+FLAGS" if read else "-FLAGS", r"(\Seen)")

    # ------------------------------------------------------------ inbound scanning
    #
    # Three ways a mailbox gets scanned, all through _scan_isolated:
    # - a delivery event from Dovecot (mail/events.py): that one mailbox, soon after;
    # - the sweep, the safety net for events that never came: every active mailbox once
    #   at start and then every full_scan_interval, at most sweep_rate a second;
    # - polling of watched mailboxes (older Postfix configs calling mailforge_observe).
    # One mailbox never stops the others: a mailbox whose scan fails (a name the IMAP
    # server refuses, a login refused, a broken message) is logged and skipped, and
    # waits out a backoff of its own while the scanner goes on with the rest; one
    # message that cannot be processed is logged and passed over. No query covers more
    # than a page of mailboxes, so no single row can fail a statement for the host.

    async def _dovecot_events_conf(self) -> None:
        """Write Dovecot's side of the delivery events; reload Dovecot if it changed."""
        try:
            changed = await asyncio.to_thread(events.write_dovecot_conf, self.cfg, self.box)
        except OSError as exc:
            log.error("cannot write the Dovecot events file; only the sweep observes "
                      "inbound mail", path=str(events.conf_path(self.cfg)), error=str(exc))
            return
        cmd = self.cfg.mail.dovecot_reload_command
        if not changed or not cmd:
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _out, err = await asyncio.wait_for(proc.communicate(), 30)
            ok = proc.returncode == 0
        except (OSError, TimeoutError) as exc:
            ok, err = False, str(exc).encode()
        if ok:
            log.info("Dovecot reloaded for the delivery events file")
        else:
            log.warning("Dovecot did not reload; delivery events start at its next "
                        "reload (the sweep covers until then)",
                        error=err.decode("utf-8", "replace")[:300])

    def notify_delivery(self, address: str) -> None:
        """Dovecot delivered to *address*: scan that mailbox shortly (deliveries within
        EVENT_DEBOUNCE share one scan; at most MAX_PENDING mailboxes wait, the sweep
        finds what is dropped past that)."""
        if address in self._due:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if len(self._due) >= MAX_PENDING:
            self.events_dropped += 1
            if now - self._dropped_logged > 60:
                self._dropped_logged = now
                log.warning("too many delivery events waiting; dropped (the sweep finds "
                            "their mail)", dropped=self.events_dropped, pending=len(self._due))
            return
        self._due[address] = now + EVENT_DEBOUNCE
        self._wake.set()

    async def _event_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            now = loop.time()
            ready = [a for a, t in self._due.items() if t <= now][:EVENT_BATCH]
            if not ready:
                wait = min(self._due.values(), default=now + 60.0) - now
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(stop, self._wake), max(0.01, wait))
                continue
            for a in ready:
                del self._due[a]
            try:
                await self.scan_addresses(ready)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # PostgreSQL away: the lookup failed before any scan; these mailboxes
                # are tried again in a second (as long as room is left for them).
                log.warning("scan of delivered mailboxes failed; retrying",
                            error=str(exc), mailboxes=len(ready))
                retry_at = loop.time() + 1.0
                for a in ready:
                    if len(self._due) < MAX_PENDING:
                        self._due.setdefault(a, retry_at)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            except Exception:  # the scanner must outlive any one bug
                log.exception("scan of delivered mailboxes failed")

    async def scan_addresses(self, addresses: Sequence[str]) -> int:
        """Scan the mailboxes of this host among *addresses* (delivery events); a
        mailbox being scanned right now gets its event back, to be scanned after."""
        if not self.cfg.mail.master_password:
            return 0
        loop = asyncio.get_running_loop()
        skip = set(self._backing_off(loop.time()))
        rows = []
        for r in await self.scans.by_address(addresses):
            if r.mailbox_id in self._scanning:
                self._due.setdefault(r.address, loop.time() + EVENT_DEBOUNCE)
                self._wake.set()
            elif r.mailbox_id not in skip:
                rows.append(r)
        return await self._scan_rows(rows)

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        # The first sweep runs at start: events posted while the daemon was down are
        # lost, and this is where their mail is found.
        while not stop.is_set():
            started = loop.time()
            try:
                await self.sweep(stop)
            except Exception:  # the scanner must outlive any one bug
                log.exception("inbound sweep failed")
            interval = self.cfg.mail.full_scan_interval
            if interval <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(),
                                       max(1.0, started + interval - loop.time()))

    async def _connected_loop(self, stop: asyncio.Event) -> None:
        """Connected mailboxes get no delivery events (their mail arrives on another
        server): each active one is polled every ``connected.poll_interval`` seconds,
        SCAN_CONCURRENCY at once (and, on one provider, no more connections than its
        per-host bound), a keyset page of mailboxes at a time."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.poll_connected(stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("poll of connected mailboxes failed", error=str(exc))
            except Exception:  # the scanner must outlive any one bug
                log.exception("poll of connected mailboxes failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(),
                    max(1.0, started + self.cfg.connected.poll_interval - loop.time()))

    async def poll_connected(self, stop: asyncio.Event | None = None) -> int:
        """Scan every active connected mailbox once; returns how many were scanned."""
        loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(SCAN_CONCURRENCY)

        async def one(r: Watched) -> None:
            async with sem:
                await self._scan_isolated(r, keep=True, connected=True)

        after, scanned = "", 0
        while stop is None or not stop.is_set():
            page = await self.scans.connected_page(after, SWEEP_PAGE)
            if not page:
                break
            after = page[-1].mailbox_id
            skip = set(self._backing_off(loop.time()))
            rows = [r for r in page if r.mailbox_id not in skip]
            await asyncio.gather(*(one(r) for r in rows))
            scanned += len(rows)
        return scanned

    async def sweep(self, stop: asyncio.Event) -> int:
        """Scan every active mailbox of this host once, at most ``mail.sweep_rate`` a
        second, a keyset page at a time; a page that cannot be read is retried with a
        backoff, a mailbox that fails is skipped. Returns the mailboxes scanned."""
        if not self.cfg.mail.master_password:
            return 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pace = 1.0 / self.cfg.mail.sweep_rate
        scanned = 0
        # Scans start at the rate and overlap (a scan waits on the IMAP server), at most
        # SCAN_CONCURRENCY at once.
        slots = asyncio.Semaphore(SCAN_CONCURRENCY)
        running: set[asyncio.Task[None]] = set()

        async def one(r: Watched) -> None:
            try:
                await self._scan_isolated(r, keep=False)
            finally:
                slots.release()

        try:
            scanned = await self._sweep_pages(stop, pace, slots, running, one)
        finally:
            await asyncio.gather(*running, return_exceptions=True)
        try:
            await self.scans.expire_evidence()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("expiring sent-message evidence failed", error=str(exc))
        log.info("inbound sweep done", mailboxes=scanned,
                 seconds=round(loop.time() - t0, 1))
        return scanned

    async def _sweep_pages(self, stop: asyncio.Event, pace: float,
                           slots: asyncio.Semaphore, running: set[asyncio.Task[None]],
                           one: Callable[[Watched], Coroutine[Any, Any, None]]) -> int:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        after, scanned, failures = "", 0, 0
        while not stop.is_set():
            try:
                page = await self.scans.sweep_page(after, SWEEP_PAGE)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                failures += 1
                delay = min(SCAN_BACKOFF_MAX, SCAN_BACKOFF_BASE * 2.0 ** (failures - 1))
                log.warning("inbound sweep cannot read mailboxes; retrying",
                            error=str(exc), retry_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            failures = 0
            if not page:
                break
            after = page[-1].mailbox_id
            skip = set(self._backing_off(loop.time()))
            for r in page:
                if r.mailbox_id in skip or r.mailbox_id in self._scanning:
                    continue
                wait = next_at - loop.time()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
                if stop.is_set():
                    return scanned
                next_at = max(next_at, loop.time() - 1.0) + pace
                await slots.acquire()
                task = asyncio.create_task(one(r))
                running.add(task)
                task.add_done_callback(running.discard)
                scanned += 1
        return scanned

    def _backing_off(self, now: float) -> Sequence[str]:
        # A mailbox not tried again long after its backoff (no longer watched, deleted)
        # is forgotten, so that the table stays as small as what fails now.
        for mid in [m for m, (_n, until) in self._scan_failures.items()
                    if until < now - 2 * SCAN_BACKOFF_MAX]:
            del self._scan_failures[mid]
        return [mid for mid, (_n, until) in self._scan_failures.items() if until > now]

    def _scan_failed(self, mailbox_id: str, now: float) -> float:
        n = self._scan_failures.get(mailbox_id, (0, 0.0))[0] + 1
        delay = min(SCAN_BACKOFF_MAX, SCAN_BACKOFF_BASE * 2.0 ** (n - 1))
        self._scan_failures[mailbox_id] = (n, now + delay)
        return delay

    async def _scan_isolated(self, r: Watched, keep: bool = True,
                             connected: bool = False) -> None:
        """Scan *r*; any failure is logged and puts the mailbox on its backoff. *keep*
        False closes its IMAP session afterwards (the sweep); *connected*: *r* is a
        connected mailbox, read on its own server."""
        loop = asyncio.get_running_loop()
        mailbox_id = r.mailbox_id
        if mailbox_id in self._scanning:
            return
        self._scanning.add(mailbox_id)
        try:
            await self._scan_mailbox(r, keep, connected)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # isolate one mailbox
            delay = self._scan_failed(mailbox_id, loop.time())
            log.warning("scan of a mailbox failed; skipped", mailbox_id=mailbox_id,
                        error=f"{type(exc).__name__}: {exc}"[:300],
                        failures=self._scan_failures[mailbox_id][0],
                        retry_in=round(delay, 1))
        else:
            self._scan_failures.pop(mailbox_id, None)
        finally:
            self._scanning.discard(mailbox_id)

    async def _scan_loop(self, stop: asyncio.Event) -> None:
        """Polling of watched mailboxes (``mailforge_observe``), every scan_interval."""
        while not stop.is_set():
            try:
                await self.scan_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("inbound scan failed", error=str(exc))
            except Exception:  # the scanner must outlive any one bug
                log.exception("inbound scan pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.mail.scan_interval)

    async def _scan_rows(self, rows: Sequence[Watched]) -> int:
        """Scan *rows*, SCAN_CONCURRENCY at a time, each isolated from the others."""
        sem = asyncio.Semaphore(SCAN_CONCURRENCY)

        async def one(r: Watched) -> None:
            async with sem:
                await self._scan_isolated(r)

        await asyncio.gather(*(one(r) for r in rows))
        return len(rows)

    async def scan_once(self, limit: int = 200) -> int:
        if not self.cfg.mail.master_password:
            return 0
        loop = asyncio.get_running_loop()
        rows = await self.scans.watched(limit, self._backing_off(loop.time()))
        return await self._scan_rows(rows)

    async def _scan_mailbox(self, r: Watched, keep: bool = True,
                            connected: bool = False) -> None:
        address, mailbox_id = r.address, r.mailbox_id
        async with self._session(mailbox_id, address, connected, keep) as c:
            validity = await self.imap.select(c, "INBOX")
            last = r.last_uid
            uids = await self.imap.uid_search(c, "ALL") if last <= 0 else \
                await self.imap.uid_search(c, "UID", f"{last + 1}:*")
            if last == -1 or (r.uidvalidity and validity != r.uidvalidity):
                # Baseline: start after what is there now; old mail is not news.
                await self.scans.record(mailbox_id, validity, max(uids, default=0))
                return
            new = sorted(u for u in uids if u > last)[-100:]
            fetched = []
            if new:
                fetched = await self.imap.uid_fetch(c, ",".join(map(str, new)),
                                                    "(UID BODY.PEEK[HEADER])")
            reports_raw: dict[int, bytes] = {}
            headers: dict[int, Any] = {}  # uid -> parsed header block
            for text, lits in fetched:
                m = re.search(r"\bUID (\d+)", text)
                if not m or not lits:
                    continue
                uid = int(m.group(1))
                try:
                    h = compose.parse(lits[-1][1])
                    is_report = h.get_content_type() == "multipart/report"
                except Exception as exc:  # one broken message is skipped
                    log.warning("unreadable message header; skipped", mailbox_id=mailbox_id,
                                uid=uid, error=f"{type(exc).__name__}: {exc}"[:300])
                    continue
                headers[uid] = h
                # A connected mailbox's domain is not ours: its bounces are the concern
                # of its own server, and mailforge keeps no reputation for it.
                if is_report and not connected:
                    body = await self.imap.uid_fetch(c, str(uid), "(UID BODY.PEEK[])")
                    for _t, blits in body:
                        if blits:
                            reports_raw[uid] = blits[-1][1][:MAX_REPORT_BYTES]
        hooks = self.dispatcher.store
        for uid in new:
            hdr = headers.get(uid)
            if hdr is None:
                continue
            ref = f"{mailbox_id}:{validity}:{uid}"
            try:
                data = self._event_data(r, validity, uid, hdr)
                report = reports.parse(compose.parse(reports_raw[uid])) \
                    if uid in reports_raw else None
            except Exception as exc:  # one broken message is skipped
                log.warning("unreadable message; skipped", mailbox_id=mailbox_id,
                            uid=uid, error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            # The event and the report's verdict commit together (once per message:
            # both are idempotent on their refs).
            async with self.db.tx() as conn:
                await webhooks.enqueue(hooks, conn, r.account_id, "message.received", data,
                                       event_id=f"evt_in_{ref}")
                if report is None or r.domain_id is None:
                    continue
                verdict = await reputation.count_report(
                    conn, r.domain_id, mailbox_id, report, ref)
                if verdict.counted:
                    event = "message.bounced" if report.kind == "bounce" \
                        else "message.complained"
                    await webhooks.enqueue(
                        hooks, conn, r.account_id, event,
                        {**data, "original_message_id": f"<{report.message_id}>"},
                        event_id=f"evt_{report.kind}_{ref}")
        await self.scans.record(mailbox_id, validity, max([last, *uids]) if uids else last)
        if new:
            self.dispatcher.wake()

    def _event_data(self, r: Watched, validity: int, uid: int, hdr: Any) -> dict[str, Any]:
        mailbox_id = r.mailbox_id
        msg_id = self.ids.encode(MessageRef(mailbox_id, "INBOX", validity, uid))
        return {"email_user_id": mailbox_id, "email": r.address, "id": msg_id,
                "uid": msg_id, "imap_uid": uid,
                "message_id": compose.header_text(hdr.get("Message-ID")),
                "from": compose.header_text(hdr.get("From")),
                "subject": compose.header_text(hdr.get("Subject")) or "",
                "date": _date(compose.header_text(hdr.get("Date")))}
