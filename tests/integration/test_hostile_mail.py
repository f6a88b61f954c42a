"""Issue 9 against the real stack, as a hostile tenant, a hostile sender on port 25 and
a hostile webhook target would try it:

- a domain-restricted token reaches no message of another domain of its account
  (body, attachments, attachment download, mark read/unread), nor a deleted mailbox's;
- a message id has one spelling only;
- forged DSNs and ARF reports about messages mailforge never sent change nothing, a
  DSN about a message sent through the API counts, once;
- a mailbox whose name cannot log in does not stop the inbound scanner for the others;
- webhook URLs to loopback, private, link-local and reserved addresses are refused at
  creation, a name that resolves to one is blocked at delivery, and the delivery
  record tells nothing about what answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import smtplib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web
from support import ready_domain, ready_mailbox, wait_for, wait_job

from mailforge import reputation

pytestmark = pytest.mark.stack

BLOCKED_TEXT = "blocked: destination not allowed"


async def _poll(check: Any, timeout: float = 15.0) -> Any:
    """Await *check()* until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")



async def _wait_message(api: Any, user_id: str, subject: str, folder: str = "INBOX",
                        timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, body = await api.get(f"/v1/email-users/{user_id}/inbox",
                                     params={"folder": folder})
        if status == 200:
            for m in body["messages"]:
                if m["subject"] == subject:
                    return dict(m)
        await asyncio.sleep(0.1)
    raise AssertionError(f"{subject!r} not in {folder} of {user_id}: {body}")


async def _send(api: Any, user_id: str, to: str, subject: str,
                attachment: bytes | None = None) -> str:
    body: dict[str, Any] = {"to": to, "subject": subject, "body": "hello"}
    if attachment is not None:
        body["attachments"] = [{"filename": "secret.bin",
                                "content_type": "application/octet-stream",
                                "content_base64": base64.b64encode(attachment).decode()}]
    status, out = await api.post(f"/v1/email-users/{user_id}/inbox/send", body)
    assert status == 200, out
    return str(out["message_id"])


# ------------------------------------------------------------------ scope of message ids


async def test_restricted_token_reaches_no_message_of_another_domain(
        api: Any, make_domain: Any) -> None:
    mine, other = make_domain(), make_domain()
    await asyncio.gather(ready_domain(api, mine), ready_domain(api, other))
    me, victim = await asyncio.gather(ready_mailbox(api, mine, "me"),
                                      ready_mailbox(api, other, "vic"))
    secret = secrets.token_bytes(64)
    await _send(api, me["id"], victim["email"], "for the victim", secret)
    theirs = await _wait_message(api, victim["id"], "for the victim")
    own = await _wait_message(api, me["id"], "for the victim", folder="Sent")
    assert theirs["has_attachments"] and not theirs["is_read"]

    status, tok = await api.post("/v1/auth/tokens", {
        "name": "only-mine", "permissions": ["write"], "domains": [mine]})
    assert status == 201, tok
    r = api.with_token(tok["token"])
    mid = theirs["id"]
    probes = [("GET", f"/v1/inbox/{mid}/body"), ("GET", f"/v1/inbox/{mid}/attachments"),
              ("GET", f"/v1/inbox/{mid}/attachments/0"), ("POST", f"/v1/inbox/{mid}/read"),
              ("POST", f"/v1/inbox/{mid}/unread"),
              ("GET", f"/v1/email-users/{victim['id']}/inbox"),
              ("GET", f"/v1/email-users/{victim['id']}/sending")]
    for method, path in probes:
        status, body = await r.request(method, path)
        assert status == 404, (method, path, status, body)
        assert secret.hex() not in json.dumps(body) and "for the victim" not in str(body)
    status, body = await r.put(f"/v1/email-users/{victim['id']}/sending",
                               {"daily_send_limit": 1})
    assert status == 404, body
    status, body = await r.post(f"/v1/email-users/{victim['id']}/inbox/send",
                                {"to": "x@outside.example", "subject": "x", "body": "x"})
    assert status == 404, body
    # Webhooks carry the events of every domain of the account: not for this token.
    status, body = await r.post("/v1/webhooks", {"url": "https://hooks.example/x"})
    assert status == 403, body
    assert (await r.get("/v1/webhooks"))[0] == 403
    # Nothing changed: still unread, the limit untouched.
    again = await _wait_message(api, victim["id"], "for the victim")
    assert again["is_read"] is False
    status, q = await api.get(f"/v1/email-users/{victim['id']}/sending")
    assert status == 200 and q["daily_send_limit"] is None, q

    # The same token reads its own domain's messages (the restriction, not a breakage).
    status, body = await r.get(f"/v1/inbox/{own['id']}/body")
    assert status == 200 and body["subject"] == "for the victim", body
    status, body = await r.get(f"/v1/inbox/{own['id']}/attachments/0")
    assert status == 200
    # And the unrestricted token reads the victim's message.
    status, body = await api.get(f"/v1/inbox/{mid}/body")
    assert status == 200 and body["subject"] == "for the victim", body


async def test_message_ids_of_deleted_and_suspended_mailboxes_are_refused(
        api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    a, b = await asyncio.gather(ready_mailbox(api, unique_domain, "stays"),
                                ready_mailbox(api, unique_domain, "goes"))
    await _send(api, a["id"], b["email"], "before delete")
    msg = await _wait_message(api, b["id"], "before delete")
    assert (await api.get(f"/v1/inbox/{msg['id']}/body"))[0] == 200

    status, body = await api.post(f"/v1/email-users/{b['id']}/suspend")
    assert status in (200, 202), body
    status, body = await api.get(f"/v1/inbox/{msg['id']}/body")
    assert status == 409 and body["error"]["code"] == "email_user_not_active", body
    status, body = await api.post(f"/v1/email-users/{b['id']}/resume")
    assert status in (200, 202), body
    if body.get("job_id"):
        await wait_job(api, body["job_id"])

    status, job = await api.delete(f"/v1/email-users/{b['id']}")
    assert status == 202, job
    for method, path in (("GET", f"/v1/inbox/{msg['id']}/body"),
                         ("GET", f"/v1/inbox/{msg['id']}/attachments"),
                         ("POST", f"/v1/inbox/{msg['id']}/read")):
        status, body = await api.request(method, path)
        assert status == 404, (path, status, body)


async def test_message_ids_have_one_spelling(api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    a = await ready_mailbox(api, unique_domain, "speller")
    await _send(api, a["id"], a["email"], "spell me")
    msg = await _wait_message(api, a["id"], "spell me")
    value = msg["id"]
    assert (await api.get(f"/v1/inbox/{value}/body"))[0] == 200
    for spelling in ("inbox", "Inbox"):  # INBOX is case-insensitive: still one id
        same = await _wait_message(api, a["id"], "spell me", folder=spelling)
        assert same["id"] == value, (spelling, same["id"], value)
    text = value[4:]
    variants = {value + "=", value + "==", value.upper(), "MSG_" + text,
                value + "%0A", value[:-1], value + "A"}
    alt = "msg_" + text.replace("-", "+").replace("_", "/")
    if alt != value:
        # '/' cannot travel in a path segment: only the '+' spelling is tried as is.
        variants.add(alt.replace("/", "%2F"))
    if len(text) % 4:
        # The last character has unused low bits: flipping one spells the same bytes.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        variants.add("msg_" + text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1])
    variants.discard(value)
    for v in sorted(variants):
        status, body = await api.get(f"/v1/inbox/{v}/body")
        assert status in (400, 404), (v, status, body)


# ------------------------------------------------------------------ reputation evidence


def _report(to: str, report_type: str, machine_type: str, machine: str,
            original: str, original_type: str = "text/rfc822-headers") -> bytes:
    b = "b" + secrets.token_hex(6)
    return (f"From: reports@isp.example\r\nTo: {to}\r\nSubject: report {b}\r\n"
            f"Message-ID: <{b}@isp.example>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type={report_type}; boundary="{b}"\r\n'
            f"\r\n--{b}\r\nContent-Type: text/plain\r\n\r\nA report.\r\n"
            f"\r\n--{b}\r\nContent-Type: {machine_type}\r\n\r\n{machine}\r\n"
            f"\r\n--{b}\r\nContent-Type: {original_type}\r\n\r\n{original}\r\n"
            f"\r\n--{b}--\r\n").encode()


def _dsn(to: str, rcpt: str, original: str, **kw: Any) -> bytes:
    return _report(to, "delivery-status", "message/delivery-status",
                   "Reporting-MTA: dns; mx.outside.example\r\n\r\n"
                   f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1",
                   original, **kw)


def _arf(to: str, original: str, extra: str = "", **kw: Any) -> bytes:
    return _report(to, "feedback-report", "message/feedback-report",
                   "Feedback-Type: abuse\r\nUser-Agent: fbl/1\r\nVersion: 1" + extra,
                   original, **kw)


def _original(sender: str, rcpt: str, message_id: str | None) -> str:
    head = f"From: {sender}\r\nTo: {rcpt}\r\nSubject: hello"
    return head + (f"\r\nMessage-ID: {message_id}" if message_id else "")


def _port25(sandbox: Any, sender: str, rcpt: str, raw: bytes) -> None:
    smtp = sandbox.info["smtp"]
    with smtplib.SMTP(smtp["host"], smtp["port"], timeout=10) as s:
        s.sendmail(sender, [rcpt], raw)


async def _rep(api: Any, domain_id: str) -> dict[str, Any]:
    status, body = await api.get(f"/v1/domains/{domain_id}/reputation")
    assert status == 200, body
    return dict(body)


async def test_forged_reports_change_nothing_and_evidence_counts_once(
        sandbox: Any, api: Any, make_domain: Any) -> None:
    name, other_name = make_domain(), make_domain()
    dom, other = await asyncio.gather(ready_domain(api, name), ready_domain(api, other_name))
    m, o = await asyncio.gather(ready_mailbox(api, name, "sender"),
                                ready_mailbox(api, other_name, "sender"))
    real = await _send(api, m["id"], "rcpt@outside.example", "really sent")
    theirs = await _send(api, o["id"], "rcpt@outside.example", "sent by another domain")
    addr = m["email"]
    never = f"<{secrets.token_hex(8)}@{name}>"
    forged = [
        # About a message never sent from this domain, every way a report can name one.
        _arf(addr, _original(addr, "x@isp.example", never)),
        _arf(addr, _original(addr, "x@isp.example", never), original_type="message/rfc822"),
        _arf(addr, "Subject: nothing", extra=f"\r\nOriginal-Message-ID: {never}",
             original_type="text/plain"),
        _dsn(addr, "rcpt@outside.example", _original(addr, "rcpt@outside.example", never)),
        # No Message-ID at all (the old test's forgery).
        _arf(addr, _original(addr, "x@isp.example", None)),
        _dsn(addr, "rcpt@outside.example", _original(addr, "rcpt@outside.example", None)),
        # A real message, but a recipient it was never sent to.
        _dsn(addr, "someone-else@outside.example",
             _original(addr, "someone-else@outside.example", real)),
        # A real message of another domain, reported to this one.
        _arf(addr, _original(o["email"], "x@isp.example", theirs)),
        _dsn(addr, "rcpt@outside.example",
             _original(o["email"], "rcpt@outside.example", theirs)),
    ]
    for raw in forged:
        await asyncio.to_thread(_port25, sandbox, "", addr, raw)
    # The genuine DSN comes last: once it counted, every forgery before it was scanned.
    genuine = _dsn(addr, "RCPT@outside.example", _original(addr, "rcpt@outside.example", real))
    await asyncio.to_thread(_port25, sandbox, "", addr, genuine)
    rep = await _poll(lambda: _bounced(api, dom["id"], 1))
    assert (rep["bounces"], rep["complaints"], rep["status"]) == (1, 0, "watch"), rep
    # The same DSN again, then a genuine complaint as the next marker: still one bounce.
    await asyncio.to_thread(_port25, sandbox, "", addr, genuine)
    await asyncio.to_thread(_port25, sandbox, "fbl@isp.example", addr,
                            _arf(addr, _original(addr, "rcpt@outside.example", real)))
    rep = await _poll(lambda: _complained(api, dom["id"], 1))
    assert (rep["bounces"], rep["complaints"]) == (1, 1), rep
    assert rep["status"] != "blocked", rep  # two reports never block (block_min_events)
    rep_other = await _rep(api, other["id"])
    assert rep_other["bounces"] == rep_other["complaints"] == 0, rep_other
    # The mailbox still received every report as mail (nothing lost, only not counted).
    status, box = await api.get(f"/v1/email-users/{m['id']}/inbox", params={"limit": 100})
    assert status == 200 and box["total"] >= len(forged) + 3, box


async def _bounced(api: Any, domain_id: str, n: int) -> dict[str, Any] | None:
    rep = await _rep(api, domain_id)
    return rep if rep["bounces"] >= n else None


async def _complained(api: Any, domain_id: str, n: int) -> dict[str, Any] | None:
    rep = await _rep(api, domain_id)
    return rep if rep["complaints"] >= n else None


async def test_smtp_submissions_recorded_by_the_milter_hook_count_as_evidence(
        sandbox: Any, api: Any, make_domain: Any) -> None:
    """``reputation.record_submitted`` (for the submission milter): a message
    submitted over SMTP is evidence only for a From domain of the login's own account."""
    name, foreign = make_domain(), make_domain()
    dom = await ready_domain(api, name)
    await ready_domain(api, foreign)
    status, acct = await api.post("/v1/reseller/accounts", {
        "email": f"foreign-{secrets.token_hex(3)}@customers.example",
        "company_name": "Foreign Ltd", "domain_limit": 2, "email_user_limit": 2})
    assert status == 201, acct
    stranger = api.with_token(acct["token"])
    other_dom = make_domain()
    await ready_domain(stranger, other_dom)
    m = await ready_mailbox(api, name, "smtp")
    mid = f"<{secrets.token_hex(12)}@{name}>"
    pool = await asyncpg.create_pool(sandbox.info["postgres_dsn"], min_size=1, max_size=2)
    try:
        rec = reputation.record_submitted
        # Refused: unknown login, a From domain of another tenant, a domain that is not
        # hosted, a malformed Message-ID.
        assert not await rec(pool, f"nobody@{name}", m["email"], mid)
        assert not await rec(pool, m["email"], f"ceo@{other_dom}", mid)
        assert not await rec(pool, m["email"], "ceo@not-hosted.example", mid)
        assert not await rec(pool, m["email"], m["email"], "no brackets@x")
        # Recorded (the master-user login form stands for the address), once.
        assert await rec(pool, m["email"].upper() + "*mailforge", m["email"], mid,
                         ["RCPT@outside.example"])
        assert not await rec(pool, m["email"], m["email"], mid)
        async with pool.acquire() as conn:
            assert await rec(conn, m["email"], f"sales@{foreign}",
                             f"<{secrets.token_hex(12)}@{foreign}>")
    finally:
        await pool.close()
    addr = m["email"]
    await asyncio.to_thread(_port25, sandbox, "", addr, _dsn(
        addr, "rcpt@outside.example", _original(addr, "rcpt@outside.example", mid)))
    rep = await _poll(lambda: _bounced(api, dom["id"], 1))
    assert rep["bounces"] == 1, rep


# ------------------------------------------------------------------ scanner isolation


async def test_a_mailbox_with_a_bad_name_does_not_stop_the_scanner(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    """A mailbox named ``bad\\n`` (possible before names were validated strictly)
    cannot log in over IMAP; the scanner skips it and goes on with the others."""
    dom = await ready_domain(api, unique_domain)
    good, bad = await asyncio.gather(ready_mailbox(api, unique_domain, "good"),
                                     ready_mailbox(api, unique_domain, "bad"))
    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    # Migration 0006's CHECK constraint refuses such a name now; a row stored before it
    # (NOT VALID: old rows are not re-checked) is what the scanner may still meet. The
    # constraint is lifted for the one UPDATE and put back as the migration has it.
    constraint = await conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conname = 'mailboxes_address_canonical'")
    try:
        # Only the stored address changes (no generation bump: nothing is reconciled).
        async with conn.transaction():
            if constraint is not None:
                await conn.execute("ALTER TABLE mailboxes DROP CONSTRAINT "
                                   "mailboxes_address_canonical")
            await conn.execute("UPDATE mailboxes SET address = $2 WHERE id = $1",
                               bad["id"], f"bad\n@{unique_domain}")
            if constraint is not None:
                await conn.execute("ALTER TABLE mailboxes ADD CONSTRAINT "
                                   f"mailboxes_address_canonical {constraint}")
        await conn.execute(
            "INSERT INTO mail_scan_state (mailbox_id, last_uid, watch_until) "
            "VALUES ($1, 0, now() + interval '10 minutes') ON CONFLICT (mailbox_id) DO "
            "UPDATE SET watch_until = EXCLUDED.watch_until", bad["id"])
        real = await _send(api, good["id"], "rcpt@outside.example", "scanned")
        await asyncio.to_thread(_port25, sandbox, "", good["email"], _dsn(
            good["email"], "rcpt@outside.example",
            _original(good["email"], "rcpt@outside.example", real)))
        rep = await _poll(lambda: _bounced(api, dom["id"], 1))
        assert rep["bounces"] == 1
        log = Path(sandbox.log_dir / "daemon.log")

        def skipped() -> bool:
            return any(bad["id"] in line and "scan of a mailbox failed" in line
                       for line in log.read_text(errors="replace").splitlines())

        assert await wait_for(skipped, timeout=10)
    finally:
        await conn.execute("UPDATE mailboxes SET address = $2 WHERE id = $1",
                           bad["id"], bad["email"])
        await conn.close()


# ------------------------------------------------------------------ webhooks


def _loopback_names() -> list[str]:
    """Names this machine's hosts file maps to a loopback address (besides localhost),
    so a name resolving to 127.0.0.1 needs no DNS traffic."""
    out = []
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        words = line.split("#")[0].split()
        if len(words) >= 2 and words[0].startswith("127."):
            out += [w for w in words[1:] if re.fullmatch(r"[a-z][a-z0-9-]*(\.[a-z0-9-]+)*",
                                                        w) and "localhost" not in w]
    return out


@pytest_asyncio.fixture(loop_scope="session")
async def receiver() -> AsyncIterator[tuple[int, list[bytes]]]:
    seen: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port, seen
    await runner.cleanup()


async def test_webhook_urls_to_internal_addresses_are_refused(
        sandbox: Any, api: Any, receiver: tuple[int, list[bytes]]) -> None:
    port, seen = receiver
    pdns = sandbox.info["pdns_api"]["url"].rstrip("/")
    pg = sandbox.info["ports"]["postgres"]
    status, before = await api.get("/v1/webhooks")
    assert status == 200
    urls = [f"{pdns}/api/v1/servers", f"http://127.0.0.1:{pg}/", f"http://127.0.0.1:{port}/",
            "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
            f"http://[::1]:{port}/", "http://10.0.0.1/", "http://192.168.1.1/",
            "http://172.16.0.1/", "http://100.64.0.1/", "http://0.0.0.0/", "http://[::]/",
            "http://[fd00::1]/", "http://[fe80::1]/", "http://224.0.0.1/",
            f"http://[::ffff:127.0.0.1]:{port}/", "http://[::ffff:a9fe:a9fe]/",
            "http://[2002:7f00:1::]/", "http://[64:ff9b::a9fe:a9fe]/",
            f"http://localhost:{port}/", f"http://LocalHost.:{port}/",
            "http://metadata.localhost/", "http://0x7f000001/", "http://2130706433/",
            "http://017700000001/", "http://127.1/",
            f"http://user:pass@example.com:{port}/", "http://example.com@127.0.0.1/",
            "http://example.com:0/", "http://example.com:65536/", "gopher://127.0.0.1/",
            "file:///etc/passwd", "http://exa mple.com/", "http://example.com/\r\nX: y"]
    for url in urls:
        status, body = await api.post("/v1/webhooks", {"url": url})
        assert status == 400, (url, status, body)
        assert body["error"]["details"] and all(d.startswith("url: ")
                                                for d in body["error"]["details"]), body
    status, after = await api.get("/v1/webhooks")
    assert after == before  # nothing was created
    assert seen == []


async def test_a_name_resolving_to_loopback_is_blocked_at_delivery(
        api: Any, receiver: tuple[int, list[bytes]], unique_domain: str) -> None:
    names = _loopback_names()
    if not names:
        pytest.skip("no name in /etc/hosts maps to loopback (besides localhost)")
    port, seen = receiver
    status, wh = await api.post("/v1/webhooks", {"url": f"http://{names[0]}:{port}/hook",
                                                 "events": ["job.completed"]})
    assert status == 201, wh  # a public-looking name: checked when it is used
    try:
        await ready_domain(api, unique_domain)
        await ready_mailbox(api, unique_domain, "trigger")

        async def attempted() -> list[dict[str, Any]] | None:
            status, dl = await api.get(f"/v1/webhooks/{wh['id']}/deliveries")
            assert status == 200, dl
            done = [d for d in dl["deliveries"] if d["attempts"] >= 1 and d["last_error"]]
            return done or None

        deliveries = await _poll(attempted)
        for d in deliveries:
            assert d["last_error"] == BLOCKED_TEXT and d["last_status"] is None, d
            assert d["state"] != "delivered", d
        assert seen == []  # the receiver on 127.0.0.1 never saw a request

        # Another tenant sees neither the webhook nor its deliveries.
        status, acct = await api.post("/v1/reseller/accounts", {
            "email": f"other-{secrets.token_hex(3)}@customers.example",
            "company_name": "Other Ltd", "domain_limit": 1, "email_user_limit": 1})
        assert status == 201, acct
        other = api.with_token(acct["token"])
        assert (await other.get(f"/v1/webhooks/{wh['id']}/deliveries"))[0] == 404
        assert (await other.delete(f"/v1/webhooks/{wh['id']}"))[0] == 404
        status, theirs = await other.get("/v1/webhooks")
        assert status == 200 and theirs["webhooks"] == [], theirs
    finally:
        await api.delete(f"/v1/webhooks/{wh['id']}")
