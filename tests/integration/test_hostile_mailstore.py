"""Issue 9 (items 1, 2 and the sandbox part of 11) against the real stack, as a hostile
tenant would try it: old mail reaching the next owner of a domain name, another
tenant's DKIM keys signing forged From headers (submission and port 25), and a second
``sandbox up`` dropping every domain from the signer's tables."""

from __future__ import annotations

import asyncio
import imaplib
import secrets
import smtplib
import sqlite3
from email.message import Message
from pathlib import Path
from typing import Any

import dkim
import pytest
import pytest_asyncio
from dnshelp import dkim_dnsfunc, resolver
from support import (
    imap_subjects,
    message,
    ready_mailbox,
    smtp_send,
    tenant,
    wait_for,
    wait_job,
)

from mailforge.sandbox import Sandbox

pytestmark = pytest.mark.stack

PASSWORD = "Hostile-pass-" + secrets.token_hex(6)



async def _setup_domain(client: Any, name: str, timeout: float = 30.0) -> str:
    """Connect (retrying while the name is still held by a domain being deleted) and
    set up *name* with PowerDNS, so its DKIM keys are published; returns its id."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status, body = await client.post("/v1/domains/connect",
                                         {"domains": [name], "dns_provider": "powerdns"})
        if status == 201:
            break
        assert status in (400, 409), body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.2)
    status, setup = await client.post("/v1/domains/setup", {"domain": name})
    assert status == 202, setup
    job = await wait_job(client, setup["job_id"], timeout=30)
    assert job["status"] == "completed", job
    return str(body["domains"][0]["id"])



def _port25(sandbox: Sandbox, rcpt: str, msg: Message,
            sender: str = "someone@outside.example") -> None:
    smtp_send(sandbox.info["smtp"]["host"], sandbox.info["smtp"]["port"], sender, [rcpt], msg)


def _imap_raw(sandbox: Sandbox, user: str, subject: str) -> bytes | None:
    ep = sandbox.info["imap"]
    with imaplib.IMAP4(ep["host"], ep["port"], timeout=10) as im:
        im.login(user, PASSWORD)
        im.select("INBOX", readonly=True)
        _, data = im.search(None, "SUBJECT", f'"{subject}"')
        nums = data[0].split()
        if not nums:
            return None
        _, parts = im.fetch(nums[-1], "(BODY.PEEK[])")
        return bytes(parts[0][1]) if parts and isinstance(parts[0], tuple) else None


def _submit(sandbox: Sandbox, login: str, msg: Message,
            envelope: str | None = None) -> tuple[int, bytes]:
    """Submit as *login* (its own password); (250, b"") when accepted, else the refusal."""
    sub = sandbox.info["submission"]
    try:
        with smtplib.SMTP(sub["host"], sub["port"], timeout=15) as s:
            # A milter that cannot be reached with default_action=tempfail defers the
            # whole session, so the refusal may come as early as AUTH.
            s.login(login, PASSWORD)
            s.send_message(msg, from_addr=envelope or login, to_addrs=[str(msg["To"])])
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text
    except smtplib.SMTPResponseException as exc:
        err = exc.smtp_error
        return exc.smtp_code, err if isinstance(err, bytes) else str(err).encode()
    return 250, b""


def _sink_find(sandbox: Sandbox, needle: str) -> bytes | None:
    for eml in Path(sandbox.info["outbox_dir"]).glob("*.eml"):
        raw = eml.read_bytes()
        if needle.encode() in raw:
            return raw
    return None


def _signatures(raw: bytes) -> list[bytes]:
    return [v for k, v in dkim.DKIM(raw).headers if k.lower() == b"dkim-signature"]


# ----------------------------------------------------------------------------- item 1


async def test_deleted_domain_mail_never_reaches_the_next_owner(sandbox: Sandbox,
                                                                api: Any) -> None:
    x, y = await tenant(api, f"x{secrets.token_hex(3)}"), await tenant(
        api, f"y{secrets.token_hex(3)}")
    name = f"t{secrets.token_hex(5)}.test"
    mail_root = Path(sandbox.info["mail_root"])
    imap = sandbox.info["imap"]

    dom_id = await _setup_domain(x, name)
    carol = await ready_mailbox(x, name, "carol", PASSWORD)
    dave = await ready_mailbox(x, name, "dave", PASSWORD)
    secret_subject = f"x-secret-{secrets.token_hex(4)}"
    for user in (carol, dave):
        await asyncio.to_thread(_port25, sandbox, user["email"],
                                message("boss@outside.example", user["email"], secret_subject))
        await wait_for(lambda u=user: secret_subject in imap_subjects(
            imap["host"], imap["port"], u["email"], PASSWORD))
    # Homes are keyed by the mailbox id, not the name.
    assert (mail_root / name / carol["id"] / "Maildir").is_dir()
    assert not (mail_root / name / "carol").exists()
    # dave is deleted first: his mail waits in retention (restorable), by id too.
    status, body = await x.delete(f"/v1/email-users/{dave['id']}")
    assert status == 202, body
    assert (await wait_job(x, body["job_id"]))["status"] == "completed"
    retained = mail_root / ".retention" / name / dave["id"]
    assert (retained / "Maildir").is_dir()

    status, body = await x.delete(f"/v1/domains/{dom_id}")
    assert status == 202, body
    assert (await wait_job(x, body["job_id"], timeout=30))["status"] == "completed"

    # Y connects the same name as soon as it is free, and makes carol@ and dave@ again.
    await _setup_domain(y, name)
    # Both areas of the old domain were destroyed before its name could be reused.
    assert not (mail_root / name / carol["id"]).exists()
    assert not retained.exists() and not (mail_root / ".retention" / name).exists()
    new_carol = await ready_mailbox(y, name, "carol", PASSWORD)
    new_dave = await ready_mailbox(y, name, "dave", PASSWORD)
    assert new_carol["id"] != carol["id"]
    for user in (new_carol, new_dave):
        subjects = await asyncio.to_thread(imap_subjects, imap["host"], imap["port"],
                                           user["email"], PASSWORD)
        assert subjects == [], f"{user['email']} of the new owner sees {subjects}"
    # The new mailbox works, and sees only its own mail.
    hello = f"y-hello-{secrets.token_hex(4)}"
    await asyncio.to_thread(_port25, sandbox, new_carol["email"],
                            message("friend@outside.example", new_carol["email"], hello))
    await wait_for(lambda: imap_subjects(imap["host"], imap["port"], new_carol["email"],
                                         PASSWORD) == [hello])
    # Dovecot's row names the id home of Y's carol.
    db = sqlite3.connect(Path(sandbox.info["state_dir"]) / "dovecot" / "auth.sqlite")
    try:
        row = db.execute("SELECT mailbox_id, home FROM users WHERE domain = ? AND "
                         "local_part = 'carol'", (name,)).fetchone()
    finally:
        db.close()
    assert row == (new_carol["id"], str(mail_root / name / new_carol["id"]))


# ----------------------------------------------------------------------------- item 2


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def two_tenants(api: Any) -> dict[str, Any]:
    """X with a signing domain, mailboxes alice and bob and an alias to alice; Y with a
    signing domain and its ceo@ mailbox."""
    x, y = await tenant(api, f"x{secrets.token_hex(3)}"), await tenant(
        api, f"y{secrets.token_hex(3)}")
    dx, dy = f"t{secrets.token_hex(5)}.test", f"t{secrets.token_hex(5)}.test"
    await asyncio.gather(_setup_domain(x, dx), _setup_domain(y, dy))
    alice = await ready_mailbox(x, dx, "alice", PASSWORD)
    bob = await ready_mailbox(x, dx, "bob", PASSWORD)
    ceo = await ready_mailbox(y, dy, "ceo", PASSWORD)
    status, alias = await x.post("/v1/aliases", {"domain": dx, "username": "sales",
                                                 "targets": [alice["email"]]})
    assert status == 202, alias
    assert (await wait_job(x, alias["job_id"]))["status"] == "completed"
    return {"x": x, "y": y, "dx": dx, "dy": dy, "alice": alice, "bob": bob, "ceo": ceo}


def _msg(frm: str | list[str], to: str, subject: str) -> Message:
    # compat32 Message: EmailMessage refuses to hold two From headers.
    m = Message()
    for f in [frm] if isinstance(frm, str) else frm:
        m["From"] = f
    m["To"] = to
    m["Subject"] = subject
    m["Message-ID"] = f"<{subject}@client.example>"
    m.set_payload("hello\n")
    return m


async def test_submission_refuses_a_from_header_the_login_does_not_own(
        sandbox: Sandbox, two_tenants: dict[str, Any]) -> None:
    t = two_tenants
    alice, dy = t["alice"]["email"], t["dy"]
    out = f"r{secrets.token_hex(4)}@outside.example"
    forged = [
        (f"ceo@{dy}", None),                          # another tenant's mailbox
        (f"CEO@{dy.upper()}", None),                  # the same, other case
        (f"nobody@{dy}", None),                       # another tenant's domain
        (t["bob"]["email"], None),                    # a sibling mailbox of the same tenant
        (f'"{alice}" <ceo@{dy}>', None),              # own address as display name
        (f"Alice <{alice}>, ceo@{dy}", None),         # two addresses
        ([alice, f"ceo@{dy}"], None),                 # two From headers
        (f"ceo@{dy}", f"ceo@{dy}"),                   # envelope forged too
        (alice, f"ceo@{dy}"),                         # envelope alone forged
    ]
    for i, (frm, envelope) in enumerate(forged):
        subject = f"forged-{i}-{secrets.token_hex(4)}"
        code, text = await asyncio.to_thread(_submit, sandbox, alice,
                                             _msg(frm, out, subject), envelope)
        assert 500 <= code < 600, (frm, envelope, code, text)
        assert b"5.7.1" in text, (frm, envelope, code, text)
        assert _sink_find(sandbox, subject) is None, (frm, "left the server")
    # Nothing else was rejected on the way (no 4xx from a missing guard).
    code, text = await asyncio.to_thread(_submit, sandbox, alice,
                                         _msg(f"ceo@{dy}", out, "x"), None)
    assert text == b"5.7.1 From header not owned by the login", text


async def test_owned_from_is_accepted_and_signed_with_the_own_key_only(
        sandbox: Sandbox, two_tenants: dict[str, Any]) -> None:
    t = two_tenants
    alice, dx = t["alice"]["email"], t["dx"]
    res = resolver(sandbox.info["dns"]["host"], sandbox.info["dns"]["port"])
    for frm in (f"Alice Example <{alice}>", f"sales@{dx}"):  # own address, own alias
        subject = f"legit-{secrets.token_hex(4)}"
        code, text = await asyncio.to_thread(
            _submit, sandbox, alice, _msg(frm, f"r{subject}@outside.example", subject))
        assert code == 250, (frm, code, text)
        raw = await wait_for(lambda s=subject: _sink_find(sandbox, s))
        sigs = _signatures(raw)
        assert len(sigs) == 2, raw[:1500]  # RSA and Ed25519
        for i, sig in enumerate(sigs):
            assert f"d={dx}".encode() in sig.replace(b" ", b"").replace(b"\r\n\t", b"")
            assert dkim.DKIM(raw).verify(idx=i, dnsfunc=dkim_dnsfunc(res)), sig


async def test_guard_records_accepted_submissions_as_reputation_evidence(
        sandbox: Sandbox, two_tenants: dict[str, Any]) -> None:
    """The guard (run with --config) records the Message-ID of an accepted SMTP
    submission, so a DSN about it counts; a refused one is never recorded."""
    import asyncpg

    t = two_tenants
    alice, dy = t["alice"]["email"], t["dy"]
    ok_subject, bad_subject = f"ev-{secrets.token_hex(4)}", f"evbad-{secrets.token_hex(4)}"
    code, _ = await asyncio.to_thread(
        _submit, sandbox, alice, _msg(alice, f"r{ok_subject}@outside.example", ok_subject))
    assert code == 250
    code, _ = await asyncio.to_thread(
        _submit, sandbox, alice, _msg(f"ceo@{dy}", f"r{bad_subject}@outside.example",
                                      bad_subject))
    assert 500 <= code < 600
    conn = await asyncpg.connect(sandbox.info["postgres_dsn"])
    try:
        async def recorded(mid: str) -> Any:
            return await conn.fetchrow("SELECT d.name, m.address FROM mail_sent_messages s "
                                       "JOIN domains d ON d.id = s.domain_id LEFT JOIN "
                                       "mailboxes m ON m.id = s.mailbox_id "
                                       "WHERE s.message_id = $1", mid)

        row = None
        for _ in range(100):
            row = await recorded(f"{ok_subject}@client.example")
            if row is not None:
                break
            await asyncio.sleep(0.1)
        assert row is not None and (row["name"], row["address"]) == (t["dx"], alice)
        assert await recorded(f"{bad_subject}@client.example") is None
    finally:
        await conn.close()


async def test_api_send_still_passes_the_guard(sandbox: Sandbox, api: Any,
                                               two_tenants: dict[str, Any]) -> None:
    """mailforge's own sends log in with the master user (``address*master``)."""
    x, alice = two_tenants["x"], two_tenants["alice"]
    status, sent = await x.post(f"/v1/email-users/{alice['id']}/inbox/send", {
        "to": "someone@outside.example", "subject": "api send", "body": "hello"})
    assert status == 200, sent
    raw = await wait_for(lambda: _sink_find(sandbox, sent["message_id"]))
    assert _signatures(raw)


async def test_port25_mail_with_a_hosted_from_is_delivered_unsigned(
        sandbox: Sandbox, two_tenants: dict[str, Any]) -> None:
    t = two_tenants
    for frm in (f"ceo@{t['dy']}", t["alice"]["email"], f"ceo@{t['dx']}"):
        subject = f"p25-{secrets.token_hex(4)}"
        await asyncio.to_thread(_port25, sandbox, t["alice"]["email"],
                                _msg(frm, t["alice"]["email"], subject), frm)
        raw = await wait_for(lambda s=subject: _imap_raw(sandbox, t["alice"]["email"], s))
        assert b"dkim-signature" not in raw.lower(), raw[:2000]


def _signer_adds(sandbox: Sandbox, daemon_name: str, author: str) -> list[bytes]:
    """Speak the milter protocol to the sandbox's dkimpy-milter as Postfix does, with
    the given ``{daemon_name}``; return the headers it asks to add."""
    import socket
    import struct

    def pkt(cmd: bytes, data: bytes = b"") -> bytes:
        return struct.pack(">I", 1 + len(data)) + cmd + data

    with socket.create_connection(("127.0.0.1", sandbox.info["opendkim"]["port"]),
                                  timeout=10) as s:
        def recv() -> tuple[bytes, bytes]:
            (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
            body = s.recv(n, socket.MSG_WAITALL)
            return body[:1], body[1:]

        s.sendall(pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
        assert recv()[0] == b"O"
        s.sendall(pkt(b"D", b"Cj\0mail.sandbox.test\0{daemon_name}\0"
                      + daemon_name.encode() + b"\0"))
        s.sendall(pkt(b"C", b"unknown\x004" + struct.pack(">H", 1234) + b"127.0.0.1\0"))
        s.sendall(pkt(b"M", b"<a@outside.example>\0"))
        for name, value in ((b"From", author.encode()), (b"Subject", b"x")):
            s.sendall(pkt(b"L", name + b"\0" + value + b"\0"))
        s.sendall(pkt(b"N") + pkt(b"B", b"hi\r\n") + pkt(b"E"))
        added = []
        while True:
            cmd, data = recv()
            if cmd in (b"c", b"a", b"t", b"r", b"y"):
                break
            if cmd in (b"h", b"i"):
                added.append(data)
        s.sendall(pkt(b"Q"))
    return added


async def test_signer_never_signs_mail_marked_inbound(
        sandbox: Sandbox, two_tenants: dict[str, Any]) -> None:
    """The second line of defence: Postfix marks everything but submission INBOUND
    (milter_macro_daemon_name), and the signer treats INBOUND as external, so even a
    milter list that wrongly names the signer elsewhere gets no signature."""
    author = f"ceo@{two_tenants['dx']}"
    signed = await asyncio.to_thread(_signer_adds, sandbox, "ORIGINATING", author)
    assert len([h for h in signed if b"DKIM-Signature" in h]) == 2, signed
    assert await asyncio.to_thread(_signer_adds, sandbox, "INBOUND", author) == []


async def test_submission_defers_while_the_guard_is_down(sandbox: Sandbox,
                                                         two_tenants: dict[str, Any]) -> None:
    alice = two_tenants["alice"]["email"]
    sandbox.stop_service("from_guard")
    try:
        subject = f"guard-down-{secrets.token_hex(4)}"
        code, text = await asyncio.to_thread(
            _submit, sandbox, alice, _msg(alice, "r@outside.example", subject))
        assert 400 <= code < 500, (code, text)
        # Port 25 does not depend on it.
        inbound = f"in-{secrets.token_hex(4)}"
        await asyncio.to_thread(_port25, sandbox, alice, _msg("a@outside.example", alice,
                                                              inbound))
        await wait_for(lambda: _imap_raw(sandbox, alice, inbound))
    finally:
        sandbox.start_service("from_guard")
    code, text = await asyncio.to_thread(
        _submit, sandbox, alice, _msg(alice, "r@outside.example", f"back-{secrets.token_hex(3)}"))
    assert code == 250, (code, text)


# ----------------------------------------------------------------------------- item 11


async def test_sandbox_up_twice_keeps_every_domain_in_the_signing_table(
        sandbox: Sandbox, two_tenants: dict[str, Any]) -> None:
    table = Path(sandbox.info["opendkim"]["signing_table"])
    before = table.read_text()
    for d in (two_tenants["dx"], two_tenants["dy"]):
        assert f"*@{d} " in before
    keys_before = sorted(p.name for p in (table.parent / "keys").iterdir())
    for _ in range(2):
        await asyncio.to_thread(Sandbox(sandbox.dir).up)
        assert table.read_text() == before
    assert sorted(p.name for p in (table.parent / "keys").iterdir()) == keys_before
    # And the running signer still signs.
    alice = two_tenants["alice"]["email"]
    subject = f"after-up-{secrets.token_hex(4)}"
    code, _ = await asyncio.to_thread(_submit, sandbox, alice,
                                      _msg(alice, f"r{subject}@outside.example", subject))
    assert code == 250
    raw = await wait_for(lambda: _sink_find(sandbox, subject))
    assert len(_signatures(raw)) == 2
