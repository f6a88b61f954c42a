"""Connected mailboxes (issue 12) on PostgreSQL alone: the store, the service rules and
the connection worker with an injected probe (the lead's end-to-end tests use the
real transport against the sandbox's TLS mail stack).

Hostile-tenant rules: another account's connected mailbox is a 404 everywhere; a
domain-restricted token sees only connected mailboxes at its domains; connecting an
address at a domain another account manages is allowed but never reaches that
domain's backend state; refused requests change nothing; secrets are sealed at rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
from cryptography.exceptions import InvalidTag

from mailforge.config import Config, ConnectedConfig
from mailforge.connected.credentials import Credentials
from mailforge.connected.network import Network
from mailforge.connected.settings import Remote, Secrets
from mailforge.connected.worker import ConnectionWorker, backoff
from mailforge.errors import Conflict, Forbidden, NotFound, ValidationFailed
from mailforge.models import Principal
from mailforge.schema.base import validate
from mailforge.schema.connected import ConnectionChanges, ConnectMailbox
from mailforge.secretbox import SecretBox
from mailforge.service import connected as svc
from mailforge.service import email_users as users_svc
from mailforge.service.context import ServiceContext
from mailforge.store import scope
from mailforge.store.store import Store
from mailforge.webhooks import new_webhook_id

from . import dbseed
from .fakes import FakeBackend
from .test_engine import make_engine

PASSWORD = "Sup3r-s3cret-app-pw"
TOKEN = "1//refresh-token-xyz"
CCFG = ConnectedConfig(retest_backoff_base=60.0, retest_backoff_max=240.0,
                       recheck_interval=86400.0, test_concurrency=8)


def _ctx(store: Store, allow: Sequence[str] = ()) -> ServiceContext:
    cfg = replace(Config(), outbound=replace(Config().outbound, allow_networks=tuple(allow)))
    return ServiceContext(cfg=cfg, store=store, box=SecretBox(b"k" * 32))


def _principal(acct: str) -> Principal:
    return Principal("tok_test", acct, frozenset({"read", "write"}))


def _item(email: str, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "email": email, "name": "Sam",
        "smtp": {"host": "smtp.example.com", "port": 465, "security": "tls",
                 "username": email, "password": PASSWORD},
        "imap": {"host": "imap.example.com", "port": 993, "security": "tls"}}
    body.update(kw)
    return body


def _model(ctx: ServiceContext, body: dict[str, Any]) -> ConnectMailbox:
    return validate(ConnectMailbox, body, ctx.cfg)


async def _account(store: Store, limit: int = 100000) -> str:
    async with store.tx() as conn:
        acct = await dbseed.account(conn)
        await conn.execute("UPDATE accounts SET email_user_limit = $2 WHERE id = $1",
                           acct, limit)
    return acct


async def _connect(ctx: ServiceContext, acct: str, *emails: str) -> tuple[str, list[str]]:
    ans = await svc.connect_bulk(ctx, _principal(acct), [_model(ctx, _item(e))
                                                         for e in emails])
    return ans.body["job"]["id"], [u["id"] for u in ans.body["email_users"]]


# ----------------------------------------------------------------------------- store


async def test_connect_records_sealed_credentials_and_a_job(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    job_id, (mid,) = await _connect(ctx, acct, "sam@gmail.example")
    conn = await db.connect()
    try:
        m = await dbseed.row(conn, "mailboxes", mid)
        assert (m["kind"], m["domain_id"], m["status"], m["password_hash"], m["quota_mb"]) \
            == ("connected", None, "connecting", "", 0)
        raw = await conn.fetchrow("SELECT * FROM mailbox_connections WHERE mailbox_id = $1",
                                  mid)
        # Sealed at rest: the plaintext is nowhere in the row, and opens only as its own.
        dump = repr(dict(raw)).encode() + b"".join(
            bytes(v) for v in dict(raw).values() if isinstance(v, bytes | memoryview))
        assert PASSWORD.encode() not in dump
        blob = bytes(raw["sealed_smtp_password"])
        assert ctx.box.open(blob, f"connected-smtp:{mid}").decode() == PASSWORD
        with pytest.raises(InvalidTag):
            ctx.box.open(blob, "connected-smtp:usr_other")
        assert raw["sealed_imap_password"] is None  # SMTP's reused
        items = await dbseed.job_items(conn, job_id)
        assert [(i["object_id"], i["target_generation"], i["state"]) for i in items] == \
            [(mid, 1, "pending")]
        usage = await conn.fetchval("SELECT used FROM mailbox_usage WHERE account_id = $1",
                                    acct)
        assert usage == 1  # counted by the limit like a created mailbox
    finally:
        await conn.close()
    view = await svc.get_connection(ctx, _principal(acct), mid)
    assert PASSWORD not in repr(view)
    assert view["imap_password"] == "smtp" and view["last_test"]["status"] == "pending"


async def test_another_accounts_connected_mailbox_is_404_everywhere(store: Store) -> None:
    ctx = _ctx(store)
    owner, other = await _account(store), await _account(store)
    _job, (mid,) = await _connect(ctx, owner, "sam@gmail.example")
    p = _principal(other)
    with pytest.raises(NotFound):
        await svc.get_connection(ctx, p, mid)
    with pytest.raises(NotFound):
        await svc.update_connection(ctx, p, mid, validate(
            ConnectionChanges, {"smtp": {"password": "x" * 12}}, ctx.cfg))
    with pytest.raises(NotFound):
        await users_svc.get(ctx, p, mid)
    with pytest.raises(NotFound):
        await users_svc.update(ctx, p, mid, users_svc.UserChanges(name="x"))
    with pytest.raises(NotFound):
        await users_svc.set_suspended(ctx, p, mid, True)
    with pytest.raises(NotFound):
        await users_svc.delete(ctx, p, mid)
    from datetime import date
    with pytest.raises(NotFound):  # the send/inbox routes find their mailbox here
        await store.senders.get(other, mid, None, date.today())
    assert (await store.senders.get(owner, mid, None, date.today())).kind == "connected"
    page = await users_svc.list_page(ctx, p, None, None, None, "created_at", 50, 0)
    assert page.rows == []


async def test_restricted_token_sees_only_connected_mailboxes_at_its_domains(
        store: Store) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    _job, (a, b) = await _connect(ctx, acct, "sam@a.example", "kim@b.example")
    p = _principal(acct)
    scope.set_domains(frozenset({"a.example"}))
    try:
        page = await users_svc.list_page(ctx, p, None, None, None, "created_at", 50, 0)
        assert [r["id"] for r in page.rows] == [a] and page.total == 1
        assert (await svc.get_connection(ctx, p, a))["id"] == a
        with pytest.raises(NotFound):
            await svc.get_connection(ctx, p, b)
        with pytest.raises(NotFound):
            await users_svc.get(ctx, p, b)
        with pytest.raises(NotFound):
            await users_svc.delete(ctx, p, b)
        # Connecting outside the restriction is refused (403), nothing written.
        with pytest.raises(Forbidden):
            await svc.connect(ctx, p, _model(ctx, _item("zed@c.example")))
        # The job of a connect at its domains is visible; one about b.example is not.
        job_a = (await svc.connect(ctx, p, _model(ctx, _item("lee@a.example")))).body["job"]
        assert (await store.jobs.get(acct, job_a["id"])).job.id == job_a["id"]
    finally:
        scope.set_domains(None)
    job_b, _ = await _connect(ctx, acct, "max@b.example")
    scope.set_domains(frozenset({"a.example"}))
    try:
        with pytest.raises(NotFound):
            await store.jobs.get(acct, job_b)
        listed = {j.id for j in (await store.jobs.list_page(acct, 50, 0, None)).jobs}
        assert job_a["id"] in listed and job_b not in listed
    finally:
        scope.set_domains(None)


async def test_address_of_another_accounts_domain_never_reaches_its_backend(
        store: Store, db: Any) -> None:
    ctx = _ctx(store)
    async with store.tx() as conn:
        owner = await dbseed.account(conn)
        did = await dbseed.domain(conn, owner, "owned.example")
        await dbseed.mailbox(conn, owner, did, "alice")
    tenant = await _account(store)
    # Allowed: it is only credentials to a remote server (here: pointing at a name).
    _job, (mid, _alice) = await _connect(ctx, tenant, "bob@owned.example",
                                         "alice@owned.example")
    backend = FakeBackend()
    engine = make_engine(store, db.dsn, backend)
    assert await engine.run_once() == 1
    served = backend.served["owned.example"].mailboxes
    assert set(served) == {"alice@owned.example"}  # the owner's own mailbox only
    for batch in backend.states:
        for st in batch:
            assert all(m.kind == "managed" and m.domain_id == did for m in st.mailboxes)
    # And the owner creating bob@ later is not blocked (nor told) by the connection.
    assert await store.mailboxes.taken_in_domains(owner, [did]) == {"alice@owned.example"}
    conn = await db.connect()
    try:
        taken = await conn.fetch("SELECT address FROM mailboxes WHERE domain_id = $1", did)
        assert {r["address"] for r in taken} == {"alice@owned.example"}
        # Policy-service and scanner questions never find a connected row.
        assert await store.senders.by_login("bob@owned.example", __import__(
            "datetime").date.today()) is None
        assert await store.inbound_scans.by_address(["bob@owned.example"]) == []
        watched = await conn.fetchval(
            "SELECT count(*) FROM mail_scan_state WHERE mailbox_id = $1", mid)
        await store.inbound_scans.watch("bob@owned.example", 60)
        assert await conn.fetchval(
            "SELECT count(*) FROM mail_scan_state WHERE mailbox_id = $1", mid) == watched
    finally:
        await conn.close()
    assert await store.reconcile.unconverged() == {"domains": 0, "mailboxes": 0, "aliases": 0}


async def test_ip_literal_and_localhost_refused_naming_the_field(store: Store) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    items = [_item(f"u{n}@x.example") for n in range(5)]
    items[3]["smtp"]["host"] = "127.0.0.1"
    items[1]["imap"]["host"] = "localhost"
    items[4]["smtp"]["host"] = "[::1]"
    with pytest.raises(ValidationFailed) as exc:
        await svc.connect_bulk(ctx, _principal(acct), [_model(ctx, i) for i in items])
    assert exc.value.details == [
        f"mailboxes[1].imap.host: {svc.BLOCKED}", f"mailboxes[3].smtp.host: {svc.BLOCKED}",
        f"mailboxes[4].smtp.host: {svc.BLOCKED}"]
    # Private and link-local addresses too; allowed when the operator allows the range.
    with pytest.raises(ValidationFailed) as exc:
        await svc.connect(ctx, _principal(acct), _model(ctx, _item(
            "a@x.example", smtp={**_item("a@x.example")["smtp"], "host": "169.254.169.254"})))
    assert exc.value.details == [f"smtp.host: {svc.BLOCKED}"]
    allowing = _ctx(store, allow=["127.0.0.0/8"])
    await svc.connect(allowing, _principal(acct), _model(allowing, _item(
        "b@x.example", smtp={**_item("b@x.example")["smtp"], "host": "127.0.0.1"})))
    # A bad port names the item and field.
    bad = _item("c@x.example")
    bad["imap"]["port"] = 70000
    with pytest.raises(ValidationFailed) as exc:
        validate(ConnectMailbox, bad, ctx.cfg, prefix="mailboxes[3].")
    assert exc.value.details == ["mailboxes[3].imap.port: must be 1-65535"]


async def test_bulk_with_one_bad_item_changes_nothing(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    items = [_item(f"u{n}@x.example") for n in range(4)]
    items[2]["smtp"].pop("password")
    with pytest.raises(ValidationFailed) as exc:
        await svc.connect_bulk(ctx, _principal(acct), [_model(ctx, i) for i in items])
    assert exc.value.details == ["mailboxes[2].smtp.password: is required (auth password)"]
    conn = await db.connect()
    try:
        assert await conn.fetchval("SELECT count(*) FROM mailboxes") == 0
        assert await conn.fetchval("SELECT count(*) FROM mailbox_connections") == 0
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
    finally:
        await conn.close()


async def test_duplicates_are_409_in_the_body_and_in_the_account(store: Store,
                                                                  db: Any) -> None:
    ctx = _ctx(store)
    acct, other = await _account(store), await _account(store)
    with pytest.raises(Conflict) as exc:
        await svc.connect_bulk(ctx, _principal(acct), [
            _model(ctx, _item("a@x.example")), _model(ctx, _item("b@x.example")),
            _model(ctx, _item("A@X.example"))])
    assert exc.value.details == ["mailboxes[2].email: a@x.example is also mailboxes[0]"]
    await _connect(ctx, acct, "a@x.example")
    with pytest.raises(Conflict) as exc:
        await _connect(ctx, acct, "c@x.example", "a@x.example")
    assert exc.value.details == [
        "mailboxes[1].email: a@x.example is already an email user of this account"]
    # Another account may connect the same address (and learns nothing).
    await _connect(ctx, other, "a@x.example")
    # A managed mailbox of the account at that address is a 409 too.
    async with store.tx() as conn:
        did = await dbseed.domain(conn, acct, "mine.example")
        await dbseed.mailbox(conn, acct, did, "m")
    with pytest.raises(Conflict):
        await _connect(ctx, acct, "m@mine.example")
    conn = await db.connect()
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM mailboxes WHERE account_id = $1", acct) == 2
    finally:
        await conn.close()


async def test_limit_counts_connected_mailboxes(store: Store) -> None:
    ctx = _ctx(store)
    acct = await _account(store, limit=3)
    await _connect(ctx, acct, "a@x.example", "b@x.example")
    with pytest.raises(Forbidden) as exc:
        await _connect(ctx, acct, "c@x.example", "d@x.example")
    assert (exc.value.extra["used"], exc.value.extra["limit"],
            exc.value.extra["requested"]) == (2, 3, 2)
    await _connect(ctx, acct, "c@x.example")


async def test_disconnect_deletes_row_and_credentials_at_once(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    _job, (mid, keep) = await _connect(ctx, acct, "a@x.example", "b@x.example")
    ans = await users_svc.delete(ctx, _principal(acct), mid)
    job = await store.jobs.get(acct, ans.body["job_id"])
    assert job.job.status == "completed"
    conn = await db.connect()
    try:
        assert await dbseed.row(conn, "mailboxes", mid) == {}
        assert await conn.fetchval(
            "SELECT count(*) FROM mailbox_connections WHERE mailbox_id = $1", mid) == 0
        assert await conn.fetchval("SELECT used FROM mailbox_usage WHERE account_id = $1",
                                   acct) == 1
    finally:
        await conn.close()
    p = _principal(acct)
    with pytest.raises(Conflict) as c:
        await users_svc.update(ctx, p, keep, users_svc.UserChanges(password="x" * 16))
    assert c.value.code == "email_user_connected"
    with pytest.raises(Conflict) as c:
        await users_svc.restore(ctx, p, keep)
    assert c.value.code == "email_user_connected"
    # Name, limit and pause work at once, with no job (the mail server never sees it).
    ans = await users_svc.set_suspended(ctx, p, keep, True)
    assert ans.status == 200 and ans.body["job_id"] is None
    assert ans.body["type"] == "connected" and ans.body["domain_id"] is None
    from datetime import date
    assert (await store.senders.get(acct, keep, None, date.today())).active is False


# ---------------------------------------------------------------------------- worker


@dataclass(frozen=True)
class Result:
    ok: bool
    reason: str | None = None
    detail: str = ""
    sent_folder: str | None = None
    seconds: float = 0.0


class FakeProbe:
    """Answers per address; records what it was asked (never the secrets' values)."""

    def __init__(self) -> None:
        self.bad: dict[str, str] = {}
        self.calls: list[str] = []
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, remote: Remote, secrets: Secrets) -> Result:
        self.calls.append(remote.address)
        assert secrets.smtp_password == PASSWORD or secrets.access_token
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        if remote.address in self.bad:
            return Result(False, self.bad[remote.address], "the server refused the login")
        return Result(True, sent_folder="Sent")


def _worker(store: Store, ctx: ServiceContext, probe: FakeProbe,
            dns: list[str] | None = None) -> ConnectionWorker:
    async def check(domain: str, _r: str | None, _s: str | None) -> dict[str, Any]:
        if dns is not None:
            dns.append(domain)
        return {"status": "ok", "mx": "ok"}

    return ConnectionWorker(store, CCFG, Credentials(store, ctx.box, net=None), probe=probe,
                            dns_check=check, lease_seconds=30)


async def _conn_row(db: Any, mid: str) -> dict[str, Any]:
    conn = await db.connect()
    try:
        r = await conn.fetchrow(
            "SELECT c.*, m.status, m.last_error, m.observed_generation, m.generation, "
            "extract(epoch FROM c.next_test_at - now()) AS next_in "
            "FROM mailbox_connections c JOIN mailboxes m ON m.id = c.mailbox_id "
            "WHERE c.mailbox_id = $1", mid)
        return dict(r)
    finally:
        await conn.close()


async def test_worker_settles_the_job_with_each_items_reason(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    job_id, mids = await _connect(ctx, acct, "a@x.example", "b@x.example", "c@y.example")
    probe = FakeProbe()
    probe.bad["b@x.example"] = "auth_failed"
    dns: list[str] = []
    w = _worker(store, ctx, probe, dns)
    assert await w.run_once() == 3
    assert sorted(dns) == ["x.example", "x.example", "y.example"]
    job = (await store.jobs.get(acct, job_id)).job
    assert (job.status, job.message) == ("completed", "completed with 1 of 3 failed")
    items = await svc.job_items(ctx, job)
    assert [(i["email"], i["status"], i["reason"]) for i in items] == [
        ("a@x.example", "connected", None), ("b@x.example", "failed", "auth_failed"),
        ("c@y.example", "connected", None)]
    ok = await _conn_row(db, mids[0])
    assert (ok["status"], ok["test_status"], ok["sent_folder"], ok["lease_owner"]) == \
        ("active", "ok", "Sent", None)
    assert ok["observed_generation"] == ok["generation"]
    assert 86300 < ok["next_in"] <= 86400
    bad = await _conn_row(db, mids[1])
    assert (bad["status"], bad["reason"], bad["last_error"], bad["failures"]) == \
        ("failed", "auth_failed", "auth_failed", 1)
    assert 55 < bad["next_in"] <= 60
    view = await svc.get_connection(ctx, _principal(acct), mids[1])
    assert view["last_test"]["reason"] == "auth_failed"
    assert view["dns"] == {"status": "ok", "mx": "ok"}
    # Nothing is due now: the next pass claims nothing.
    assert await w.run_once() == 0


async def test_failed_is_retested_with_doubling_backoff(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    _job, (mid,) = await _connect(ctx, acct, "a@x.example")
    probe = FakeProbe()
    probe.bad["a@x.example"] = "unreachable"
    w = _worker(store, ctx, probe)
    seen = []
    for _ in range(4):
        assert await w.run_once() == 1
        seen.append(round((await _conn_row(db, mid))["next_in"]))
        conn = await db.connect()
        await conn.execute("UPDATE mailbox_connections SET next_test_at = now()")
        await conn.close()
    assert seen == [60, 120, 240, 240]  # base doubling, capped at the max
    assert backoff(1, CCFG) == 60 and backoff(10, CCFG) == 240
    # It recovers: active, failures reset, the connected event (subscribed webhook).
    await _subscribe(db, acct)
    probe.bad.clear()
    assert await w.run_once() == 1
    r = await _conn_row(db, mid)
    assert (r["status"], r["failures"], r["reason"]) == ("active", 0, None)
    assert await _events(db) == ["email_user.connected"]


async def _subscribe(db: Any, acct: str) -> None:
    conn = await db.connect()
    try:
        await conn.execute(
            "INSERT INTO webhooks (id, account_id, url, events, sealed_secret) "
            "VALUES ($1, $2, 'https://hooks.example/x', $3, '\\x00')", new_webhook_id(),
            acct, ["email_user.connected", "email_user.connection_failed"])
    finally:
        await conn.close()


async def _events(db: Any) -> list[str]:
    conn = await db.connect()
    try:
        return [r["event"] for r in await conn.fetch(
            "SELECT event FROM webhook_deliveries ORDER BY id")]
    finally:
        await conn.close()


async def test_report_failure_of_an_active_mailbox(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    _job, (mid,) = await _connect(ctx, acct, "a@x.example")
    w = _worker(store, ctx, FakeProbe())
    await w.run_once()
    await _subscribe(db, acct)
    await w.report_failure(mid, "auth_failed", "the server refused the login")
    r = await _conn_row(db, mid)
    assert (r["status"], r["test_status"], r["reason"]) == ("failed", "failed", "auth_failed")
    assert 55 < r["next_in"] <= 60
    assert await _events(db) == ["email_user.connection_failed"]
    # A second report changes nothing (not active any more): one event.
    await w.report_failure(mid, "auth_failed", "again")
    assert await _events(db) == ["email_user.connection_failed"]
    conn = await db.connect()
    try:
        payload = await conn.fetchval("SELECT payload::text FROM webhook_deliveries")
    finally:
        await conn.close()
    assert PASSWORD not in payload and mid in payload


async def test_patch_during_a_test_wins(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    _job, (mid,) = await _connect(ctx, acct, "a@x.example")
    probe = FakeProbe()
    probe.bad["a@x.example"] = "auth_failed"  # the old password is wrong
    probe.hold = asyncio.Event()
    w = _worker(store, ctx, probe)
    running = asyncio.create_task(w.run_once())
    await asyncio.wait_for(probe.started.wait(), 5)
    # No transaction is held across the probe: the PATCH commits at once meanwhile.
    ans = await asyncio.wait_for(svc.update_connection(
        ctx, _principal(acct), mid,
        validate(ConnectionChanges, {"smtp": {"password": PASSWORD}}, ctx.cfg)), 5)
    patch_job = ans.body["job"]["id"]
    probe.bad.clear()  # the new settings are good
    probe.hold.set()
    await running
    r = await _conn_row(db, mid)
    # The stale failure was dropped; the new generation is due at once.
    assert r["test_status"] == "pending" and r["status"] == "connecting"
    assert r["tested_generation"] == 0 and r["test_generation"] == 2
    probe.hold = None
    assert await w.run_once() == 1
    r = await _conn_row(db, mid)
    assert (r["status"], r["tested_generation"]) == ("active", 2)
    assert (await store.jobs.get(acct, patch_job)).job.status == "completed"


async def test_lease_skip_locked_and_crash_mid_probe(store: Store, db: Any) -> None:
    ctx = _ctx(store)
    acct = await _account(store)
    await _connect(ctx, acct, *(f"u{n}@x.example" for n in range(6)))
    # Two workers claiming at once take disjoint sets.
    a = await store.connections.claim_due("w1", 3, 30, 86400)
    b = await store.connections.claim_due("w2", 10, 30, 86400)
    assert len(a) == 3 and len(b) == 3
    assert not {d.mailbox_id for d in a} & {d.mailbox_id for d in b}
    # w1 "crashes" mid-probe: nothing recorded; its lease holds others off until it ends.
    probe = FakeProbe()
    w = _worker(store, ctx, probe)
    assert await w.run_once() == 0
    conn = await db.connect()
    try:
        await conn.execute("UPDATE mailbox_connections SET lease_until = now() - "
                           "interval '1 second' WHERE lease_owner = 'w1'")
    finally:
        await conn.close()
    assert await w.run_once() == 3  # w1's three are tested again
    assert sorted(probe.calls) == sorted(d.address for d in a)


async def test_oauth_access_token_refreshed_and_sealed(store: Store, db: Any) -> None:
    from datetime import UTC, datetime, timedelta
    ctx = _ctx(store)
    acct = await _account(store)
    body = _item("o@x.example", auth="xoauth2",
                 oauth={"token_url": "https://login.example/token", "client_id": "cid",
                        "client_secret": "csecret", "refresh_token": TOKEN})
    body["smtp"].pop("password")
    mid = (await svc.connect(ctx, _principal(acct), _model(ctx, body))).body["email_user"]["id"]
    calls: list[Any] = []

    @dataclass(frozen=True, repr=False)
    class Tok:
        token: str
        expires_at: datetime
        refresh_token: str | None

    async def refresh(_net: Any, grant: Any) -> Tok:
        calls.append((grant.token_url, grant.client_id, grant.client_secret,
                      grant.refresh_token))
        return Tok(f"access-{len(calls)}", datetime.now(UTC) + timedelta(seconds=3600),
                   "rotated-refresh")

    creds = Credentials(store, ctx.box, cast(Network, None), refresh=refresh)
    remote, secrets = await creds.for_mailbox(mid)
    assert remote.auth == "xoauth2" and secrets.access_token == "access-1"
    assert calls == [("https://login.example/token", "cid", "csecret", TOKEN)]
    remote, secrets = await creds.for_mailbox(mid)  # fresh: no second refresh
    assert secrets.access_token == "access-1" and len(calls) == 1
    raw = await _conn_row(db, mid)
    flat = b"".join(bytes(v) for v in raw.values() if isinstance(v, bytes | memoryview))
    for plain in (TOKEN, "csecret", "access-1", "rotated-refresh"):
        assert plain.encode() not in flat and plain not in repr(raw)
    assert ctx.box.open(bytes(raw["sealed_refresh_token"]),
                        f"connected-refresh:{mid}") == b"rotated-refresh"
    view = await svc.get_connection(ctx, _principal(acct), mid)
    assert view["oauth"] == {"token_url": "https://login.example/token", "client_id": "cid"}
    assert TOKEN not in repr(view) and "csecret" not in repr(view)
