"""Issue 11, inbound observation that follows the mail: the delivery-event listener
(only Dovecot's credential is accepted, anything else is refused before its body is
read; bodies are bounded), events coalesced per mailbox with a bound on how many wait,
and the sweep (keyset pages at a bounded rate; a mailbox whose scan raises, or a page
that cannot be read, never stops it for the host). Fake store and IMAP server; the
real Dovecot path is in tests/integration/test_inbound_events.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from mailforge import secretbox
from mailforge.config import Config
from mailforge.mail import events
from mailforge.mail import service as service_mod
from mailforge.mail.service import MailService
from mailforge.store.queries import Q

BOX = secretbox.SecretBox(b"k" * 32)


def _event(user: str, **extra: Any) -> bytes:
    fields = {"user": user, "rcpt_to": user, "message_subject": "hi", **extra}
    return json.dumps({"event": "mail_delivery_finished", "fields": fields}).encode()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ------------------------------------------------------------------ the listener


@contextlib.asynccontextmanager
async def _listener() -> AsyncIterator[tuple[TestClient[Any, Any], list[str]]]:
    got: list[str] = []
    listener = events.EventListener(Config(), BOX, got.append)
    async with TestClient(TestServer(listener.app())) as client:
        yield client, got


async def test_only_dovecots_credential_is_accepted() -> None:
    secret = events.event_secret(BOX)
    async with _listener() as (client, got):
        body = _event("alice@example.com")
        for auth in (None, "", "Bearer " + secret, _basic("mailforge", "wrong"),
                     _basic("mailforge", secret + "x"), _basic("other", secret),
                     _basic("mailforge", events.event_secret(secretbox.SecretBox(b"j" * 32))),
                     "Basic !!!not-base64", "Basic " + base64.b64encode(secret.encode())
                     .decode()):
            headers = {} if auth is None else {"Authorization": auth}
            r = await client.post(events.EVENT_PATH, data=body, headers=headers)
            assert r.status == 401, auth
        assert got == []
        r = await client.post(events.EVENT_PATH, data=body,
                              headers={"Authorization": _basic("mailforge", secret)})
        assert r.status == 204
        assert got == ["alice@example.com"]
        # Only the one path, only POST.
        r = await client.get(events.EVENT_PATH)
        assert r.status == 405
        r = await client.post("/v1/health", data=body)
        assert r.status == 404


async def test_bodies_are_bounded_and_only_deliveries_count() -> None:
    auth = {"Authorization": _basic("mailforge", events.event_secret(BOX))}
    async with _listener() as (client, got):
        r = await client.post(events.EVENT_PATH, data=b"x" * (events.MAX_BODY + 1),
                              headers=auth)
        assert r.status == 413
        for body in (b"not json", b"[]", json.dumps({"event": "imap_command_finished",
                                                      "fields": {"user": "a@b.example"}}).encode(),
                     _event("a@b.example", error="quota exceeded"),  # not delivered
                     _event("no-at-sign"), _event("a b@c.example"), _event("a@b\n.example"),
                     _event("a@b.example*mailforge"), _event("x" * 400 + "@b.example"),
                     json.dumps({"event": "mail_delivery_finished",
                                 "fields": {"user": 7}}).encode()):
            r = await client.post(events.EVENT_PATH, data=body, headers=auth)
            assert r.status == 204, body
        assert got == []
        r = await client.post(events.EVENT_PATH, data=_event("Alice@Example.COM"),
                              headers=auth)
        assert r.status == 204 and got == ["alice@example.com"]


def test_dovecot_conf_carries_the_credential_and_is_private(tmp_path: Path) -> None:
    cfg = Config()
    cfg = dataclasses.replace(cfg, mail=dataclasses.replace(
        cfg.mail, events_conf_file=str(tmp_path / "events.conf"), events_port=10099))
    assert events.write_dovecot_conf(cfg, BOX) is True
    path = tmp_path / "events.conf"
    text = path.read_text()
    assert f"http://mailforge:{events.event_secret(BOX)}@127.0.0.1:10099/dovecot/events" \
        in text
    assert "filter = event=mail_delivery_finished" in text
    assert path.stat().st_mode & 0o777 == 0o640
    assert events.write_dovecot_conf(cfg, BOX) is False  # unchanged: no reload
    # The secret is stable for one master key and differs for another.
    assert events.event_secret(BOX) == events.event_secret(secretbox.SecretBox(b"k" * 32))
    assert events.event_secret(BOX) != events.event_secret(secretbox.SecretBox(b"j" * 32))
    off = dataclasses.replace(cfg, mail=dataclasses.replace(cfg.mail, events_port=0))
    assert events.write_dovecot_conf(off, BOX) is True
    assert "mailforge" not in path.read_text().split("\n", 1)[1]


# ------------------------------------------------------------------ fakes


class _Conn:
    def __init__(self, store: _Store) -> None:
        self.store = store

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        s = self.store
        if query == Q.mail_scan_by_address:
            if s.lookup_failures:
                s.lookup_failures -= 1
                raise asyncpg.PostgresConnectionError("connection reset")
            s.lookups.append(list(args[1]))
            return [r for r in s.rows if r["address"] in args[1]]
        if query == Q.mail_sweep_page:
            s.pages += 1
            if s.page_failures:
                s.page_failures -= 1
                raise asyncpg.PostgresConnectionError("connection reset")
            after, limit = args[1], args[2]
            return sorted((r for r in s.rows if r["mailbox_id"] > after),
                          key=lambda r: str(r["mailbox_id"]))[:limit]
        if query == Q.mail_watched:
            return []
        raise AssertionError(query)

    async def execute(self, query: str, *args: Any) -> str:
        if query == Q.mail_scan_record:
            self.store.recorded[args[0]] = args[2]
        elif query == Q.mail_sent_expire:
            self.store.expired += 1
        return "OK"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


class _Store:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.recorded: dict[str, int] = {}
        self.lookups: list[list[str]] = []
        self.pages = 0
        self.page_failures = 0
        self.lookup_failures = 0
        self.expired = 0

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        yield _Conn(self)


def _rows(*names: str) -> list[dict[str, Any]]:
    return [{"mailbox_id": f"usr_{n}", "address": f"{n}@d.example", "account_id": "acc_1",
             "domain_id": "dom_1", "last_uid": 0, "uidvalidity": 7} for n in names]


def _service(store: _Store, **mail: Any) -> tuple[MailService, list[str]]:
    cfg = Config()
    cfg = dataclasses.replace(cfg, mail=dataclasses.replace(
        cfg.mail, master_password="x", **mail))
    svc = MailService(store, cfg, BOX)  # type: ignore[arg-type]
    scanned: list[str] = []

    async def scan(r: Any, keep: bool = True, connected: bool = False) -> None:
        scanned.append(r.mailbox_id)
        if r.mailbox_id == "usr_bad":
            raise RuntimeError("IMAP said something no one expected")
        await asyncio.sleep(0)

    svc._scan_mailbox = scan  # type: ignore[method-assign]
    return svc, scanned


# ------------------------------------------------------------------ events -> scans


async def test_events_are_coalesced_per_mailbox_and_bounded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = _Store(_rows("a", "b"))
    svc, scanned = _service(store)
    stop = asyncio.Event()
    task = asyncio.create_task(svc._event_loop(stop))
    try:
        for _ in range(50):  # a burst of deliveries to one mailbox: one scan
            svc.notify_delivery("a@d.example")
        svc.notify_delivery("b@d.example")
        svc.notify_delivery("stranger@elsewhere.example")  # no mailbox of this host
        for _ in range(100):
            if len(scanned) >= 2 and not svc._due:
                break
            await asyncio.sleep(0.02)
        assert sorted(scanned) == ["usr_a", "usr_b"]
        # One query for the batch; the unknown address found nothing and scanned nothing.
        assert sorted(a for batch in store.lookups for a in batch) == ["a@d.example", "b@d.example",
                                                  "stranger@elsewhere.example"]
        # A later delivery is a new scan.
        svc.notify_delivery("a@d.example")
        for _ in range(100):
            if len(scanned) == 3:
                break
            await asyncio.sleep(0.02)
        assert scanned[-1] == "usr_a"
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)
    # A flood of distinct addresses is bounded: past MAX_PENDING they are dropped.
    monkeypatch.setattr(service_mod, "MAX_PENDING", 10)
    for i in range(1000):
        svc.notify_delivery(f"flood{i}@d.example")
    assert len(svc._due) == 10 and svc.events_dropped == 990
    svc.submitter.close()


async def test_an_event_for_a_mailbox_being_scanned_is_scanned_after() -> None:
    store = _Store(_rows("a"))
    svc, scanned = _service(store)
    svc._scanning.add("usr_a")  # the sweep is scanning it right now
    assert await svc.scan_addresses(["a@d.example"]) == 0
    assert scanned == [] and "a@d.example" in svc._due  # put back, not lost
    svc._scanning.clear()
    assert await svc.scan_addresses(["a@d.example"]) == 1
    svc.submitter.close()


# ------------------------------------------------------------------ the sweep


async def test_the_sweep_goes_on_past_a_failing_mailbox_and_a_failing_page(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_mod, "SWEEP_PAGE", 2)
    monkeypatch.setattr(service_mod, "SCAN_BACKOFF_BASE", 0.01)
    store = _Store(_rows("a", "bad", "c", "d", "e"))
    store.page_failures = 1  # PostgreSQL away once: the page is read again
    svc, scanned = _service(store, sweep_rate=1000.0)
    stop = asyncio.Event()
    assert await svc.sweep(stop) == 5
    assert scanned == ["usr_a", "usr_bad", "usr_c", "usr_d", "usr_e"]
    assert set(svc._scan_failures) == {"usr_bad"}  # backing off, the others went on
    assert store.pages == 5 and store.expired == 1  # 1 failed + 3 pages + the empty one
    # The next sweep leaves the mailbox in its backoff out.
    scanned.clear()
    assert await svc.sweep(stop) == 4
    assert "usr_bad" not in scanned
    svc.submitter.close()


async def test_the_sweep_keeps_its_rate() -> None:
    store = _Store(_rows(*(f"m{i:02d}" for i in range(12))))
    svc, _scanned = _service(store, sweep_rate=40.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await svc.sweep(asyncio.Event()) == 12
    # 12 mailboxes at 40 a second: the 12th starts no sooner than 11/40 s after the first.
    assert loop.time() - t0 >= 11 / 40 - 0.02
    svc.submitter.close()


async def test_the_sweep_stops_when_asked() -> None:
    store = _Store(_rows(*(f"m{i:02d}" for i in range(50))))
    svc, _scanned = _service(store, sweep_rate=10.0)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.sweep(stop))
    await asyncio.sleep(0.25)
    stop.set()
    assert await asyncio.wait_for(task, 2) < 10
    svc.submitter.close()


async def test_events_survive_a_database_outage() -> None:
    store = _Store(_rows("a"))
    store.lookup_failures = 1  # PostgreSQL away for the first lookup
    svc, scanned = _service(store)
    stop = asyncio.Event()
    task = asyncio.create_task(svc._event_loop(stop))
    try:
        svc.notify_delivery("a@d.example")
        for _ in range(200):
            if scanned:
                break
            await asyncio.sleep(0.02)
        assert scanned == ["usr_a"]  # retried, not left to the next sweep
    finally:
        stop.set()
        await asyncio.wait_for(task, 3)
    svc.submitter.close()
