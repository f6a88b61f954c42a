"""The mail service the API and the daemon share: send through Postfix submission with
a copy in Sent, read through the IMAP pool, sending quotas, and the inbound scanner
(new mail -> webhooks, DSNs and ARF reports -> reputation)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import asyncpg

from .. import reputation, webhooks
from ..config import Config
from ..errors import ApiError, Conflict, NotFound
from ..log import get
from ..secretbox import SecretBox
from ..store.queries import Q
from . import compose, limits, master
from .imap import ImapError, ImapPool
from .msgid import MessageIds, MessageRef
from .policy import PolicyService
from .submit import Submitter

log = get(__name__)

LIST_HEADERS = "MESSAGE-ID FROM TO CC SUBJECT DATE IN-REPLY-TO REFERENCES"
_ATTACHMENT = re.compile(r'"attachment"', re.IGNORECASE)


@dataclass(frozen=True)
class Sender:
    row: Any
    domain: str

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def address(self) -> str:
        return str(self.row["address"])


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


def _msgid_list(value: str | None) -> list[str]:
    return re.findall(r"<[^<>\s]+>", value or "")


class MailService:
    def __init__(self, pool: asyncpg.Pool, cfg: Config, box: SecretBox,
                 mail_host: str = "default") -> None:
        self.pool = pool
        self.cfg = cfg
        self.box = box
        self.mail_host = mail_host
        m = cfg.mail
        self.ids = MessageIds(box)
        self.imap = ImapPool(m.imap_host, m.imap_port,
                             lambda a: master.login_name(a, cfg), m.master_password,
                             m.imap_pool_per_mailbox, m.imap_idle_seconds, m.imap_timeout)
        self.policy = PolicyService(pool, cfg)
        self.submitter = Submitter(m.submission_host, m.submission_port, m.master_password)
        self.dispatcher = webhooks.Dispatcher(pool, box, cfg.webhooks)
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ lifecycle

    async def start(self, stop: asyncio.Event) -> None:
        if self.cfg.mail.master_password:
            await asyncio.to_thread(master.write_passdb, self.cfg)
        else:
            log.warning("mail.master_password is not set: sending and reading through the "
                        "API are unavailable")
        self.imap.start()
        await self.policy.start()
        self._tasks = [asyncio.create_task(self.dispatcher.run(stop), name="webhooks"),
                       asyncio.create_task(self._scan_loop(stop), name="inbound-scan")]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.policy.stop()
        await self.imap.close()
        self.submitter.close()

    # ------------------------------------------------------------ lookups

    async def sender(self, account_id: str, mailbox_id: str) -> Sender:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(Q.mail_sender_by_id, mailbox_id)
            if row is None or row["account_id"] != account_id:
                raise NotFound("email user")
            dom = await conn.fetchrow(Q.mail_domain_owner, row["domain_id"])
        return Sender(row, "" if dom is None else str(dom["name"]))

    def _require_ready(self, s: Sender) -> None:
        if not self.cfg.mail.master_password:
            raise ApiError("mail_unavailable", "Mail through the API is not configured "
                           "on this server (mail.master_password).", status=503)
        if s.row["status"] != "active" or s.row["suspended"]:
            raise Conflict("email_user_not_active",
                           f"The mailbox {s.address} is {s.row['status']}; only an active "
                           "mailbox can send and read mail.")

    def _limit(self, s: Sender) -> int:
        return limits.effective_limit(s.row["daily_send_limit"],
                                      self.cfg.mail.default_daily_limit,
                                      limits.warmup_from_row(s.row), limits.utc_today())

    async def quota(self, s: Sender) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            sent = int(await conn.fetchval(Q.mail_sent_on_day, s.id, limits.utc_today()))
        limit = self._limit(s)
        w = limits.warmup_from_row(s.row)
        reset = datetime.now(UTC) + timedelta(seconds=limits.seconds_until_reset())
        return {"daily_send_limit": s.row["daily_send_limit"],
                "default_daily_limit": self.cfg.mail.default_daily_limit,
                "effective_limit": limit, "sent_today": sent,
                "remaining": max(0, limit - sent),
                "resets_at": _rfc3339(reset.replace(hour=0, minute=0, second=0,
                                                    microsecond=0)),
                "warmup": None if w is None else {
                    "start_limit": w.start_limit, "days": w.days,
                    "started_on": w.started_on.isoformat()}}

    def _over_limit(self, q: dict[str, Any]) -> ApiError:
        retry = limits.seconds_until_reset()
        return ApiError("send_limit_reached",
                        f"The daily send limit of {q['effective_limit']} messages is "
                        "reached; it resets at 00:00 UTC.", status=429,
                        extra={"limit": q["effective_limit"], "remaining": 0,
                               "retry_after": retry},
                        headers={"Retry-After": str(retry), "X-Send-Limit-Remaining": "0"})

    # ------------------------------------------------------------ send

    async def send(self, s: Sender, req: compose.SendRequest) -> dict[str, Any]:
        self._require_ready(s)
        async with self.pool.acquire() as conn:
            await reputation.require_not_blocked(conn, s.row["domain_id"], s.domain,
                                                 self.cfg.reputation)
        q = await self.quota(s)
        if q["remaining"] <= 0:
            raise self._over_limit(q)
        msg = compose.compose(req, s.address, s.row["name"], s.row["signature"], s.domain)
        m = self.cfg.mail
        result = await self.submitter.submit(master.login_name(s.address, self.cfg),
                                             s.address, req.recipients, msg)
        if not result.ok:
            if "sending limit" in result.text.lower():
                raise self._over_limit(await self.quota(s))
            log.warning("submission refused", mailbox_id=s.id, code=result.code,
                        reply=result.text[:200])
            status = 502 if result.code >= 500 or result.code == 0 else 503
            raise ApiError("submission_refused",
                           f"The mail server refused the message: {result.code} "
                           f"{result.text[:200]}", status=status)
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
        q = await self.quota(s)
        out: dict[str, Any] = {"message_id": msg["Message-ID"], "status": "sent",
                               "remaining": q["remaining"]}
        if result.refused:
            out["refused"] = list(result.refused)
        return out

    # ------------------------------------------------------------ read

    async def list(self, s: Sender, folder: str, unread_only: bool, limit: int,
                   offset: int) -> dict[str, Any]:
        self._require_ready(s)
        async with self.imap.session(s.address) as c:
            try:
                validity = await self.imap.select(c, folder)
            except ImapError:
                raise NotFound("folder") from None
            uids = await self.imap.uid_search(c, "UNSEEN" if unread_only else "ALL")
            uids.sort(reverse=True)
            page = uids[offset:offset + limit]
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
            items[uid] = {
                "uid": uid,
                "id": self.ids.encode(MessageRef(s.id, folder, validity, uid)),
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
        return {"messages": [items[u] for u in page if u in items], "total": len(uids),
                "limit": limit, "offset": offset, "folder": folder}

    def ref(self, account_id: str, msg_id: str) -> MessageRef:
        ref = self.ids.decode(msg_id)
        if ref is None:
            raise NotFound("message")
        return ref

    async def _owned(self, account_id: str, msg_id: str) -> tuple[Sender, MessageRef]:
        ref = self.ref(account_id, msg_id)
        s = await self.sender(account_id, ref.mailbox_id)
        self._require_ready(s)
        return s, ref

    async def raw(self, account_id: str, msg_id: str) -> bytes:
        s, ref = await self._owned(account_id, msg_id)
        async with self.imap.session(s.address) as c:
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

    async def set_read(self, account_id: str, msg_id: str, read: bool) -> None:
        s, ref = await self._owned(account_id, msg_id)
        async with self.imap.session(s.address) as c:
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

    async def _scan_loop(self, stop: asyncio.Event) -> None:
        last_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                full = self.cfg.mail.full_scan_interval
                if full > 0 and loop.time() - last_sweep >= full:
                    last_sweep = loop.time()
                    async with self.pool.acquire() as conn:
                        await conn.execute(Q.mail_sweep_enroll, self.mail_host)
                await self.scan_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("inbound scan failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.mail.scan_interval)

    async def scan_once(self, limit: int = 200) -> int:
        if not self.cfg.mail.master_password:
            return 0
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(Q.mail_watched, self.mail_host, limit)
        sem = asyncio.Semaphore(8)

        async def one(r: Any) -> None:
            async with sem:
                try:
                    await self._scan_mailbox(r)
                except (ImapError, OSError, TimeoutError) as exc:
                    log.info("scan of a mailbox failed", mailbox_id=r["mailbox_id"],
                             error=str(exc))

        await asyncio.gather(*(one(r) for r in rows))
        return len(rows)

    async def _scan_mailbox(self, r: Any) -> None:
        address, mailbox_id = r["address"], r["mailbox_id"]
        async with self.imap.session(address) as c:
            validity = await self.imap.select(c, "INBOX")
            last = int(r["last_uid"])
            uids = await self.imap.uid_search(c, "ALL") if last <= 0 else \
                await self.imap.uid_search(c, "UID", f"{last + 1}:*")
            if last == -1 or (r["uidvalidity"] and validity != r["uidvalidity"]):
                # Baseline: start after what is there now; old mail is not news.
                async with self.pool.acquire() as conn:
                    await conn.execute(Q.mail_scan_record, mailbox_id, validity,
                                       max(uids, default=0))
                return
            new = sorted(u for u in uids if u > last)[-100:]
            fetched = []
            if new:
                fetched = await self.imap.uid_fetch(c, ",".join(map(str, new)),
                                                    "(UID BODY.PEEK[HEADER])")
            reports: dict[int, bytes] = {}
            headers: dict[int, Any] = {}  # uid -> parsed header block
            for text, lits in fetched:
                m = re.search(r"\bUID (\d+)", text)
                if not m or not lits:
                    continue
                uid = int(m.group(1))
                h = compose.parse(lits[-1][1])
                headers[uid] = h
                if h.get_content_type() == "multipart/report":
                    body = await self.imap.uid_fetch(c, str(uid), "(UID BODY.PEEK[])")
                    for _t, blits in body:
                        if blits:
                            reports[uid] = blits[-1][1]
        async with self.pool.acquire() as conn:
            for uid in new:
                hdr = headers.get(uid)
                if hdr is None:
                    continue
                ref = f"{mailbox_id}:{validity}:{uid}"
                mid = self.ids.encode(MessageRef(mailbox_id, "INBOX", validity, uid))
                data = {"email_user_id": mailbox_id, "email": address, "id": mid,
                        "uid": uid, "message_id": compose.header_text(hdr.get("Message-ID")),
                        "from": compose.header_text(hdr.get("From")),
                        "subject": compose.header_text(hdr.get("Subject")) or "",
                        "date": _date(compose.header_text(hdr.get("Date")))}
                async with conn.transaction():
                    await webhooks.enqueue(conn, r["account_id"], "message.received", data,
                                           event_id=f"evt_in_{ref}")
                    kind = compose.classify_report(compose.parse(reports[uid])) \
                        if uid in reports else None
                    if kind is not None:
                        await reputation.record(conn, r["domain_id"], mailbox_id, kind, ref)
                        event = "message.bounced" if kind == "bounce" \
                            else "message.complained"
                        await webhooks.enqueue(conn, r["account_id"], event, data,
                                               event_id=f"evt_{kind}_{ref}")
            await conn.execute(Q.mail_scan_record, mailbox_id, validity,
                               max([last, *uids]) if uids else last)
        if new:
            self.dispatcher.wake()
