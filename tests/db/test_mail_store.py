"""The mail slice's repositories on a per-test database (issue 10, item 3): a mailbox is
found only within its account and the caller's domain restriction, sending settings
change only there, the daily count is atomic at its limit, webhooks and their
deliveries are the account's own and page by keyset, and the scanner's bookkeeping
stays on its mail host."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import date

import pytest

from mailforge import webhooks as webhook_events
from mailforge.errors import NotFound
from mailforge.mail import limits
from mailforge.store.mail import SendingChange
from mailforge.store.store import Store

from . import dbseed

TODAY = limits.utc_today()


async def _two_tenants(store: Store) -> tuple[str, str, str, str, str, str]:
    """(account, its domain, its mailbox, a second domain of it, another account, its
    domain's name)."""
    async with store.tx() as conn:
        me, other = await dbseed.account(conn), await dbseed.account(conn)
        d1 = await dbseed.domain(conn, me)
        d2 = await dbseed.domain(conn, me)
        await dbseed.domain(conn, other)
        box = await dbseed.mailbox(conn, me, d1, "sam")
        name1 = (await dbseed.row(conn, "domains", d1))["name"]
        name2 = (await dbseed.row(conn, "domains", d2))["name"]
    return me, box, name1, name2, other, d1


async def test_a_sender_is_found_only_in_its_account_and_restriction(store: Store) -> None:
    me, box, mine, second, other, _d1 = await _two_tenants(store)
    s = await store.senders.get(me, box, None, TODAY)
    assert (s.domain, s.sent_today, s.warmup, s.active) == (mine, 0, None, False)
    assert (await store.senders.get(me, box, {mine, second}, TODAY)).id == box
    for account_id, domains in ((other, None), (me, {second}), (me, set())):
        with pytest.raises(NotFound):
            await store.senders.get(account_id, box, domains, TODAY)
        with pytest.raises(NotFound):
            await store.sending.change(account_id, box, domains,
                                       SendingChange(set_limit=True, daily_send_limit=1))
    assert (await store.senders.get(me, box, None, TODAY)).daily_send_limit is None
    # Tombstones are never found: a deleted mailbox, a mailbox of a deleted domain.
    async with store.tx() as conn:
        await conn.execute("UPDATE domains SET deleted = true WHERE name = $1", mine)
    with pytest.raises(NotFound):
        await store.senders.get(me, box, None, TODAY)
    assert await store.senders.by_login(s.address, TODAY) is not None  # the mail server's view


async def test_sending_settings_change_in_one_transaction(store: Store) -> None:
    me, box, mine, _second, _other, _d1 = await _two_tenants(store)
    warm = limits.Warmup(10, 30, date(2026, 1, 1))
    await store.sending.change(me, box, {mine}, SendingChange(True, 200, True, warm))
    s = await store.senders.get(me, box, None, TODAY)
    assert (s.daily_send_limit, s.warmup) == (200, warm)
    # Only what is set changes; a null warm-up removes it, a null limit is the default.
    await store.sending.change(me, box, None, SendingChange(set_warmup=True, warmup=None))
    s = await store.senders.get(me, box, None, TODAY)
    assert (s.daily_send_limit, s.warmup) == (200, None)
    await store.sending.change(me, box, None, SendingChange(set_limit=True,
                                                            daily_send_limit=None))
    assert (await store.senders.get(me, box, None, TODAY)).daily_send_limit is None


async def test_the_daily_count_stops_exactly_at_the_limit(store: Store) -> None:
    me, box, _mine, _second, other, _d1 = await _two_tenants(store)
    s = await store.senders.get(me, box, None, TODAY)
    got = await asyncio.gather(*(store.sending.count(s, TODAY, 5) for _ in range(20)))
    assert sorted(g for g in got if g is not None) == [1, 2, 3, 4, 5]
    assert got.count(None) == 15
    assert await store.sending.sent_on(s, TODAY) == 5
    login = await store.senders.by_login(s.address, TODAY)
    assert login is not None and login.sent_today == 5
    assert (await store.senders.get(me, box, None, TODAY)).sent_today == 5
    # The count is read within the sender's account only.
    assert await store.sending.sent_on(dataclasses.replace(s, account_id=other), TODAY) == 0
    assert await store.sending.count(s, TODAY, 0) is None  # a zero limit sends nothing


async def test_webhooks_are_the_accounts_own_and_page_by_keyset(store: Store) -> None:
    me, _box, _mine, _second, other, _d1 = await _two_tenants(store)
    made = []
    for n in range(5):
        made.append(await store.webhooks.create(
            webhook_events.new_webhook_id(), me, f"https://hooks.example/{n}",
            ["message.received"] if n % 2 else ["job.failed", "job.failed"], b"sealed"))
    assert made[0].events == ("job.failed",)
    seen, after = [], None
    while True:
        page, total, more = await store.webhooks.of_account(me, 2, 0, after)
        assert total == 5 and len(page) <= 2
        seen += [w.id for w in page]
        if not more:
            break
        after = (page[-1].created_at, page[-1].id)
    assert seen == [w.id for w in made]
    page, _total, more = await store.webhooks.of_account(me, 2, 4, None)
    assert [w.id for w in page] == [made[4].id] and not more
    assert (await store.webhooks.of_account(other, 50, 0, None))[:2] == ([], 0)
    for call in (store.webhooks.get(other, made[0].id),
                 store.webhooks.delete(other, made[0].id),
                 store.webhooks.deliveries(other, made[0].id, 10, 0, None)):
        with pytest.raises(NotFound):
            await call

    # An event reaches the subscribed webhooks of its account only, once per event id.
    async with store.tx() as conn:
        for _ in range(2):
            await webhook_events.enqueue(store.webhooks, conn, me, "message.received",
                                         {"n": 1}, event_id="evt_once")
        await webhook_events.enqueue(store.webhooks, conn, other, "message.received",
                                     {"n": 2}, event_id="evt_other")
    counts = [(await store.webhooks.deliveries(me, w.id, 10, 0, None))[1] for w in made]
    assert counts == [0, 1, 0, 1, 0]
    due = await store.webhooks.claim_due(10, 60)
    assert sorted(d.webhook_id for d in due) == sorted([made[1].id, made[3].id])
    assert all(d.account_id == me and d.attempts == 1 for d in due)
    assert await store.webhooks.claim_due(10, 60) == []  # leased
    await store.webhooks.delivered(due[0].id, 204)
    await store.webhooks.failed(due[1].id, 500, "HTTP 500", 0, max_attempts=1)
    states = {d.id: d.state for w in (made[1], made[3])
              for d in (await store.webhooks.deliveries(me, w.id, 10, 0, None))[0]}
    assert states == {due[0].id: "delivered", due[1].id: "failed"}
    await store.webhooks.delete(me, made[1].id)
    with pytest.raises(NotFound):
        await store.webhooks.get(me, made[1].id)


async def test_the_scanner_watches_mailboxes_of_its_own_host(store: Store) -> None:
    me, box, _mine, _second, _other, _d1 = await _two_tenants(store)
    async with store.tx() as conn:
        elsewhere = await dbseed.domain(conn, me, mail_host="other-host")
        far = await dbseed.mailbox(conn, me, elsewhere, "far")
        idle = await dbseed.mailbox(conn, me, _d1, "idle")
        await conn.execute("UPDATE mailboxes SET status = 'active' WHERE account_id = $1",
                           me)
        address = (await dbseed.row(conn, "mailboxes", box))["address"]
        far_address = (await dbseed.row(conn, "mailboxes", far))["address"]
        idle_address = (await dbseed.row(conn, "mailboxes", idle))["address"]
    await store.inbound_scans.watch(address, 60)
    await store.inbound_scans.watch(far_address, 60)
    await store.inbound_scans.watch("nobody@nowhere.test", 60)
    watched = await store.inbound_scans.watched(10, [])
    assert [w.mailbox_id for w in watched] == [box]
    assert (watched[0].last_uid, watched[0].uidvalidity) == (0, 0)
    assert await store.inbound_scans.watched(10, [box]) == []
    await store.inbound_scans.record(box, 7, 42)
    (w,) = await store.inbound_scans.watched(10, [])
    assert (w.uidvalidity, w.last_uid) == (7, 42)
    # The sweep walks the active mailboxes of this host in id order, a page at a time;
    # one never scanned takes a baseline first (-1).
    first = await store.inbound_scans.sweep_page("", 1)
    rest = await store.inbound_scans.sweep_page(first[0].mailbox_id, 10)
    swept = {x.mailbox_id: x.last_uid for x in first + rest}
    assert swept == {box: 42, idle: -1}
    assert await store.inbound_scans.sweep_page(max(swept), 10) == []
    # Delivery events name addresses: only this host's mailboxes are found; one never
    # scanned starts at 0 (all its mail is news); a first scan records its row.
    found = await store.inbound_scans.by_address(
        [address, far_address, "nobody@nowhere.test", idle_address])
    assert {x.mailbox_id: x.last_uid for x in found} == {box: 42, idle: 0}
    await store.inbound_scans.record(idle, 9, 3)
    (again,) = await store.inbound_scans.by_address([idle_address])
    assert (again.uidvalidity, again.last_uid) == (9, 3)
    await store.inbound_scans.expire_evidence()
