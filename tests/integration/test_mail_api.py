"""Issue 6, shown against the real stack: send and read mail through the API, daily
limits enforced at Postfix (policy service), reputation from DSNs and ARF reports."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import dkim
import pytest
from dnshelp import dkim_dnsfunc, resolver
from support import ready_domain, smtp_send, wait_job

pytestmark = pytest.mark.stack

PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\n" + bytes(range(256)) + b"\n%%EOF\n"


async def active_mailbox(api: Any, domain: str, username: str, name: str = "") -> dict[str, Any]:
    status, user = await api.post("/v1/email-users", {"domain": domain, "username": username,
                                                      "name": name or username.title()})
    assert status == 202, user
    job = await wait_job(api, user["job_id"])
    assert job["status"] == "completed", job
    return dict(user)


async def wait_sink(outbox: str, message_id: str, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    needle = message_id.encode()
    while time.monotonic() < deadline:
        for js in sorted(Path(outbox).glob("*.json"), reverse=True):
            raw = js.with_suffix(".eml").read_bytes()
            if needle in raw:
                return raw
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} not in the sink after {timeout}s")


async def wait_inbox(api: Any, user_id: str, pred: Any, timeout: float = 5.0,
                     folder: str = "INBOX") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, body = await api.get(f"/v1/email-users/{user_id}/inbox",
                                     params={"folder": folder})
        assert status == 200, body
        for m in body["messages"]:
            if pred(m):
                return dict(m)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no matching message in {folder} in {timeout}s: {body}")


async def test_send_to_outside_reaches_sink_with_threading_and_attachment_and_sent_copy(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    a = await active_mailbox(api, unique_domain, "sarah", "Sarah Chen")
    pdf_b64 = base64.b64encode(PDF).decode()
    status, sent = await api.post(f"/v1/email-users/{a['id']}/inbox/send", {
        "to": ["prospect@outside.example"], "subject": "Re: pricing",
        "body": "<p>Here is the <b>quote</b>.</p>", "html": True,
        "in_reply_to": "<orig-1@outside.example>",
        "references": ["<root-0@outside.example>", "<orig-1@outside.example>"],
        "attachments": [{"filename": "quote.pdf", "content_type": "application/pdf",
                         "content_base64": pdf_b64}]})
    assert status == 200, sent
    assert sent["status"] == "sent"
    assert sent["message_id"].endswith(f"@{unique_domain}>")

    raw = await wait_sink(sandbox.info["outbox_dir"], sent["message_id"])
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert msg["In-Reply-To"] == "<orig-1@outside.example>"
    assert msg["References"].split() == ["<root-0@outside.example>", "<orig-1@outside.example>"]
    assert msg["From"].addresses[0].display_name == "Sarah Chen"
    assert "quote" in msg.get_body(("plain",)).get_content()  # text derived from HTML
    (att,) = list(msg.iter_attachments())
    assert att.get_filename() == "quote.pdf" and att.get_content() == PDF

    copy = await wait_inbox(api, a["id"], lambda m: m["message_id"] == sent["message_id"],
                            folder="Sent")
    assert copy["has_attachments"] and copy["is_read"]
    assert copy["in_reply_to"] == "<orig-1@outside.example>"


async def test_api_send_is_dkim_signed_and_verifies_against_sandbox_dns(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    import yaml

    daemon_cfg = yaml.safe_load(Path(sandbox.info["config_path"]).read_text())
    if not daemon_cfg.get("dns", {}).get("powerdns", {}).get("api_key"):
        pytest.skip("the sandbox daemon has no PowerDNS provider configured (issue 3's "
                    "sandbox wiring is not on this branch), so no DKIM key is published")
    status, body = await api.post("/v1/domains/connect", {"domains": [unique_domain],
                                                          "dns_provider": "powerdns"})
    assert status == 201, body
    status, setup = await api.post("/v1/domains/setup", {"domain": unique_domain})
    assert status == 202, setup
    assert (await wait_job(api, setup["job_id"], timeout=30))["status"] == "completed"
    a = await active_mailbox(api, unique_domain, "signer")
    status, sent = await api.post(f"/v1/email-users/{a['id']}/inbox/send", {
        "to": "someone@outside.example", "subject": "signed", "body": "hello"})
    assert status == 200, sent
    raw = await wait_sink(sandbox.info["outbox_dir"], sent["message_id"])
    d = dkim.DKIM(raw)
    sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    assert sigs, "the message left unsigned"
    res = resolver(sandbox.info["dns"]["host"], sandbox.info["dns"]["port"])
    for i, sig in enumerate(sigs):
        assert f"d={unique_domain}".encode() in sig.replace(b" ", b"")
        assert dkim.DKIM(raw).verify(idx=i, dnsfunc=dkim_dnsfunc(res)), sig


async def test_same_server_delivery_and_threaded_reply(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    a = await active_mailbox(api, unique_domain, "anna")
    b = await active_mailbox(api, unique_domain, "ben")
    status, sent = await api.post(f"/v1/email-users/{a['id']}/inbox/send", {
        "to": b["email"], "subject": "lunch?", "body": "Are you free?"})
    assert status == 200, sent
    t0 = time.monotonic()
    got = await wait_inbox(api, b["id"], lambda m: m["message_id"] == sent["message_id"],
                           timeout=1.0)
    assert time.monotonic() - t0 <= 1.0
    assert got["subject"] == "lunch?" and not got["is_read"]
    assert got["from"].endswith(f"<{a['email']}>") or got["from"] == a["email"]

    status, reply = await api.post(f"/v1/email-users/{b['id']}/inbox/send", {
        "to": a["email"], "subject": "Re: lunch?", "body": "Yes!",
        "in_reply_to": got["message_id"], "references": got["references"]})
    assert status == 200, reply
    back = await wait_inbox(api, a["id"], lambda m: m["message_id"] == reply["message_id"])
    assert back["in_reply_to"] == sent["message_id"]
    assert sent["message_id"] in back["references"]

    # Mark read / unread through the opaque id; the id of another tenant's view is refused.
    status, _ = await api.post(f"/v1/inbox/{back['id']}/read")
    assert status == 200
    status, unread = await api.get(f"/v1/email-users/{a['id']}/inbox",
                                   params={"unread": "true"})
    assert status == 200 and all(m["id"] != back["id"] for m in unread["messages"])
    forged = back["id"][:-4] + ("AAAA" if not back["id"].endswith("AAAA") else "BBBB")
    status, err = await api.get(f"/v1/inbox/{forged}/body")
    assert status == 404, err


async def test_iso_8859_1_quoted_printable_html_and_base64_pdf_read_back(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    b = await active_mailbox(api, unique_domain, "claire")
    html = "<p>Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e \u2014 pas cher: 3\u00a0\u20ac</p>"
    html = html.replace("\u2014", "-").replace("\u20ac", "EUR")  # Latin-1 only
    msg = EmailMessage()
    msg["From"] = "sender@outside.example"
    msg["To"] = b["email"]
    msg["Subject"] = "=?iso-8859-1?q?R=E9sum=E9?="
    msg["Message-ID"] = "<latin1-test@outside.example>"
    msg.set_content(html, subtype="html", charset="iso-8859-1", cte="quoted-printable")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="facture.pdf")
    raw = msg.as_bytes()
    assert b"Caf=E9" in raw and b"base64" in raw  # really QP Latin-1 and base64
    smtp = sandbox.info["smtp"]
    await asyncio.to_thread(smtp_send, smtp["host"], smtp["port"], "sender@outside.example",
                            [b["email"]], msg)
    got = await wait_inbox(api, b["id"], lambda m: m["message_id"] == msg["Message-ID"])
    assert got["subject"] == "R\u00e9sum\u00e9" and got["has_attachments"]
    status, body = await api.get(f"/v1/inbox/{got['id']}/body")
    assert status == 200, body
    assert html in body["html"]
    status, atts = await api.get(f"/v1/inbox/{got['id']}/attachments")
    assert status == 200 and [a["filename"] for a in atts["attachments"]] == ["facture.pdf"]
    assert atts["attachments"][0]["content_type"] == "application/pdf"
    async with api.session.get(api.base_url + atts["attachments"][0]["url"],
                               headers={"Authorization": f"Bearer {api.token}"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/pdf")
        assert await resp.read() == PDF


async def test_daily_limit_enforced_for_api_and_for_direct_smtp_submission(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    status, user = await api.post("/v1/email-users", {
        "domain": unique_domain, "username": "capped", "password": "a-long-client-pass-1"})
    assert status == 202, user
    assert (await wait_job(api, user["job_id"]))["status"] == "completed"
    status, q = await api.put(f"/v1/email-users/{user['id']}/sending",
                              json={"daily_send_limit": 3})
    assert status == 200 and q["effective_limit"] == 3 and q["remaining"] == 3, q
    for i in range(3):
        status, sent = await api.post(f"/v1/email-users/{user['id']}/inbox/send", {
            "to": "out@outside.example", "subject": f"n{i}", "body": "x"})
        assert status == 200, sent
        assert sent["remaining"] == 2 - i
    status, err = await api.post(f"/v1/email-users/{user['id']}/inbox/send", {
        "to": "out@outside.example", "subject": "n3", "body": "x"})
    assert status == 429, err
    assert err["error"]["code"] == "send_limit_reached" and err["error"]["remaining"] == 0
    assert int(err["error"]["retry_after"]) > 0

    # A mail client with the mailbox's own password, straight to Postfix submission.
    sub = sandbox.info["submission"]

    def client_send() -> Any:
        m = EmailMessage()
        m["From"] = user["email"]
        m["To"] = "out@outside.example"
        m["Subject"] = "from a mail client"
        m.set_content("x")
        with smtplib.SMTP(sub["host"], sub["port"], timeout=10) as s:
            s.login(user["email"], "a-long-client-pass-1")
            try:
                s.send_message(m)
            except smtplib.SMTPRecipientsRefused as exc:
                return next(iter(exc.recipients.values()))
            except smtplib.SMTPDataError as exc:
                return exc.smtp_code, exc.smtp_error
        return None

    refused = await asyncio.to_thread(client_send)
    assert refused is not None, "Postfix accepted a 4th message past the limit"
    code, text = refused
    assert 400 <= code < 500 and b"limit" in text.lower(), refused
    status, q = await api.get(f"/v1/email-users/{user['id']}/sending")
    assert status == 200 and q["sent_today"] == 3 and q["remaining"] == 0


def _report(sender: str, to: str, subject: str, report_type: str, part_type: str,
            part: str, original: str) -> bytes:
    """A multipart/report (RFC 6522) with a human part, the machine part and the
    original headers, as a remote MTA (DSN, RFC 3464) or a feedback loop (ARF,
    RFC 5965) would send it."""
    b = f"b{time.monotonic_ns()}"
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{b}@report.example>\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: multipart/report; report-type={report_type}; boundary="{b}"\r\n'
            f"\r\n--{b}\r\nContent-Type: text/plain\r\n\r\n{subject}\r\n"
            f"\r\n--{b}\r\nContent-Type: {part_type}\r\n\r\n{part}\r\n"
            f"\r\n--{b}\r\nContent-Type: text/rfc822-headers\r\n\r\n{original}\r\n"
            f"\r\n--{b}--\r\n").encode()


def _send_raw(smtp: dict[str, Any], sender: str, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP(smtp["host"], smtp["port"], timeout=10) as s:
        s.sendmail(sender, [rcpt], raw)


async def _reputation(api: Any, domain_id: str) -> dict[str, Any]:
    status, d = await api.get(f"/v1/domains/{domain_id}")
    assert status == 200, d
    return dict(d["reputation"])


async def wait_rep(api: Any, domain_id: str, pred: Any, timeout: float = 10.0
                   ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rep: dict[str, Any] = {}
    while time.monotonic() < deadline:
        rep = await _reputation(api, domain_id)
        if pred(rep):
            return rep
        await asyncio.sleep(0.1)
    raise AssertionError(f"reputation did not change in {timeout}s: {rep}")


async def test_dsn_and_arf_move_reputation_until_the_domain_is_blocked(
        sandbox: Any, api: Any, unique_domain: str) -> None:
    dom = await ready_domain(api, unique_domain)
    a = await active_mailbox(api, unique_domain, "outreach")
    rep = await _reputation(api, dom["id"])
    assert rep["status"] == "healthy" and rep["bounces"] == rep["complaints"] == 0
    smtp = sandbox.info["smtp"]
    # Reports count only about messages the domain really sent: send three.
    sent = []
    for n in range(3):
        status, out = await api.post(f"/v1/email-users/{a['id']}/inbox/send", {
            "to": f"nobody{n}@outside.example", "subject": f"hello {n}", "body": "x"})
        assert status == 200, out
        sent.append((out["message_id"], f"nobody{n}@outside.example"))

    def original(n: int) -> str:
        return (f"From: {a['email']}\r\nTo: {sent[n][1]}\r\nSubject: hello {n}\r\n"
                f"Message-ID: {sent[n][0]}")

    dsn = _report("MAILER-DAEMON@mx.outside.example", a["email"],
                  "Undelivered Mail Returned to Sender", "delivery-status",
                  "message/delivery-status",
                  "Reporting-MTA: dns; mx.outside.example\r\n\r\n"
                  f"Final-Recipient: rfc822; {sent[0][1]}\r\n"
                  "Action: failed\r\nStatus: 5.1.1", original(0))
    await asyncio.to_thread(_send_raw, smtp, "", a["email"], dsn)
    rep = await wait_rep(api, dom["id"], lambda r: r["bounces"] == 1)
    assert rep["status"] == "watch", rep  # 1 / max(sent, 20) = 5 % >= 3 %
    for n in range(3):
        arf = _report("fbl@isp.example", a["email"], "Complaint about message",
                      "feedback-report", "message/feedback-report",
                      "Feedback-Type: abuse\r\nUser-Agent: isp-fbl/1.0\r\nVersion: 1",
                      original(n))
        await asyncio.to_thread(_send_raw, smtp, "fbl@isp.example", a["email"], arf)
        rep = await wait_rep(api, dom["id"], lambda r, n=n: r["complaints"] == n + 1)
        # Blocked only from the third complaint on (reputation.block_min_events).
        assert rep["status"] == ("blocked" if n == 2 else "watch"), rep

    status, err = await api.post("/v1/email-users", {"domain": unique_domain,
                                                     "username": "another"})
    assert status == 409 and err["error"]["code"] == "domain_reputation_blocked", err
    status, err = await api.post(f"/v1/email-users/{a['id']}/inbox/send", {
        "to": "out@outside.example", "subject": "x", "body": "x"})
    assert status == 409 and err["error"]["code"] == "domain_reputation_blocked", err
