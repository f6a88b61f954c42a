"""Helpers for real-stack tests: waiting on jobs, SMTP delivery, IMAP reading."""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import time
from email.message import EmailMessage
from typing import Any


async def wait_job(api: Any, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll a job until it is completed or failed; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, body = await api.get(f"/v1/jobs/{job_id}")
        assert status == 200, body
        if body["status"] in ("completed", "failed"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {body}")


async def ready_domain(api: Any, name: str) -> dict[str, Any]:
    """Connect a domain and request its setup; returns the connected domain."""
    status, body = await api.post("/v1/domains/connect", {"domains": [name]})
    assert status == 201, body
    status, setup = await api.post("/v1/domains/setup", {"domain": name})
    assert status == 202, setup
    return dict(body["domains"][0])


def message(sender: str, rcpt: str, subject: str, text: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rcpt
    msg["Subject"] = subject
    msg.set_content(text)
    return msg


def smtp_send(host: str, port: int, sender: str, rcpts: list[str], msg: EmailMessage) -> None:
    with smtplib.SMTP(host, port, timeout=10) as s:
        s.send_message(msg, from_addr=sender, to_addrs=rcpts)


def smtp_rcpt(host: str, port: int, sender: str, rcpt: str) -> tuple[int, bytes]:
    """Issue MAIL FROM and RCPT TO only; return the RCPT answer."""
    with smtplib.SMTP(host, port, timeout=10) as s:
        s.ehlo("test.example")
        s.mail(sender)
        return s.rcpt(rcpt)


def imap_subjects(host: str, port: int, user: str, password: str) -> list[str]:
    """Log in and return the Subject of every message in INBOX."""
    with imaplib.IMAP4(host, port, timeout=10) as im:
        im.login(user, password)
        im.select("INBOX", readonly=True)
        _typ, data = im.search(None, "ALL")
        out = []
        for num in data[0].split():
            _typ, parts = im.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            raw = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
            out.append(raw.decode(errors="replace").split(":", 1)[-1].strip())
        return out


def imap_login_ok(host: str, port: int, user: str, password: str) -> bool:
    try:
        with imaplib.IMAP4(host, port, timeout=10) as im:
            im.login(user, password)
            return True
    except imaplib.IMAP4.error:
        return False


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll a blocking predicate (run in a thread) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(predicate)
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


async def tenant(api: Any, label: str, domain_limit: int = 20,
                 email_user_limit: int = 20) -> Any:
    """A sibling customer account below the operator, and a client with its own token."""
    status, body = await api.post("/v1/reseller/accounts", {
        "email": f"{label}@customers.example", "company_name": f"{label} Ltd",
        "domain_limit": domain_limit, "email_user_limit": email_user_limit})
    assert status == 201, body
    return api.with_token(body["token"])


async def ready_mailbox(api: Any, domain: str, username: str,
                        password: str | None = None) -> dict[str, Any]:
    """Create a mailbox and wait until its job completed; the create answer."""
    body: dict[str, Any] = {"domain": domain, "username": username,
                            "name": username.title()}
    if password is not None:
        body["password"] = password
    status, user = await api.post("/v1/email-users", body)
    assert status == 202, user
    job = await wait_job(api, user["job_id"])
    assert job["status"] == "completed", job
    return dict(user)


def postfix_maps(state_dir: str) -> dict[str, list[str]]:
    """Postfix's four maps as ``key value`` lines, read (read-only) through the queries
    Postfix runs against the backend's database."""
    import contextlib
    import sqlite3
    from pathlib import Path

    from mailforge.backends.postfix_dovecot.layout import Layout
    from mailforge.backends.postfix_dovecot.tables import map_lines

    db_path = Layout(Path(state_dir)).postfix_db
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        return map_lines(db)
