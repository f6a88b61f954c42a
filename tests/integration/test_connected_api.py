"""Issue 12, connected mailboxes, the API as a hostile tenant meets it (the real daemon
of the sandbox; the lead's end-to-end tests drive the transport against the sandbox's
TLS mail stack).

- Another account's connected mailbox is a 404 on every route (get, connection, PATCH,
  DELETE, suspend, inbox, send), never a 403.
- A domain-restricted token sees only the connected mailboxes at its domains.
- A host that is an IP literal outside the allowed ranges (or localhost) is a 400
  naming the field; a bulk with one bad item changes nothing; 409 for an address
  twice in a body or already in the account; 403 with used/limit/requested.
- The list shows ``type`` and filters by it; the job lists every item.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from support import ready_domain

pytestmark = pytest.mark.stack

PASSWORD = "Conn-app-pw-" + secrets.token_hex(6)


def _item(email: str, host: str = "smtp.connected.invalid", **kw: Any) -> dict[str, Any]:
    return {"email": email, "name": "Ext",
            "smtp": {"host": host, "port": 465, "security": "tls", "username": email,
                     "password": PASSWORD},
            "imap": {"host": "imap.connected.invalid", "port": 993, "security": "tls"},
            **kw}


async def _tenant(api: Any, limit: int = 20) -> Any:
    status, acct = await api.post("/v1/reseller/accounts", {
        "email": f"conn-{secrets.token_hex(4)}@customers.example", "domain_limit": 3,
        "email_user_limit": limit})
    assert status == 201, acct
    return api.with_token(acct["token"])


async def _count(c: Any) -> int:
    status, page = await c.get("/v1/email-users", params={"type": "connected"})
    assert status == 200, page
    return int(page["total"])


async def test_connect_shapes_list_type_and_job_items(api: Any) -> None:
    c = await _tenant(api)
    email = f"sam{secrets.token_hex(3)}@gmail.example"
    status, body = await c.post("/v1/email-users/connect", _item(email, tags=["g"]))
    assert status == 202, body
    user, job = body["email_user"], body["job"]
    assert user["type"] == "connected" and user["status"] == "connecting"
    assert job["type"] == "connect_email_users" and job["total"] == 1
    status, got = await c.get(f"/v1/email-users/{user['id']}")
    assert status == 200 and got["type"] == "connected" and got["domain_id"] is None
    assert got["smtp"] == {"host": "smtp.connected.invalid", "port": 465}
    status, conn = await c.get(f"/v1/email-users/{user['id']}/connection")
    assert status == 200, conn
    assert conn["smtp"]["username"] == email and conn["imap_password"] == "smtp"
    assert conn["last_test"]["status"] in ("pending", "failed", "ok") and conn["tags"] == ["g"]
    assert PASSWORD not in str(conn) and PASSWORD not in str(body)
    status, page = await c.get("/v1/email-users", params={"type": "connected"})
    assert [u["id"] for u in page["users"]] == [user["id"]]
    assert page["users"][0]["type"] == "connected"
    status, page = await c.get("/v1/email-users", params={"type": "managed"})
    assert page["users"] == [] and page["total"] == 0
    status, j = await c.get(f"/v1/jobs/{job['id']}")
    assert status == 200, j
    assert [(i["email"], i["email_user_id"]) for i in j["items"]] == [(email, user["id"])]
    assert j["items"][0]["status"] in ("connecting", "connected", "failed")
    # A managed-only operation answers 409 email_user_connected.
    status, err = await c.patch(f"/v1/email-users/{user['id']}", {"password": "x" * 20})
    assert status == 409 and err["error"]["code"] == "email_user_connected", err
    # Pause sending: at once, no job.
    status, s = await c.post(f"/v1/email-users/{user['id']}/suspend")
    assert status == 200 and s["job_id"] is None and s["status"] in ("suspended",
                                                                     "connecting", "failed")
    # Disconnect: gone at once.
    status, d = await c.delete(f"/v1/email-users/{user['id']}")
    assert status == 202, d
    status, _ = await c.get(f"/v1/email-users/{user['id']}/connection")
    assert status == 404
    assert await _count(c) == 0


async def test_another_accounts_connected_mailbox_is_404_everywhere(api: Any) -> None:
    owner, intruder = await _tenant(api), await _tenant(api)
    status, body = await owner.post("/v1/email-users/connect",
                                    _item(f"x{secrets.token_hex(3)}@gmail.example"))
    assert status == 202, body
    uid = body["email_user"]["id"]
    probes = [
        ("get", f"/v1/email-users/{uid}", None),
        ("get", f"/v1/email-users/{uid}/connection", None),
        ("patch", f"/v1/email-users/{uid}/connection", {"smtp": {"password": "y" * 12}}),
        ("patch", f"/v1/email-users/{uid}", {"name": "mine now"}),
        ("post", f"/v1/email-users/{uid}/suspend", None),
        ("delete", f"/v1/email-users/{uid}", None),
        ("get", f"/v1/email-users/{uid}/inbox", None),
        ("post", f"/v1/email-users/{uid}/inbox/send",
         {"to": ["a@example.com"], "subject": "s", "text": "t"}),
        ("get", f"/v1/jobs/{body['job']['id']}", None),
    ]
    for method, path, payload in probes:
        kw = {} if payload is None else {"json": payload}
        status, err = await getattr(intruder, method)(path, **kw)
        assert status == 404, (method, path, status, err)
    # Untouched.
    status, conn = await owner.get(f"/v1/email-users/{uid}/connection")
    assert status == 200 and conn["smtp"]["host"] == "smtp.connected.invalid"


async def test_restricted_token_sees_only_its_domains(api: Any, unique_domain: str) -> None:
    c = await _tenant(api)
    await ready_domain(c, unique_domain)
    status, body = await c.post("/v1/email-users/connect/bulk", {"mailboxes": [
        _item(f"in@{unique_domain}"), _item("out@elsewhere.example")]})
    assert status == 202, body
    inside, outside = (u["id"] for u in body["email_users"])
    status, tok = await c.post("/v1/auth/tokens", {"name": "r", "permissions": ["read",
                                                                              "write"],
                                                   "domains": [unique_domain]})
    assert status == 201, tok
    r = c.with_token(tok["token"])
    status, page = await r.get("/v1/email-users", params={"type": "connected"})
    assert [u["id"] for u in page["users"]] == [inside], page
    assert (await r.get(f"/v1/email-users/{inside}/connection"))[0] == 200
    for path in (f"/v1/email-users/{outside}/connection", f"/v1/email-users/{outside}"):
        assert (await r.get(path))[0] == 404
    assert (await r.delete(f"/v1/email-users/{outside}"))[0] == 404
    status, err = await r.post("/v1/email-users/connect", _item("new@elsewhere.example"))
    assert status == 403, err


async def test_refusals_name_the_field_and_change_nothing(api: Any) -> None:
    c = await _tenant(api, limit=4)
    items = [_item(f"u{n}@bulk.example") for n in range(5)]
    items[3]["smtp"]["host"] = "169.254.169.254"
    items[1]["imap"]["port"] = 70000
    status, err = await c.post("/v1/email-users/connect/bulk", {"mailboxes": items})
    assert status == 400, err
    assert err["error"]["details"] == ["mailboxes[1].imap.port: must be 1-65535"], err
    items[1]["imap"]["port"] = 993
    status, err = await c.post("/v1/email-users/connect/bulk", {"mailboxes": items})
    assert status == 400, err
    assert err["error"]["details"] == [
        "mailboxes[3].smtp.host: the destination is not allowed (loopback, private, "
        "link-local or reserved address)"], err
    status, err = await c.post("/v1/email-users/connect", _item("l@x.example",
                                                                host="localhost"))
    assert status == 400 and err["error"]["details"][0].startswith("smtp.host: the "
                                                                   "destination"), err
    assert await _count(c) == 0
    # Twice in one body: 409, nothing written.
    status, err = await c.post("/v1/email-users/connect/bulk", {"mailboxes": [
        _item("a@dup.example"), _item("A@dup.example")]})
    assert status == 409, err
    assert err["error"]["details"] == ["mailboxes[1].email: a@dup.example is also "
                                       "mailboxes[0]"]
    assert await _count(c) == 0
    status, _ = await c.post("/v1/email-users/connect", _item("a@dup.example"))
    assert status == 202
    status, err = await c.post("/v1/email-users/connect", _item("a@dup.example"))
    assert status == 409 and err["error"]["code"] == "address_taken", err
    # The limit counts connected mailboxes: 1 used of 4, 4 more asked.
    status, err = await c.post("/v1/email-users/connect/bulk", {"mailboxes": [
        _item(f"m{n}@lim.example") for n in range(4)]})
    assert status == 403, err
    assert (err["error"]["used"], err["error"]["limit"], err["error"]["requested"]) == \
        (1, 4, 4), err
    assert await _count(c) == 1
    # xoauth2 without oauth, password with xoauth2: named.
    bad = _item("o@x.example", auth="xoauth2")
    status, err = await c.post("/v1/email-users/connect", bad)
    assert status == 400, err
    assert set(err["error"]["details"]) == {"oauth: is required (auth xoauth2)",
                                            "smtp.password: not with auth xoauth2"}


async def test_connecting_another_tenants_address_never_reaches_postfix_or_dovecot(
        api: Any, sandbox: Any, unique_domain: str) -> None:
    """Allowed (it is only credentials to a remote server), but the real Postfix maps and
    Dovecot's user database never hold it, also after passes over that domain."""
    import contextlib
    import sqlite3
    from pathlib import Path

    from support import imap_login_ok, postfix_maps, ready_mailbox

    owner, intruder = await _tenant(api), await _tenant(api)
    await ready_domain(owner, unique_domain)
    await ready_mailbox(owner, unique_domain, "alice")
    victim = f"victim@{unique_domain}"
    status, body = await intruder.post("/v1/email-users/connect", _item(victim))
    assert status == 202, body
    # A pass over the domain (a delta) and a complete one (a domain-wide change).
    await ready_mailbox(owner, unique_domain, "bob")
    info = sandbox.info
    lines = [line for v in postfix_maps(info["state_dir"]).values() for line in v]
    assert any(f"alice@{unique_domain}" in line for line in lines)
    assert not any(victim in line for line in lines)
    db_path = Path(info["state_dir"]) / "dovecot" / "auth.sqlite"
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        users = {r[0] for r in db.execute("SELECT local_part FROM users WHERE domain = ?",
                                          (unique_domain,))}
    assert users == {"alice", "bob"}
    imap = info["imap"]
    assert not await asyncio.to_thread(imap_login_ok, imap["host"], imap["port"], victim,
                                       PASSWORD)
    # The owner can still create that address: the connection neither blocks nor
    # reveals itself.
    status, made = await owner.post("/v1/email-users", {"domain": unique_domain,
                                                        "username": "victim"})
    assert status == 202, made
