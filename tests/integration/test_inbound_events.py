"""Issue 11, inbound observation that follows the mail, on the real stack: with the
polling of watched mailboxes switched off (``mail.scan_interval`` an hour) and no
periodic sweep, a message delivered to a mailbox reaches its webhook, and a DSN about
a message mailforge sent reaches the domain's reputation, promptly, through Dovecot's
delivery event alone; mail delivered while the daemon is down is found by the sweep at
its start; nobody but Dovecot can post events (a stranger is refused, and even an
event with Dovecot's credential only causes a scan that finds nothing)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import smtplib
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from dnshelp import daemon_overlay
from support import message, ready_domain, ready_mailbox, smtp_send

pytestmark = pytest.mark.stack

OVERLAY = {"outbound": {"allow_networks": ["127.0.0.0/8"]},
           # Polling off, no periodic sweep: only delivery events (and the sweep at start).
           "mail": {"scan_interval": 3600.0, "full_scan_interval": 0, "sweep_rate": 500.0}}


@pytest.fixture(scope="module")
def events_only(sandbox: Any) -> Iterator[Any]:
    with daemon_overlay(sandbox, OVERLAY):
        yield sandbox


@pytest_asyncio.fixture(loop_scope="session")
async def api(events_only: Any) -> AsyncIterator[Any]:
    from conftest import ApiClient

    conn = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        yield ApiClient(s, events_only.info["api_url"], events_only.info["admin_token"])


class Receiver:
    """A webhook receiver on loopback recording (arrival time, event)."""

    def __init__(self) -> None:
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            self.got.append((time.monotonic(), json.loads(await request.read())))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def first(self, kind: str, subject: str) -> float | None:
        return next((t for t, ev in self.got if ev["type"] == kind
                     and ev["data"].get("subject") == subject), None)


@pytest_asyncio.fixture(loop_scope="session")
async def receiver(api: Any) -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    await r.start()
    status, wh = await api.post("/v1/webhooks", {
        "url": f"http://127.0.0.1:{r.port}/hook",
        "events": ["message.received", "message.bounced"]})
    assert status == 201, wh
    try:
        yield r, wh["id"]
    finally:
        await api.delete(f"/v1/webhooks/{wh['id']}")
        assert r.runner is not None
        await r.runner.cleanup()


async def _until(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {timeout}s")


def _port25(sandbox: Any, rcpt: str, raw: bytes) -> None:
    smtp = sandbox.info["smtp"]
    with smtplib.SMTP(smtp["host"], smtp["port"], timeout=10) as s:
        s.sendmail("", [rcpt], raw)


def _dsn(to: str, rcpt: str, msgid: str) -> bytes:
    b = "b" + secrets.token_hex(6)
    return (f"From: MAILER-DAEMON@mx.outside.example\r\nTo: {to}\r\n"
            f"Subject: Undelivered {b}\r\nMessage-ID: <{b}@mx.outside.example>\r\n"
            f'MIME-Version: 1.0\r\nContent-Type: multipart/report; '
            f'report-type=delivery-status; boundary="{b}"\r\n'
            f"\r\n--{b}\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n"
            f"\r\n--{b}\r\nContent-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; mx.outside.example\r\n\r\n"
            f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"\r\n--{b}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: {to}\r\nTo: {rcpt}\r\nSubject: hello\r\nMessage-ID: {msgid}\r\n"
            f"\r\n--{b}--\r\n").encode()


def _events_url(sandbox: Any) -> str:
    """The URL Dovecot posts to, with its credential, as mailforge wrote it for Dovecot."""
    conf = Path(sandbox.info["state_dir"]) / "dovecot" / "events.conf"
    for line in conf.read_text().splitlines():
        if line.strip().startswith("transport_args"):
            return line.split("=", 1)[1].strip()
    raise AssertionError("no exporter URL in " + str(conf))


async def test_delivery_reaches_webhook_and_reputation_through_the_event(
        events_only: Any, api: Any, receiver: tuple[Receiver, str],
        unique_domain: str) -> None:
    rec, _ = receiver
    dom = await ready_domain(api, unique_domain)
    user = await ready_mailbox(api, unique_domain, "evented")
    smtp = events_only.info["smtp"]
    lags = []
    for i in range(3):
        subject = f"by event {i}"
        await asyncio.to_thread(smtp_send, smtp["host"], smtp["port"], "x@outside.example",
                                [user["email"]], message("x@outside.example",
                                                         user["email"], subject))
        sent = time.monotonic()
        arrived = await _until(lambda s=subject: rec.first("message.received", s), 10)
        lags.append(arrived - sent)
    # Promptly: polling is off (an hour), so only the event can have caused the scan.
    assert sorted(lags)[1] < 2.0, lags
    # A DSN about a message mailforge sent counts as a bounce, through the event too.
    status, out = await api.post(f"/v1/email-users/{user['id']}/inbox/send", {
        "to": "rcpt@outside.example", "subject": "will bounce", "body": "hello"})
    assert status == 200, out
    await asyncio.to_thread(_port25, events_only, user["email"],
                            _dsn(user["email"], "rcpt@outside.example", out["message_id"]))

    async def bounced() -> bool:
        status, rep = await api.get(f"/v1/domains/{dom['id']}/reputation")
        return status == 200 and rep["bounces"] >= 1

    await _until(bounced, 10)
    await _until(lambda: any(ev["type"] == "message.bounced" for _, ev in rec.got), 10)


async def test_mail_delivered_while_the_daemon_is_down_is_found_at_its_start(
        events_only: Any, api: Any, receiver: tuple[Receiver, str],
        unique_domain: str) -> None:
    rec, _ = receiver
    await ready_domain(api, unique_domain)
    user = await ready_mailbox(api, unique_domain, "whiledown")
    smtp = events_only.info["smtp"]
    await asyncio.to_thread(smtp_send, smtp["host"], smtp["port"], "x@outside.example",
                            [user["email"]], message("x@outside.example", user["email"],
                                                     "before the stop"))
    await _until(lambda: rec.first("message.received", "before the stop"), 10)
    events_only.stop_service("daemon")
    try:
        # Dovecot's event goes nowhere (nothing listens): it is lost.
        await asyncio.to_thread(smtp_send, smtp["host"], smtp["port"], "x@outside.example",
                                [user["email"]], message("x@outside.example",
                                                         user["email"], "while down"))
        await asyncio.sleep(1.0)
    finally:
        events_only.start_service("daemon")
    await _until(lambda: rec.first("message.received", "while down"), 30)


async def test_only_dovecot_can_post_events_and_a_forged_one_is_harmless(
        events_only: Any, api: Any, receiver: tuple[Receiver, str],
        unique_domain: str) -> None:
    rec, _ = receiver
    await ready_domain(api, unique_domain)
    user = await ready_mailbox(api, unique_domain, "target")
    url = urllib.parse.urlsplit(_events_url(events_only))
    assert url.hostname == "127.0.0.1"
    plain = f"http://127.0.0.1:{url.port}{url.path}"
    body = json.dumps({"event": "mail_delivery_finished",
                       "fields": {"user": user["email"]}}).encode()
    good = "Basic " + base64.b64encode(f"{url.username}:{url.password}".encode()).decode()
    async with aiohttp.ClientSession() as s:
        # A stranger (or a tenant, who could only guess): refused.
        for headers in ({}, {"Authorization": "Basic " + base64.b64encode(
                b"mailforge:guess").decode()},
                {"Authorization": f"Bearer {events_only.info['admin_token']}"}):
            async with s.post(plain, data=body, headers=headers) as r:
                assert r.status == 401
        # Not on the API port, whatever the token.
        async with s.post(events_only.info["api_url"] + url.path, data=body,
                          headers={"Authorization":
                                   f"Bearer {events_only.info['admin_token']}"}) as r:
            assert r.status in (404, 405)
        # With Dovecot's credential: accepted, and the scan finds nothing new.
        before = len(rec.got)
        for _ in range(20):
            async with s.post(plain, data=body, headers={"Authorization": good}) as r:
                assert r.status == 204
        await asyncio.sleep(1.5)
        assert len(rec.got) == before
    # The credential is in Dovecot's config only: in no log (Dovecot's failed exports,
    # made while the daemon was down, name only the address).
    assert url.password
    for log in Path(events_only.log_dir).glob("*.log"):
        assert url.password not in log.read_text(errors="replace"), log.name
    # The listener is on loopback only: not on this host's other addresses.
    others = {ai[4][0] for ai in socket.getaddrinfo(socket.gethostname(), None,
                                                    socket.AF_INET)} - {"127.0.0.1"}
    for addr in others:
        if addr.startswith("127."):
            continue
        with socket.socket() as sock:
            sock.settimeout(1)
            assert sock.connect_ex((addr, url.port or 0)) != 0
