"""Issue 12, shown against real servers: connected mailboxes send and read through the
same API as mailboxes mailforge created.

The "external provider" is the sandbox's own Postfix + Dovecot reached over TLS
(implicit TLS and STARTTLS listeners with a private test CA, sandbox.json ``external``):
a mailbox mailforge created there is connected back by its SMTP/IMAP credentials, so
every path that meets Gmail or Outlook in production (TLS verification, AUTH, XOAUTH2,
SPECIAL-USE, pooled connections) meets a real server here.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from email import policy
from email.parser import BytesParser
from typing import Any

import asyncpg
import pytest
from support import ready_domain, ready_mailbox, tenant, wait_job
from test_mail_api import wait_inbox, wait_sink

pytestmark = pytest.mark.stack


def ext(external: dict[str, Any], name: str) -> tuple[str, int]:
    e = external[name]
    return str(e["host"]), int(e["port"])


def settings(external: dict[str, Any], address: str, password: str,
             smtp: str = "smtp_tls", imap: str = "imap_starttls") -> dict[str, Any]:
    sh, sp = ext(external, smtp)
    ih, ip = ext(external, imap)
    sec = {"smtp_tls": "tls", "smtp_starttls": "starttls",
           "imap_tls": "tls", "imap_starttls": "starttls"}
    return {"email": address, "name": address.split("@")[0].title(),
            "smtp": {"host": sh, "port": sp, "security": sec[smtp], "username": address,
                     "password": password},
            "imap": {"host": ih, "port": ip, "security": sec[imap], "username": address,
                     "password": password}}


def free_port(host: str) -> int:
    """A port on *host* nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def connect(api: Any, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    status, out = await api.post("/v1/email-users/connect", body)
    assert status == 202, out
    job = await wait_job(api, out["job"]["id"], timeout=timeout)
    return {"user": out["email_user"], "job": job}


async def external_account(api: Any, domain: str, username: str) -> tuple[str, str]:
    """A mailbox on the sandbox's server, standing for an account at another provider
    (the operator's account hosts it; a customer account connects it)."""
    password = secrets.token_urlsafe(18)
    await ready_mailbox(api, domain, username, password)
    return f"{username}@{domain}", password


async def customer(api: Any, users: int = 20) -> Any:
    """A customer account of its own: it connects mailboxes the operator hosts (an
    address exists once per account, managed or connected)."""
    return await tenant(api, f"conn{secrets.token_hex(4)}", email_user_limit=users)


async def test_connect_one_send_read_and_reply_threads(
        sandbox: Any, api: Any, external: dict[str, Any], unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    address, password = await external_account(api, unique_domain, "remote")
    peer = await ready_mailbox(api, unique_domain, "peer")
    c = await customer(api)
    got = await connect(c, settings(external, address, password))
    assert got["job"]["status"] == "completed", got["job"]
    uid = got["user"]["id"]
    status, conn = await c.get(f"/v1/email-users/{uid}/connection")
    assert status == 200, conn
    assert conn["status"] == "active" and conn["last_test"]["status"] == "ok", conn
    assert conn["sent_folder"] == "Sent", conn  # found by SPECIAL-USE
    assert password not in str(conn)
    status, user = await c.get(f"/v1/email-users/{uid}")
    assert status == 200 and user["type"] == "connected", user

    # Out through the external server: it reaches the sink, a copy is in its Sent.
    status, sent = await c.post(f"/v1/email-users/{uid}/inbox/send", {
        "to": ["prospect@outside.example"], "subject": "hello from a connected box",
        "body": "first touch"})
    assert status == 200, sent
    raw = await wait_sink(sandbox.info["outbox_dir"], sent["message_id"])
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert msg["From"].addresses[0].addr_spec == address
    # It left through the provider's authenticated submission (ESMTPSA: TLS + AUTH)
    # and was DKIM-signed there.
    received = " ".join(str(r) for r in msg.get_all("Received", []))
    assert "ESMTPSA" in received, received
    assert msg["DKIM-Signature"] is not None
    await wait_inbox(c, uid, lambda m: m["message_id"] == sent["message_id"],
                     folder="Sent", timeout=10)

    # In: a message delivered to the external mailbox shows in mailforge's inbox API...
    status, inbound = await api.post(f"/v1/email-users/{peer['id']}/inbox/send", {
        "to": [address], "subject": "question", "body": "how much?"})
    assert status == 200, inbound
    m = await wait_inbox(c, uid, lambda m: m["message_id"] == inbound["message_id"],
                         timeout=15)
    assert m["subject"] == "question"
    status, body = await c.get(f"/v1/inbox/{m['id']}/body")
    assert status == 200 and "how much?" in str(body), body
    # ...and a reply through the connected mailbox threads at the other end.
    status, reply = await c.post(f"/v1/email-users/{uid}/inbox/send", {
        "to": [peer["email"]], "subject": "Re: question", "body": "42",
        "in_reply_to": inbound["message_id"]})
    assert status == 200, reply
    back = await wait_inbox(api, peer["id"],
                            lambda x: x["message_id"] == reply["message_id"], timeout=15)
    assert back["in_reply_to"] == inbound["message_id"], back
    # Another account does not see it at all.
    other = await customer(api)
    status, _ = await other.get(f"/v1/email-users/{uid}/inbox")
    assert status == 404


async def test_daily_limit_counts_connected_sends(
        api: Any, external: dict[str, Any], unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    address, password = await external_account(api, unique_domain, "limited")
    c = await customer(api)
    body = settings(external, address, password, smtp="smtp_starttls", imap="imap_tls")
    body["daily_limit"] = 3
    got = await connect(c, body)
    assert got["job"]["status"] == "completed", got["job"]
    uid = got["user"]["id"]
    for i in range(3):
        status, sent = await c.post(f"/v1/email-users/{uid}/inbox/send", {
            "to": ["x@outside.example"], "subject": f"n{i}", "body": "."})
        assert status == 200, sent
        assert sent["remaining"] == 2 - i
    status, refused = await c.post(f"/v1/email-users/{uid}/inbox/send", {
        "to": ["x@outside.example"], "subject": "n3", "body": "."})
    assert status == 429, refused
    assert "retry_after" in str(refused), refused


async def test_wrong_certificate_is_a_tls_error_never_accepted(
        api: Any, external: dict[str, Any], unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    address, password = await external_account(api, unique_domain, "tlsbad")
    c = await customer(api)
    body = settings(external, address, password)
    bad = external["bad_tls"]
    body["smtp"].update(host=bad["smtp"]["host"], port=bad["smtp"]["port"], security="tls")
    got = await connect(c, body)
    assert got["job"]["status"] == "failed", got["job"]
    uid = got["user"]["id"]
    status, conn = await c.get(f"/v1/email-users/{uid}/connection")
    assert status == 200
    assert conn["status"] == "failed" and conn["last_test"]["reason"] == "tls_error", conn
    assert password not in str(conn)
    status, refused = await c.post(f"/v1/email-users/{uid}/inbox/send", {
        "to": ["x@outside.example"], "subject": "no", "body": "."})
    assert status == 409, refused


async def test_bulk_200_reports_each_item(
        api: Any, external: dict[str, Any], make_domain: Any) -> None:
    """190 good and 10 bad in one call: every item ends connected or failed with its
    own reason, nothing is retried forever, and the good ones are all usable."""
    domain = make_domain()
    await ready_domain(api, domain)
    creds: list[tuple[str, str]] = []
    for chunk in range(4):
        users = [{"username": f"b{chunk}x{i}", "password": secrets.token_urlsafe(14)}
                 for i in range(48 if chunk < 3 else 46)]
        status, out = await api.post("/v1/email-users/bulk",
                                     {"domain": domain, "users": users})
        assert status == 202, out
        assert (await wait_job(api, out["job_id"], timeout=60))["status"] == "completed"
        creds += [(f"{u['username']}@{domain}", u["password"]) for u in users]
    assert len(creds) == 190
    c = await customer(api, users=250)
    items = [settings(external, a, p, smtp="smtp_tls", imap="imap_tls") for a, p in creds]
    bad_domain = make_domain()
    bads: list[tuple[dict[str, Any], str]] = []
    for i in range(3):
        b = settings(external, f"wrongpw{i}@{domain}", "not-the-password")
        bads.append((b, "auth_failed"))
    for i in range(2):
        b = settings(external, f"closed{i}@{bad_domain}", "x")
        b["smtp"]["port"] = free_port(b["smtp"]["host"])
        bads.append((b, "unreachable"))
    for i in range(2):
        b = settings(external, f"nohost{i}@{bad_domain}", "x")
        b["smtp"]["host"] = f"no-such-host-{secrets.token_hex(4)}.invalid"
        bads.append((b, "unreachable"))
    for i in range(3):
        b = settings(external, f"badtls{i}@{bad_domain}", "x")
        # The probe stops at the first failure (SMTP first): a certificate the test CA
        # did not sign, on both sides.
        for side in ("smtp", "imap"):
            b[side].update(host=external["bad_tls"][side]["host"],
                           port=external["bad_tls"][side]["port"], security="tls")
        bads.append((b, "tls_error"))
    body = {"mailboxes": items + [b for b, _ in bads]}
    status, out = await c.post("/v1/email-users/connect/bulk", body)
    assert status == 202, out
    job = await wait_job(c, out["job"]["id"], timeout=120)
    assert job["status"] == "completed", {k: job[k] for k in ("status", "message")}
    assert job["message"] == "completed with 10 of 200 failed", job["message"]
    by_email = {it["email"]: it for it in job["items"]}
    assert len(by_email) == 200
    assert sum(it["status"] == "connected" for it in by_email.values()) == 190
    for b, reason in bads:
        it = by_email[b["email"]]
        assert (it["status"], it["reason"]) == ("failed", reason), it
        assert it["detail"] and "not-the-password" not in it["detail"]
    # Nothing is retried forever: the failed mailbox's own re-test waits a backoff.
    one_bad = by_email[bads[0][0]["email"]]["email_user_id"]
    status, conn = await c.get(f"/v1/email-users/{one_bad}/connection")
    assert status == 200 and conn["next_test_at"], conn
    # The good ones are usable: read and send from a few.
    good = [by_email[a]["email_user_id"] for a, _ in creds[:5]]

    async def use(uid: str) -> int:
        status, _ = await c.get(f"/v1/email-users/{uid}/inbox")
        assert status == 200
        status, _sent = await c.post(f"/v1/email-users/{uid}/inbox/send", {
            "to": ["bulk@outside.example"], "subject": "bulk ok", "body": "."})
        return int(status)

    assert await asyncio.gather(*(use(u) for u in good)) == [200] * 5
    status, page = await c.get("/v1/email-users", params={"type": "connected",
                                                          "limit": 500})
    assert status == 200 and page["total"] == 200, page.get("total")


async def test_xoauth2_connect_refresh_send_and_read(
        sandbox: Any, api: Any, external: dict[str, Any], oauth_mint: Any,
        unique_domain: str) -> None:
    from mailforge.sandbox import oauth as token_server

    await ready_domain(api, unique_domain)
    address, password = await external_account(api, unique_domain, "oauth")
    # Access tokens that live 62 s: fresh for about 2 s past the 60 s margin, so a use
    # a few seconds later must refresh first.
    refresh_token = oauth_mint(address, expires_in=62)
    c = await customer(api)
    o = external["oauth"]
    body = settings(external, address, "unused")
    for side in ("smtp", "imap"):
        del body[side]["password"]
    body["auth"] = "xoauth2"
    body["oauth"] = {"token_url": o["token_url"], "client_id": o["client_id"],
                     "client_secret": o["client_secret"], "refresh_token": refresh_token}
    got = await connect(c, body)
    assert got["job"]["status"] == "completed", got["job"]
    uid = got["user"]["id"]
    grants = token_server.stats(sandbox.info, address)["refresh_grants"]
    assert grants >= 1
    for n in range(2):
        status, sent = await c.post(f"/v1/email-users/{uid}/inbox/send", {
            "to": ["oauth@outside.example"], "subject": f"via xoauth2 {n}", "body": "."})
        assert status == 200, sent
        await wait_sink(sandbox.info["outbox_dir"], sent["message_id"])
        status, page = await c.get(f"/v1/email-users/{uid}/inbox")
        assert status == 200, page
        if n == 0:
            await asyncio.sleep(4)
    assert token_server.stats(sandbox.info, address)["refresh_grants"] > grants
    status, conn = await c.get(f"/v1/email-users/{uid}/connection")
    assert status == 200 and conn["auth"] == "xoauth2", conn
    assert refresh_token not in str(conn) and password not in str(conn)


async def test_failing_later_marks_failed_and_no_password_leaks_anywhere(
        sandbox: Any, api: Any, external: dict[str, Any], unique_domain: str) -> None:
    """An active mailbox whose password stops working is marked failed in use, with
    the ``email_user.connection_failed`` event; then every password this test used is
    looked for in the daemon's and the servers' logs, the audit log and every table."""
    await ready_domain(api, unique_domain)
    address, password = await external_account(api, unique_domain, "rotated")
    wrong = "Wrong-" + secrets.token_urlsafe(12)
    c = await customer(api)
    status, wh = await c.post("/v1/webhooks", {
        "url": f"http://127.0.0.2:{free_port('127.0.0.2')}/hook",
        "events": ["email_user.connected", "email_user.connection_failed"]})
    assert status == 201, wh
    try:
        got = await connect(c, settings(external, address, password))
        assert got["job"]["status"] == "completed", got["job"]
        uid = got["user"]["id"]
        # A wrong password at connect time: failed, auth_failed, with a detail.
        bad = await connect(c, settings(external, f"x{address}", wrong))
        assert bad["job"]["items"][0]["reason"] == "auth_failed", bad["job"]
        # The provider's password changes (the user rotated the app password).
        new = "Rotated-" + secrets.token_urlsafe(12)
        status, out = await api.get("/v1/email-users", params={"search": address})
        remote_id = next(u["id"] for u in out["users"] if u["email"] == address)
        status, changed = await api.patch(f"/v1/email-users/{remote_id}", {"password": new})
        assert status in (200, 202), changed
        if changed.get("job_id"):
            await wait_job(api, changed["job_id"])
        status, refused = await c.post(f"/v1/email-users/{uid}/inbox/send", {
            "to": ["x@outside.example"], "subject": "after rotation", "body": "."})
        assert status in (502, 503), refused
        assert password not in str(refused) and new not in str(refused)
        status, conn = await c.get(f"/v1/email-users/{uid}/connection")
        assert conn["status"] == "failed" and conn["last_test"]["reason"] == "auth_failed"
        assert conn["next_test_at"], conn
        # New credentials: tested again, active again.
        status, patched = await c.patch(f"/v1/email-users/{uid}/connection",
                                         {"smtp": {"password": new},
                                          "imap": {"password": new}})
        assert status == 202, patched
        job = await wait_job(c, patched["job"]["id"])
        assert job["status"] == "completed", job
        pool = await asyncpg.connect(sandbox.info["postgres_dsn"])
        try:
            events = [r["event"] for r in await pool.fetch(
                "SELECT event FROM webhook_deliveries WHERE webhook_id = $1 "
                "AND payload->'data'->>'email_user_id' = $2 ORDER BY id", wh["id"], uid)]
            assert events[:3] == ["email_user.connected", "email_user.connection_failed",
                                  "email_user.connected"], events
            # No secret in any table (sealed blobs are bytes: their text form is hex).
            tables = [r["tablename"] for r in await pool.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            for t in tables:
                dump = await pool.fetchval(
                    f'SELECT coalesce(string_agg(x::text, chr(10)), \'\') FROM "{t}" x')
                for secret_ in (password, new, wrong):
                    assert secret_ not in dump, (t, "holds a password in clear")
        finally:
            await pool.close()
        status, audit = await c.get("/v1/audit", params={"limit": 200})
        assert status == 200
        for secret_ in (password, new, wrong):
            assert secret_ not in str(audit)
        for name, path in sandbox.log_paths().items():
            if path.exists():
                text = path.read_text(errors="replace")
                for secret_ in (password, new, wrong):
                    assert secret_ not in text, f"a password in {name}.log"
    finally:
        await c.delete(f"/v1/webhooks/{wh['id']}")
