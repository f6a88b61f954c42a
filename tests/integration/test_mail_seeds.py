"""Issue 10, the mail slice against the real stack: the Winnr reply loop of the seed
(../shared/seeds/000_1fb94c4e6419245b.txt, "Python: AI agent reply loop") run as
written; recipients as RFC 5322 address lists, hostile forms refused with nothing sent;
the lists' paging (next_cursor); and the store's own scoping, called directly with
another account and a domain restriction (no path guard in front of it)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from support import ready_domain, tenant, wait_job

from mailforge.errors import NotFound
from mailforge.mail import limits
from mailforge.store.mail import SendingChange
from mailforge.store.store import Store, create_pool

pytestmark = pytest.mark.stack


async def _mailbox(api: Any, domain: str, username: str, name: str) -> dict[str, Any]:
    status, user = await api.post("/v1/email-users", {"domain": domain, "username": username,
                                                      "name": name})
    assert status == 202, user
    job = await wait_job(api, user["job_id"])
    assert job["status"] == "completed", job
    return dict(user)


async def _inbox(api: Any, user_id: str, pred: Any, timeout: float = 10.0,
                 folder: str = "INBOX") -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, body = await api.get(f"/v1/email-users/{user_id}/inbox",
                                     params={"folder": folder})
        assert status == 200, body
        found = [m for m in body["messages"] if pred(m)]
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no matching message in {folder} in {timeout}s: {body}")


async def test_the_winnr_reply_loop_as_written(api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    sdr = await _mailbox(api, unique_domain, "sarah", "Sarah Chen")
    jordan = await _mailbox(api, unique_domain, "jordan", "Jordan Lee")
    # Jordan answers the SDR's first message (a thread exists: references carry it).
    status, first = await api.post(f"/v1/email-users/{sdr['id']}/inbox/send", {
        "to": jordan["email"], "subject": "Quick question about your Q2 roadmap",
        "body": "<p>Hi Jordan,</p>", "html": True})
    assert status == 200, first
    (got,) = await _inbox(api, jordan["id"], lambda m: m["message_id"] == first["message_id"])
    status, reply = await api.post(f"/v1/email-users/{jordan['id']}/inbox/send", {
        "to": got["from"], "subject": f"Re: {got['subject']}", "body": "Sure, Tuesday?",
        "in_reply_to": got["message_id"], "references": got["references"]})
    assert status == 200, reply
    await _inbox(api, sdr["id"], lambda m: m["message_id"] == reply["message_id"])

    # check_and_reply(user_id), the seed's loop, with this client in place of requests.
    user_id = sdr["id"]
    status, resp = await api.get(f"/v1/email-users/{user_id}/inbox")
    assert status == 200, resp
    messages = resp.get("messages", [])
    answered = []
    for msg in messages:
        if msg.get("is_read"):
            continue
        status, body_resp = await api.get(f"/v1/inbox/{msg['uid']}/body")
        assert status == 200, body_resp
        body = body_resp.get("body", "")
        ai_response = f"<p>Thanks! You said: {body.strip()[:40]}</p>"
        status, sent = await api.post(f"/v1/email-users/{user_id}/inbox/send", {
            "to": msg["from"],
            "subject": f"Re: {msg['subject']}",
            "body": ai_response,
            "html": True,
            "in_reply_to": msg.get("message_id"),
            "references": msg.get("references", ""),
        })
        assert status == 200, (msg["from"], sent)
        answered.append((msg, sent))
    assert [m["message_id"] for m, _ in answered] == [reply["message_id"]]
    assert answered[0][0]["from"] == f"Jordan Lee <{jordan['email']}>"

    # The answer reached Jordan in the thread, addressed by name.
    _msg, sent = answered[0]
    (back,) = await _inbox(api, jordan["id"], lambda m: m["message_id"] == sent["message_id"])
    assert back["in_reply_to"] == reply["message_id"]
    assert back["references"] == [first["message_id"], reply["message_id"]]
    assert back["from"] == f"Sarah Chen <{sdr['email']}>"
    assert back["subject"] == "Re: Re: Quick question about your Q2 roadmap"
    status, text = await api.get(f"/v1/inbox/{back['uid']}/body")
    assert status == 200 and "You said: Sure, Tuesday?" in text["body"], text


async def test_address_lists_deliver_and_hostile_recipients_send_nothing(
        api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    me, b, c = await asyncio.gather(_mailbox(api, unique_domain, "me", "Me"),
                                    _mailbox(api, unique_domain, "bea", "Bea"),
                                    _mailbox(api, unique_domain, "cy", "Cy"))
    status, sent = await api.post(f"/v1/email-users/{me['id']}/inbox/send", {
        "to": f'"Lee, Bea" <{b["email"]}>, {c["email"]}', "subject": "to both",
        "body": "x"})
    assert status == 200, sent
    for who in (b, c):
        (got,) = await _inbox(api, who["id"], lambda m: m["message_id"] == sent["message_id"])
        assert sorted(got["to"]) == sorted([b["email"], c["email"]])
    status, before = await api.get(f"/v1/email-users/{me['id']}/sending")
    assert status == 200, before
    many = [f"u{i}@outside.example" for i in range(101)]
    hostile = [
        ("to", f"{b['email']}\r\nBcc: victim@outside.example"),
        ("to", f"=?utf-8?q?x=0D=0ABcc:_victim@outside.example?= <{b['email']}>"),
        ("cc", "team: victim@outside.example;"),
        ("bcc", [f"{b['email']}, victim@outside.example"]),
        ("to", many),
        ("to", f"{b['email']}; victim@outside.example"),
        ("to", '"victim@outside.example"@x.example'),
    ]
    for field, value in hostile:
        body: dict[str, Any] = {"to": b["email"], "subject": "hostile", "body": "x",
                                field: value}
        status, err = await api.post(f"/v1/email-users/{me['id']}/inbox/send", body)
        assert status == 400, (field, value, err)
        assert err["error"]["details"] and all(
            d.startswith((field + ":", field + "[", "to:")) for d in err["error"]["details"]), err
        assert "victim" not in str(err)  # the value is never echoed
    status, after = await api.get(f"/v1/email-users/{me['id']}/sending")
    assert after["sent_today"] == before["sent_today"]  # nothing left


async def test_a_send_retried_with_its_key_gets_the_first_answer_after_suspension(
        api: Any, unique_domain: str) -> None:
    """The Idempotency-Key is checked before the mailbox's state: a client retrying a
    send whose answer it lost gets that answer, not a 409 because the mailbox was
    suspended in between (and the message is not sent twice)."""
    await ready_domain(api, unique_domain)
    me, you = await asyncio.gather(_mailbox(api, unique_domain, "once", "Once"),
                                   _mailbox(api, unique_domain, "rcpt", "Rcpt"))
    body = {"to": f"Rcpt <{you['email']}>", "subject": "exactly once", "body": "x"}
    key = {"Idempotency-Key": f"send-{unique_domain}"}
    url = f"/v1/email-users/{me['id']}/inbox/send"
    status, first = await api.post(url, body, headers=key)
    assert status == 200, first
    status, out = await api.post(f"/v1/email-users/{me['id']}/suspend")
    assert status in (200, 202), out
    status, again = await api.post(url, body, headers=key)
    assert (status, again) == (200, first)
    status, err = await api.post(url, body, headers={"Idempotency-Key": "another"})
    assert status == 409 and err["error"]["code"] == "email_user_not_active", err
    status, err = await api.post(url, {**body, "subject": "changed"}, headers=key)
    assert status == 422 and err["error"]["code"] == "idempotency_key_reused", err
    got = await _inbox(api, you["id"], lambda m: m["subject"] == "exactly once")
    await asyncio.sleep(1.0)
    status, page = await api.get(f"/v1/email-users/{you['id']}/inbox")
    assert [m["message_id"] for m in page["messages"] if m["subject"] == "exactly once"] \
        == [got[0]["message_id"]] == [first["message_id"]]


async def test_lists_page_with_next_cursor(api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    me, you = await asyncio.gather(_mailbox(api, unique_domain, "pager", "Pager"),
                                   _mailbox(api, unique_domain, "paged", "Paged"))
    subjects = [f"page {n}" for n in range(3)]
    for s in subjects:
        status, out = await api.post(f"/v1/email-users/{me['id']}/inbox/send",
                                     {"to": you["email"], "subject": s, "body": "x"})
        assert status == 200, out
    url = f"/v1/email-users/{you['id']}/inbox"
    deadline = time.monotonic() + 15
    while (await api.get(url))[1]["total"] < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # each message arrives on its own
    status, p1 = await api.get(url, params={"limit": 2})
    assert status == 200, p1
    assert (p1["total"], p1["limit"], p1["offset"]) == (3, 2, 0) and p1["next_cursor"]
    status, p2 = await api.get(url, params={"limit": 2, "cursor": p1["next_cursor"]})
    assert status == 200, p2
    assert p2["next_cursor"] is None and p2["offset"] == 0
    both = p1["messages"] + p2["messages"]
    # Newest (highest UID) first, no repeat, nothing missed.
    assert sorted(m["subject"] for m in both) == subjects
    assert [m["imap_uid"] for m in both] == sorted((m["imap_uid"] for m in both),
                                                    reverse=True)
    status, p2b = await api.get(url, params={"limit": 2, "offset": 2})
    assert [m["id"] for m in p2b["messages"]] == [m["id"] for m in p2["messages"]]
    # A cursor of another folder or filter, or a made-up one, is a 400 on cursor.
    for params in ({"cursor": p1["next_cursor"], "folder": "Sent"},
                   {"cursor": p1["next_cursor"], "unread": "true"},
                   {"cursor": "bm90IGEgY3Vyc29y"}, {"cursor": "%%%"}):
        status, err = await api.get(url, params=params)
        assert status == 400 and err["error"]["details"][0].startswith("cursor:"), err

    hooks = []
    for n in range(3):
        status, wh = await api.post("/v1/webhooks", {"url": f"https://hooks.example/{n}",
                                                     "events": ["job.failed"]})
        assert status == 201, wh
        hooks.append(wh["id"])
    try:
        listed: list[str] = []
        cursor = None
        while True:
            query: dict[str, Any] = {"limit": 2} if cursor is None else \
                {"limit": 2, "cursor": cursor}
            status, page = await api.get("/v1/webhooks", params=query)
            assert status == 200, page
            assert page["total"] >= 3 and len(page["webhooks"]) <= 2
            listed += [w["id"] for w in page["webhooks"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(listed) == len(set(listed)) == page["total"]
        assert set(hooks) <= set(listed)
        status, err = await api.get("/v1/webhooks", params={"cursor": p1["next_cursor"]})
        assert status == 400 and err["error"]["details"][0].startswith("cursor:"), err
        status, dl = await api.get(f"/v1/webhooks/{hooks[0]}/deliveries")
        assert status == 200 and dl["total"] == 0 and dl["next_cursor"] is None, dl
    finally:
        for wid in hooks:
            assert (await api.delete(f"/v1/webhooks/{wid}"))[0] == 204


async def test_the_store_scopes_by_account_and_domain_restriction(
        sandbox: Any, api: Any, make_domain: Any) -> None:
    """The repositories themselves refuse another account's mailbox and a mailbox outside
    the restriction: no path guard runs when the service is called from the CLI or the
    MCP server."""
    mine, other = make_domain(), make_domain()
    await asyncio.gather(ready_domain(api, mine), ready_domain(api, other))
    a, b = await asyncio.gather(_mailbox(api, mine, "scoped", "Scoped"),
                                _mailbox(api, other, "outside", "Outside"))
    status, account = await api.get("/v1/account")
    assert status == 200, account
    me = account["id"]
    stranger_api = await tenant(api, f"stranger{mine[:8]}")
    status, stranger = await stranger_api.get("/v1/account")
    assert status == 200, stranger
    status, wh = await api.post("/v1/webhooks", {"url": "https://hooks.example/scoped"})
    assert status == 201, wh

    pool: asyncpg.Pool = await create_pool(sandbox.info["postgres_dsn"], 1, 2)
    try:
        store = Store(pool)
        today = limits.utc_today()
        found = await store.senders.get(me, a["id"], None, today)
        assert (found.address, found.domain) == (a["email"], mine)
        assert (await store.senders.get(me, a["id"], {mine}, today)).id == a["id"]
        for account_id, domains in ((stranger["id"], None), (me, {other}), (me, set())):
            with pytest.raises(NotFound):
                await store.senders.get(account_id, a["id"], domains, today)
            with pytest.raises(NotFound):
                await store.sending.change(account_id, a["id"], domains,
                                           SendingChange(set_limit=True, daily_send_limit=1))
        with pytest.raises(NotFound):
            await store.senders.get(me, b["id"], {mine}, today)
        assert (await store.senders.get(me, a["id"], None, today)).daily_send_limit is None
        await store.sending.change(me, a["id"], {mine},
                                   SendingChange(set_limit=True, daily_send_limit=7))
        assert (await store.senders.get(me, a["id"], None, today)).daily_send_limit == 7

        for call in (store.webhooks.get(stranger["id"], wh["id"]),
                     store.webhooks.deliveries(stranger["id"], wh["id"], 10, 0, None),
                     store.webhooks.delete(stranger["id"], wh["id"])):
            with pytest.raises(NotFound):
                await call
        hooks, _total, _more = await store.webhooks.of_account(stranger["id"], 50, 0, None)
        assert wh["id"] not in [h.id for h in hooks]
        assert (await store.webhooks.get(me, wh["id"])).url == "https://hooks.example/scoped"
    finally:
        await pool.close()
        await api.delete(f"/v1/webhooks/{wh['id']}")
