"""Issue 4, shown against the real stack: bulk creation of 500 working mailboxes, whole
refusal of bad bulks, suspend/resume, delete with retention and restore, aliases,
catch-all, sender restrictions, and account limits under concurrency."""

from __future__ import annotations

import asyncio
import smtplib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import (
    imap_login_ok,
    imap_subjects,
    message,
    ready_domain,
    smtp_rcpt,
    smtp_send,
    tenant,
    wait_for,
    wait_job,
)

pytestmark = pytest.mark.stack


async def wait_rcpt_ok(info: dict[str, Any], addr: str) -> None:
    """Wait until Postfix accepts *addr*. A brand-new domain reaches Postfix's
    trivial-rewrite (which decides relay vs local) up to about a second after the maps
    are replaced: it re-opens changed tables only when it next accepts a client."""
    smtp = (info["smtp"]["host"], info["smtp"]["port"])
    await wait_for(lambda: smtp_rcpt(*smtp, "x@example.org", addr)[0] == 250, timeout=10)


def _login_and_subjects(info: dict[str, Any], user: str, pw: str) -> list[str]:
    return imap_subjects(info["imap"]["host"], info["imap"]["port"], user, pw)


async def test_bulk_500_users_log_in_and_receive(sandbox: Any, api: Any,
                                                 unique_domain: str) -> None:
    info = sandbox.info
    await ready_domain(api, unique_domain)
    users = [{"username": f"user{n:03d}", "name": f"User {n}"} for n in range(500)]
    status, body = await api.post("/v1/email-users/bulk",
                                  {"domain": unique_domain, "users": users},
                                  headers={"Idempotency-Key": f"bulk-{unique_domain}"})
    assert status == 202, body
    assert body["users_count"] == 500
    job = await wait_job(api, body["job_id"], timeout=30)
    assert job["status"] == "completed" and job["progress"] == 100, job
    assert job["failures"] == []
    created = {u["email"]: u["password"] for u in job["users"]}
    assert len(created) == 500 and all(len(p) >= 20 for p in created.values())

    # A retry with the same key does the work once and answers the same.
    status, again = await api.post("/v1/email-users/bulk",
                                   {"domain": unique_domain, "users": users},
                                   headers={"Idempotency-Key": f"bulk-{unique_domain}"})
    assert status == 202 and again["job_id"] == body["job_id"]

    # Every address accepts mail at RCPT; one message to all of them is delivered.
    addrs = sorted(created)
    await wait_rcpt_ok(info, addrs[0])
    with smtplib.SMTP(info["smtp"]["host"], info["smtp"]["port"], timeout=30) as s:
        s.ehlo("test.example")
        s.mail("sender@example.org")
        codes = [s.rcpt(a)[0] for a in addrs]
        assert codes == [250] * 500
        s.data(message("sender@example.org", "team", "hello all 500").as_bytes())

    def check(addr: str) -> bool:
        deadline = 30
        for _ in range(deadline * 10):
            if "hello all 500" in _login_and_subjects(info, addr, created[addr]):
                return True
            import time
            time.sleep(0.1)
        return False

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = await asyncio.gather(*(asyncio.wrap_future(pool.submit(check, a))
                                         for a in addrs))
    assert all(results)
    status, listing = await api.get("/v1/email-users", params={"domain": unique_domain,
                                                               "limit": 1})
    assert status == 200 and listing["total"] == 500


async def test_bad_bulks_are_refused_whole(api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    users = [{"username": f"u{n}"} for n in range(501)]
    status, body = await api.post("/v1/email-users/bulk",
                                  {"domain": unique_domain, "users": users})
    assert status == 400
    assert any(d.startswith("users: must be a list of 1 to 500") for d in
               body["error"]["details"]), body

    users = [{"username": f"u{n}"} for n in range(500)]
    users[7]["username"] = "bad name!"
    users[9]["username"] = "u3"  # a duplicate inside the request
    status, body = await api.post("/v1/email-users/bulk",
                                  {"domain": unique_domain, "users": users})
    assert status == 400
    details = body["error"]["details"]
    assert details[0].startswith("users[7].username: ")
    assert "users[9].username: u3 is also users[3]" in details
    status, listing = await api.get("/v1/email-users", params={"domain": unique_domain})
    assert status == 200 and listing["total"] == 0

    # A taken address is reported per item, and nothing is created.
    status, _one = await api.post("/v1/email-users", {"domain": unique_domain,
                                                     "username": "taken"})
    assert status == 202
    status, body = await api.post("/v1/email-users/bulk", {
        "domain": unique_domain, "users": [{"username": "fresh"}, {"username": "taken"}]})
    assert status == 409
    assert body["error"]["details"] == [f"users[1].username: taken@{unique_domain} "
                                        "is already taken"]
    status, listing = await api.get("/v1/email-users", params={"domain": unique_domain})
    assert listing["total"] == 1


def _smtp_auth_ok(info: dict[str, Any], user: str, pw: str) -> bool:
    with smtplib.SMTP(info["submission"]["host"], info["submission"]["port"],
                      timeout=10) as s:
        s.ehlo("client.example")
        try:
            s.login(user, pw)
            return True
        except smtplib.SMTPAuthenticationError:
            return False


async def test_suspend_resume_delete_restore(sandbox: Any, api: Any,
                                             unique_domain: str) -> None:
    info = sandbox.info
    imap = (info["imap"]["host"], info["imap"]["port"])
    smtp = (info["smtp"]["host"], info["smtp"]["port"])
    await ready_domain(api, unique_domain)
    status, user = await api.post("/v1/email-users", {"domain": unique_domain,
                                                      "username": "sam"})
    assert status == 202
    await wait_job(api, user["job_id"])
    addr, pw, uid = user["email"], user["password"], user["id"]
    await wait_rcpt_ok(info, addr)
    smtp_send(*smtp, "x@example.org", [addr], message("x@example.org", addr, "before"))
    await wait_for(lambda: "before" in imap_subjects(*imap, addr, pw))

    # Suspended: no IMAP login, no SMTP AUTH (so no sending), mail still received.
    status, body = await api.post(f"/v1/email-users/{uid}/suspend")
    assert status == 202, body
    await wait_job(api, body["job_id"])
    await wait_for(lambda: not imap_login_ok(*imap, addr, pw), timeout=5)
    assert not await asyncio.to_thread(_smtp_auth_ok, info, addr, pw)
    smtp_send(*smtp, "x@example.org", [addr], message("x@example.org", addr, "while"))
    status, got = await api.get(f"/v1/email-users/{uid}")
    assert got["status"] == "suspended"

    # Resumed: everything works again, and the mail sent meanwhile is there.
    status, body = await api.patch(f"/v1/email-users/{uid}", {"status": "active"})
    assert status == 200 and body["job_id"], body
    await wait_job(api, body["job_id"])
    await wait_for(lambda: _smtp_auth_ok(info, addr, pw), timeout=5)
    await wait_for(lambda: "while" in imap_subjects(*imap, addr, pw))

    # Password reset: a new generated password, shown once; the old one stops working.
    status, body = await api.patch(f"/v1/email-users/{uid}", {"reset_password": True,
                                                               "name": "Sam S"})
    assert status == 200 and body["name"] == "Sam S"
    new_pw = body["password"]
    await wait_job(api, body["job_id"])
    await wait_for(lambda: imap_login_ok(*imap, addr, new_pw), timeout=5)
    assert not await asyncio.to_thread(imap_login_ok, *imap, addr, pw)

    # Deleted: RCPT refused with 5xx, the mail kept in retention.
    status, body = await api.delete(f"/v1/email-users/{uid}")
    assert status == 202
    await wait_job(api, body["job_id"])
    code, _ = await asyncio.to_thread(smtp_rcpt, *smtp, "x@example.org", addr)
    assert 500 <= code < 600
    status, got = await api.get(f"/v1/email-users/{uid}")
    assert got["status"] == "deleted" and got["restorable_until"]
    status, listing = await api.get("/v1/email-users", params={"domain": unique_domain})
    assert listing["total"] == 0

    # Restored within retention: old mail is back.
    status, body = await api.post(f"/v1/email-users/{uid}/restore")
    assert status == 202, body
    await wait_job(api, body["job_id"])
    subjects = await asyncio.to_thread(imap_subjects, *imap, addr, new_pw)
    assert "before" in subjects and "while" in subjects
    code, _ = await asyncio.to_thread(smtp_rcpt, *smtp, "x@example.org", addr)
    assert code == 250


async def test_bulk_delete(api: Any, unique_domain: str) -> None:
    await ready_domain(api, unique_domain)
    status, body = await api.post("/v1/email-users/bulk", {
        "domain": unique_domain, "users": [{"username": f"d{n}"} for n in range(5)]})
    assert status == 202
    await wait_job(api, body["job_id"])
    ids = [u["id"] for u in body["users"]]
    status, err = await api.delete("/v1/email-users/bulk", json={"ids": [ids[0], "usr_nope"]})
    assert status == 404 and err["error"]["details"] == ["ids[1]: no such email user"]
    status, body = await api.delete("/v1/email-users/bulk", json={"ids": ids[:3]})
    assert status == 202
    job = await wait_job(api, body["job_id"])
    assert job["status"] == "completed"
    status, listing = await api.get("/v1/email-users", params={"domain": unique_domain,
                                                               "sort": "-email"})
    assert [u["username"] for u in listing["users"]] == ["d4", "d3"]


async def test_alias_catch_all_and_sender_restrictions(sandbox: Any, api: Any,
                                                       unique_domain: str) -> None:
    info = sandbox.info
    imap = (info["imap"]["host"], info["imap"]["port"])
    smtp = (info["smtp"]["host"], info["smtp"]["port"])
    await ready_domain(api, unique_domain)
    status, body = await api.post("/v1/email-users/bulk", {
        "domain": unique_domain, "users": [{"username": "ann"}, {"username": "ben"}]})
    job = await wait_job(api, body["job_id"])
    pw = {u["username"]: u["password"] for u in job["users"]}
    ann, ben = f"ann@{unique_domain}", f"ben@{unique_domain}"
    await wait_rcpt_ok(info, ann)

    status, alias = await api.post("/v1/aliases", {"domain": unique_domain,
                                                   "username": "team",
                                                   "targets": [ann, ben]})
    assert status == 202, alias
    await wait_job(api, alias["job_id"])
    status, catch = await api.post("/v1/aliases", {"domain": unique_domain,
                                                   "username": "*", "targets": [ben]})
    assert status == 202, catch
    await wait_job(api, catch["job_id"])
    status, _dup = await api.post("/v1/aliases", {"domain": unique_domain,
                                                 "username": "ann", "targets": [ben]})
    assert status == 409

    team = f"team@{unique_domain}"
    smtp_send(*smtp, "x@example.org", [team], message("x@example.org", team, "to team"))
    smtp_send(*smtp, "x@example.org", [f"nobody@{unique_domain}"],
              message("x@example.org", "nobody", "to nobody"))
    smtp_send(*smtp, "x@example.org", [ann], message("x@example.org", ann, "to ann"))
    await wait_for(lambda: {"to team", "to ann"} <= set(imap_subjects(*imap, ann, pw["ann"])))
    await wait_for(lambda: {"to team", "to nobody"}
                   <= set(imap_subjects(*imap, ben, pw["ben"])))
    # The real mailbox wins over the catch-all.
    assert "to ann" not in imap_subjects(*imap, ben, pw["ben"])
    assert "to nobody" not in imap_subjects(*imap, ann, pw["ann"])

    # Ann may send as herself and as the team alias, not as Ben.
    sub = (info["submission"]["host"], info["submission"]["port"])

    def send_as(sender: str) -> int:
        with smtplib.SMTP(*sub, timeout=10) as s:
            s.ehlo("client.example")
            s.login(ann, pw["ann"])
            try:
                s.sendmail(sender, ["out@example.net"],
                           message(sender, "out@example.net", "x").as_bytes())
                return 250
            except smtplib.SMTPRecipientsRefused as exc:
                return int(next(iter(exc.recipients.values()))[0])
            except smtplib.SMTPSenderRefused as exc:
                return int(exc.smtp_code)

    assert await asyncio.to_thread(send_as, ann) == 250
    assert await asyncio.to_thread(send_as, team) == 250
    code = await asyncio.to_thread(send_as, ben)
    assert 500 <= code < 600

    # Deleting the alias stops it.
    status, body = await api.delete(f"/v1/aliases/{alias['id']}")
    assert status == 202
    await wait_job(api, body["job_id"])
    assert await asyncio.to_thread(send_as, team) >= 500


async def test_account_limit_holds_under_concurrency(sandbox: Any, api: Any,
                                                     unique_domain: str) -> None:
    limited = await tenant(api, f"limited-{unique_domain}", domain_limit=5,
                           email_user_limit=10)
    await ready_domain(limited, unique_domain)
    results = await asyncio.gather(*(
        limited.post("/v1/email-users", {"domain": unique_domain, "username": f"p{n}"})
        for n in range(20)))
    codes = sorted(s for s, _ in results)
    assert codes.count(202) == 10 and codes.count(403) == 10, codes
    refused = next(b for s, b in results if s == 403)["error"]
    assert refused["code"] == "limit_exceeded"
    assert (refused["used"], refused["limit"], refused["requested"]) == (10, 10, 1)
    status, listing = await limited.get("/v1/email-users")
    assert listing["total"] == 10
    # A bulk that would exceed the limit is refused whole.
    status, body = await limited.post("/v1/email-users/bulk", {
        "domain": unique_domain, "users": [{"username": "extra"}]})
    assert status == 403 and body["error"]["requested"] == 1
