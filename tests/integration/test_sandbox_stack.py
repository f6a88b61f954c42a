"""The sandbox's real mail stack, without the mailforge daemon.

These tests use their own stack (``up(start_daemon=False)``), not the session
``sandbox``: they write the Postfix maps and rows of Dovecot's SQLite auth database
directly through ``Layout``, and in the session sandbox the daemon owns those files
and would replace them from its database. A second stack costs ~3-5 s.
"""

from __future__ import annotations

import contextlib
import email.utils
import imaplib
import json
import secrets
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import dns.message
import dns.query
import dns.rdatatype
import pytest

from mailforge.backends.postfix_dovecot.backend import PostfixDovecotBackend
from mailforge.backends.postfix_dovecot.layout import AUTH_SCHEMA, Layout, keep_wal_files
from mailforge.config import MailboxesConfig, PostfixDovecotConfig
from mailforge.models import Alias, Domain, DomainState
from mailforge.models import Mailbox as MailboxModel
from mailforge.sandbox import Sandbox
from mailforge.sandbox.stack import SERVICES, render_deploy

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Mailbox:
    domain: str
    local: str
    password: str
    # A row as the first release wrote it: no mailbox id, no home (served at the
    # legacy <mail_root>/<domain>/<local part>).
    legacy: bool = False

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def mailbox_id(self) -> str:
        return f"usr_{self.local}"

    def home(self, mail_root: str) -> Path:
        """Where Dovecot keeps its mail: keyed by the mailbox id (the backend's layout)."""
        return Path(mail_root) / self.domain / (self.local if self.legacy
                                                else self.mailbox_id)


def provision(sb: Sandbox, boxes: list[Mailbox]) -> None:
    """What the backend does, by hand: Postfix's rows + rows in Dovecot's auth database."""
    layout = Layout(Path(sb.info["state_dir"]))
    domains = sorted({b.domain for b in boxes})
    with keep_wal_files(layout.postfix_db), \
            contextlib.closing(sqlite3.connect(layout.postfix_db)) as maps, maps:
        maps.executemany("INSERT OR IGNORE INTO domains VALUES (?)", [(d,) for d in domains])
        maps.executemany("INSERT OR REPLACE INTO mailboxes VALUES (?, ?, 0, ?)",
                         [(b.address, b.domain, b.mailbox_id) for b in boxes])
        maps.executemany("INSERT OR REPLACE INTO alias_targets VALUES (?, ?, ?)",
                         [(f"postmaster@{d}", boxes[0].address, d) for d in domains])
    with sqlite3.connect(layout.auth_db) as db:
        db.executemany(
            "INSERT OR REPLACE INTO users (domain, local_part, password, quota_mb,"
            " login_allowed, mailbox_id, home) VALUES (?, ?, ?, ?, 1, ?, ?)",
            [(b.domain, b.local, "{SHA512-CRYPT}"
              + crypt.crypt(b.password, crypt.mksalt(crypt.METHOD_SHA512)), 1024,
              None if b.legacy else b.mailbox_id,
              None if b.legacy else str(b.home(sb.info["mail_root"])))
             for b in boxes])
    db.close()


@pytest.fixture(scope="module")
def stack(sandbox_factory: Any) -> Iterator[Sandbox]:
    directory = Path(tempfile.mkdtemp(prefix="mailforge-stacktest-", dir="/tmp"))
    sb = sandbox_factory.up(directory, start_daemon=False)
    yield sb
    sandbox_factory.down(sb, remove=False)
    left = sb.leftovers()
    shutil.rmtree(directory, ignore_errors=True)
    assert not left, f"processes left after down(): {left}"


@pytest.fixture(scope="module")
def mailbox(stack: Sandbox) -> Mailbox:
    box = Mailbox(f"t{secrets.token_hex(5)}.test", "alice", secrets.token_urlsafe(16))
    other = Mailbox(box.domain, "bob", secrets.token_urlsafe(16))
    provision(stack, [box, other])
    return box


def make_message(sender: str, to: str, token: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"sandbox test {token}"
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain="sandbox.test")
    msg.set_content(f"Hello from the sandbox test.\ntoken={token}\n")
    return msg


def maildir_find(sb: Sandbox, box: Mailbox, token: str) -> Path | None:
    maildir = box.home(sb.info["mail_root"]) / "Maildir"
    for sub in ("new", "cur"):
        d = maildir / sub
        if d.is_dir():
            for f in d.iterdir():
                with contextlib.suppress(OSError):
                    if token.encode() in f.read_bytes():
                        return f
    return None


def outbox_find(sb: Sandbox, rcpt: str) -> tuple[dict[str, Any], bytes] | None:
    for meta in sorted(Path(sb.info["outbox_dir"]).glob("*.json")):
        data = json.loads(meta.read_text())
        if rcpt in data["rcpt_tos"]:
            return data, meta.with_suffix(".eml").read_bytes()
    return None


def smtp(sb: Sandbox, service: str = "smtp") -> smtplib.SMTP:
    ep = sb.info[service]
    return smtplib.SMTP(ep["host"], ep["port"], local_hostname="client.sandbox.test",
                        timeout=15)


def deliver(sb: Sandbox, box: Mailbox) -> tuple[str, Path]:
    token = secrets.token_hex(8)
    with smtp(sb) as s:
        s.send_message(make_message("someone@example.org", box.address, token))
    path = wait_for(f"delivery of {token} to {box.address}",
                    lambda: maildir_find(sb, box, token))
    return token, path


# ----------------------------------------------------------------------------- tests


def test_sandbox_json_contract(stack: Sandbox) -> None:
    info = json.loads((stack.dir / "sandbox.json").read_text())
    for key in ("api_url", "admin_token", "smtp", "submission", "imap", "lmtp", "dns",
                "pdns_api", "outbox_dir", "postgres_dsn", "config_path", "state_dir",
                "mail_root", "postfix_config_dir", "dovecot_config", "opendkim", "ports",
                "logs"):
        assert key in info, key
    for svc in ("smtp", "submission", "imap", "lmtp", "dns"):
        assert set(info[svc]) >= {"host", "port"}
    assert set(info["pdns_api"]) >= {"url", "key"}
    assert set(info["opendkim"]) >= {"port", "key_table", "signing_table"}
    assert len(set(info["ports"].values())) == len(info["ports"])
    for name in SERVICES:
        assert stack.running(name) == (name != "daemon"), name
    assert set(stack.log_paths()) >= set(SERVICES)


def test_up_again_is_a_no_op(stack: Sandbox) -> None:
    before = {n: (stack.dir / "run" / f"{n}.pid").read_text() for n in SERVICES
              if n != "daemon"}
    ports = dict(stack.info["ports"])
    t0 = time.monotonic()
    info = stack.up(start_daemon=False)
    assert time.monotonic() - t0 < 2
    assert info["ports"] == ports
    after = {n: (stack.dir / "run" / f"{n}.pid").read_text() for n in before}
    assert after == before


def test_smtp_delivers_to_maildir_over_lmtp(stack: Sandbox, mailbox: Mailbox) -> None:
    _, path = deliver(stack, mailbox)
    raw = path.read_bytes()
    assert b"Delivered-To: " + mailbox.address.encode() in raw
    assert path.stat().st_uid == Path(stack.info["mail_root"]).stat().st_uid  # vmail
    log = Path(stack.info["logs"]["postfix"]).read_text()
    assert "status=sent" in log and "lmtp" in log
    # The milter (OpenDKIM with empty tables) answered: no fallback to the default action.
    milter_warnings = [ln for ln in log.splitlines() if "warning" in ln and "ilter" in ln]
    assert not milter_warnings


def test_home_is_keyed_by_mailbox_id_and_a_legacy_row_keeps_its_old_home(
        stack: Sandbox, mailbox: Mailbox) -> None:
    _, path = deliver(stack, mailbox)
    root = Path(stack.info["mail_root"])
    assert path.is_relative_to(root / mailbox.domain / mailbox.mailbox_id)
    assert not (root / mailbox.domain / mailbox.local).exists()
    # A row without a home (written before homes were stored): Dovecot skips the NULL
    # field and serves the default home of userdb default_fields, as before.
    old = Mailbox(mailbox.domain, "lee", secrets.token_urlsafe(16), legacy=True)
    provision(stack, [mailbox, Mailbox(mailbox.domain, "bob", secrets.token_urlsafe(16)),
                      old])
    _, path = deliver(stack, old)
    assert path.is_relative_to(root / old.domain / "lee")


def test_imap_login_reads_the_message(stack: Sandbox, mailbox: Mailbox) -> None:
    token, _ = deliver(stack, mailbox)
    ep = stack.info["imap"]
    with imaplib.IMAP4(ep["host"], ep["port"], timeout=15) as imap:
        imap.login(mailbox.address, mailbox.password)
        typ, _ = imap.select("INBOX")
        assert typ == "OK"
        typ, data = imap.search(None, "SUBJECT", f'"{token}"')
        assert typ == "OK" and data[0].split(), data
        typ, fetched = imap.fetch(data[0].split()[-1], "(RFC822)")
        assert typ == "OK"
        assert f"token={token}".encode() in fetched[0][1]  # type: ignore[index]
        typ, quota = imap.getquotaroot("INBOX")
        assert typ == "OK" and b"STORAGE" in b" ".join(
            q for q in quota[1] if isinstance(q, bytes)), quota  # quota plugin active
        imap.logout()


def test_imap_login_case_insensitive_user_and_bad_password(stack: Sandbox,
                                                            mailbox: Mailbox) -> None:
    ep = stack.info["imap"]
    with imaplib.IMAP4(ep["host"], ep["port"], timeout=15) as imap:
        imap.login(mailbox.address.upper(), mailbox.password)
        imap.logout()
    with imaplib.IMAP4(ep["host"], ep["port"], timeout=15) as imap, \
            pytest.raises(imaplib.IMAP4.error):
        imap.login(mailbox.address, "wrong-" + mailbox.password)


def test_unknown_recipient_rejected_at_rcpt(stack: Sandbox, mailbox: Mailbox) -> None:
    with smtp(stack) as s:
        s.ehlo()
        s.mail("someone@example.org")
        code, msg = s.rcpt(f"nobody@{mailbox.domain}")
        assert code == 550, (code, msg)
        assert b"5.1.1" in msg


def test_port25_does_not_relay(stack: Sandbox, mailbox: Mailbox) -> None:
    with smtp(stack) as s:
        s.ehlo()
        s.mail(mailbox.address)
        code, msg = s.rcpt("someone@example.net")
        assert code == 554 and b"5.7.1" in msg, (code, msg)


def test_submission_auth_plain_relays_to_sink(stack: Sandbox, mailbox: Mailbox) -> None:
    token = secrets.token_hex(8)
    rcpt = f"r{token}@example.net"
    with smtp(stack, "submission") as s:
        s.ehlo()
        assert "PLAIN" in s.esmtp_features.get("auth", "").upper()
        s.auth("PLAIN", lambda challenge=None: f"\0{mailbox.address}\0{mailbox.password}",
               initial_response_ok=True)
        s.send_message(make_message(mailbox.address, rcpt, token))
    meta, raw = wait_for("the message in the sink outbox", lambda: outbox_find(stack, rcpt))
    assert meta["mail_from"] == mailbox.address
    assert meta["rcpt_tos"] == [rcpt]
    assert f"token={token}".encode() in raw
    assert b"Received: " in raw  # the raw bytes as Postfix sent them


def test_submission_refuses_without_auth_and_with_bad_password(stack: Sandbox,
                                                               mailbox: Mailbox) -> None:
    with smtp(stack, "submission") as s:
        s.ehlo()
        code, _ = s.mail(mailbox.address)
        if code == 250:
            code, _ = s.rcpt("someone@example.net")
        assert code >= 500
    with smtp(stack, "submission") as s:
        s.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as exc:
            s.login(mailbox.address, "wrong-" + mailbox.password)
        assert exc.value.smtp_code == 535


def test_submission_enforces_sender_login_map(stack: Sandbox, mailbox: Mailbox) -> None:
    with smtp(stack, "submission") as s:
        s.login(mailbox.address, mailbox.password)
        s.mail(f"bob@{mailbox.domain}")
        code, msg = s.rcpt("someone@example.net")
        assert code == 553 and b"not owned by user" in msg, (code, msg)


def _pdns(stack: Sandbox, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    api = stack.info["pdns_api"]
    req = urllib.request.Request(
        f"{api['url']}/api/v1/servers/localhost{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-API-Key": api["key"], "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        data = resp.read()
        return resp.status, json.loads(data) if data else None


def _dns_txt(stack: Sandbox, name: str) -> list[bytes]:
    q = dns.message.make_query(name, dns.rdatatype.TXT)
    r = dns.query.udp(q, stack.info["dns"]["host"], port=stack.info["dns"]["port"], timeout=5)
    return [b"".join(rd.strings) for rrset in r.answer for rd in rrset]


def test_dkim_signer_signs_after_reload_and_pdns_publishes_key(stack: Sandbox,
                                                              mailbox: Mailbox) -> None:
    """Write the signer's tables (dkimpy-milter: RSA and Ed25519 keys), reload it,
    publish both keys in PowerDNS, send through submission: both signatures in the
    sink verify with dkimpy."""
    import asyncio

    import dkim

    from mailforge.dkim.keys import generate
    from mailforge.dkim.signer import SigningKey, reload, write_tables
    from mailforge.dns.records import txt_content

    tag = secrets.token_hex(3)
    keys = [generate("rsa", f"mf{tag}-rsa"), generate("ed25519", f"mf{tag}-ed25519")]
    cfg = stack._dkim_cfg()
    write_tables([SigningKey(mailbox.domain, k.algorithm, k.selector, k.private_key)
                  for k in keys], cfg)
    asyncio.run(reload(cfg))

    zone = mailbox.domain + "."
    status, _ = _pdns(stack, "POST", "/zones", {
        "name": zone, "kind": "Native", "nameservers": ["ns1.sandbox.test."]})
    assert status == 201
    for k in keys:
        kind = "ed25519" if k.algorithm == "ed25519" else "rsa"
        status, _ = _pdns(stack, "PATCH", f"/zones/{zone}", {"rrsets": [{
            "name": f"{k.selector}._domainkey.{zone}", "type": "TXT", "ttl": 60,
            "changetype": "REPLACE", "records": [{
                "content": txt_content(f"v=DKIM1; k={kind}; p={k.public_key}"),
                "disabled": False}]}]})
        assert status == 204

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        txts = _dns_txt(stack, name.decode().rstrip("."))
        return txts[0] if txts else b""

    token = secrets.token_hex(8)
    rcpt = f"d{token}@example.net"
    with smtp(stack, "submission") as s:
        s.login(mailbox.address, mailbox.password)
        s.send_message(make_message(mailbox.address, rcpt, token))
    _, raw = wait_for("the signed message in the sink", lambda: outbox_find(stack, rcpt))
    d = dkim.DKIM(raw)
    sigs = [v for k, v in d.headers if k.lower() == b"dkim-signature"]
    assert len(sigs) == 2, raw[:2000]
    assert b"a=rsa-sha256" in b"".join(sigs) and b"a=ed25519-sha256" in b"".join(sigs)
    for i in range(2):
        assert dkim.DKIM(raw).verify(idx=i, dnsfunc=dnsfunc), i


def test_stop_and_start_dovecot(stack: Sandbox, mailbox: Mailbox) -> None:
    with smtp(stack, "submission") as s:  # an smtpd now holds a SASL connection
        s.login(mailbox.address, mailbox.password)
    t0 = time.monotonic()
    stack.stop_service("dovecot")
    assert time.monotonic() - t0 < 5
    assert not stack.running("dovecot")
    assert "dovecot" not in stack.leftovers()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", stack.info["imap"]["port"])) != 0
    t0 = time.monotonic()
    stack.stop_service("dovecot")  # not running: a no-op
    assert time.monotonic() - t0 < 1
    stack.start_service("dovecot")
    assert stack.running("dovecot")
    deliver(stack, mailbox)
    # start_service("dovecot") reloads Postfix, so no smtpd holds a dead SASL connection.
    with smtp(stack, "submission") as s:
        s.login(mailbox.address, mailbox.password)


def test_deploy_snippets_match_templates() -> None:
    """deploy/ is rendered from the sandbox templates; regenerate with
    ``python -m mailforge.sandbox.stack render-deploy``."""
    for rel, text in render_deploy().items():
        assert (REPO / rel).read_text() == text, f"{rel} is stale"


# ------------------------------------------------- the backend's sqlite tables (issue 11)

NOW = datetime.now(UTC)


def _domain(name: str) -> Domain:
    return Domain(f"dom_{name.split('.')[0]}", "acct_1", name, name, "active", "sandbox",
                  "manual", True, False, 1, 0, None, NOW, NOW, ownership_verified_at=NOW)


def _mailbox(domain: str, local: str, password: str = "x", n: int = 0,
             deleted: bool = False) -> MailboxModel:
    pw_hash = "{SHA512-CRYPT}" + crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
    return MailboxModel(f"usr_{local}", "acct_1", f"dom_{domain.split('.')[0]}", local,
                        f"{local}@{domain}", "", pw_hash, 100, None, "", False, deleted,
                        "active", 1, 0, None, NOW + timedelta(seconds=n), NOW)


def _alias(address: str, *targets: str, deleted: bool = False) -> Alias:
    return Alias(f"ali_{address}", "acct_1", "dom_x", address, targets, deleted, 1, 0, None,
                 NOW, NOW)


def _backend(sb: Sandbox, state_dir: str | None = None) -> PostfixDovecotBackend:
    return PostfixDovecotBackend(PostfixDovecotConfig(
        state_dir=state_dir or sb.info["state_dir"], mail_root=sb.info["mail_root"],
        auth_group="dovecot", postfix_config_dir=sb.info["postfix_config_dir"]),
        MailboxesConfig())


def _rcpt(sb: Sandbox, address: str) -> int:
    with smtp(sb) as s:
        s.ehlo()
        s.mail("someone@example.org")
        return int(s.rcpt(address)[0])


def _reloads(sb: Sandbox) -> int:
    return Path(sb.info["logs"]["postfix"]).read_text().count("reload -- version")


def _postmap_q(sb: Sandbox, name: str, key: str) -> str | None:
    """A lookup as Postfix makes it: the postfix user (read-only), the query files of the
    map's tables in order, the first answer wins."""
    refs = Layout(Path(sb.info["state_dir"])).postfix_ref(name).replace("proxy:", "")
    for ref in refs.split(", "):
        out = subprocess.run(["runuser", "-u", "postfix", "--", "postmap", "-c",
                              sb.info["postfix_config_dir"], "-q", key, ref],
                             capture_output=True, text=True, check=False)
        assert out.returncode in (0, 1), out.stderr
        if out.returncode == 0:
            return out.stdout.strip()
    return None


async def test_backend_tables_serve_new_mailboxes_aliases_and_deltas_without_reload(
        stack: Sandbox) -> None:
    backend = _backend(stack)
    await backend.prepare()
    name = f"n{secrets.token_hex(4)}.test"
    ann = _mailbox(name, "ann", n=1)
    dom = DomainState(_domain(name), (ann,), (_alias(f"team@{name}", ann.address),))
    assert not (await backend.apply([dom])).domain_errors
    # A new domain is the one change that reloads Postfix (see _reload_postfix).
    assert backend.reloads == 1
    reloads = _reloads(stack)
    box = Mailbox(name, "ann", "x")
    # A new domain, its mailbox, its alias and its role address: at once.
    assert _rcpt(stack, ann.address) == 250
    assert _rcpt(stack, f"postmaster@{name}") == 250
    assert _rcpt(stack, f"nobody@{name}") == 550
    token = secrets.token_hex(8)
    with smtp(stack) as s:
        s.send_message(make_message("someone@example.org", f"team@{name}", token))
    wait_for("delivery through the alias", lambda: maildir_find(stack, box, token))
    # Deltas: a new alias and a new mailbox appear, a listed tombstone goes; what a
    # delta does not list stays.
    ben = _mailbox(name, "ben", n=2)
    delta = replace(dom, mailboxes=(ben,), aliases=(_alias(f"sales@{name}", ben.address),),
                    complete=False)
    assert not (await backend.apply([delta])).domain_errors
    assert _rcpt(stack, f"sales@{name}") == 250 and _rcpt(stack, ben.address) == 250
    assert _rcpt(stack, f"team@{name}") == 250
    gone = replace(dom, mailboxes=(replace(ben, deleted=True),), aliases=(), complete=False)
    assert not (await backend.apply([gone])).domain_errors
    assert _rcpt(stack, ben.address) == 550
    assert _postmap_q(stack, "sender_logins", f"sales@{name}") is None
    assert _rcpt(stack, ann.address) == 250
    time.sleep(0.5)  # master logs a reload asynchronously: give one time to show
    assert _reloads(stack) == reloads and backend.reloads == 1  # deltas: no reload
    # The domain goes: every address of it is refused.
    assert not (await backend.apply([replace(
        dom, domain=replace(dom.domain, deleted=True))])).domain_errors
    assert _rcpt(stack, ann.address) != 250
    assert _postmap_q(stack, "virtual_domains", name) is None
    backend.close()


_HALF_WRITE = """
import os, signal, sqlite3, sys
from mailforge.backends.postfix_dovecot.tables import sync_postfix
from mailforge.backends.postfix_dovecot.render import DomainRows, MailboxRow
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size=1")  # spill pages into the WAL mid-transaction
db.execute("BEGIN IMMEDIATE")
domain, n = sys.argv[2], int(sys.argv[3])
rows = tuple(MailboxRow(f"new{i}@{domain}", i, f"usr_n{i}") for i in range(n))
sync_postfix(db, [DomainRows(domain, True, True, mailboxes=rows[: n // 2])])
print("half written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


async def test_a_crash_half_way_through_a_table_update_leaves_the_old_table(
        stack: Sandbox) -> None:
    backend = _backend(stack)
    await backend.prepare()
    name = f"c{secrets.token_hex(4)}.test"
    n = 2000
    old = tuple(_mailbox(name, f"old{i}", n=i) for i in range(n))
    alice = _mailbox(name, "alice", "secret", n=-1)
    st = DomainState(_domain(name), (alice, *old))
    assert not (await backend.apply([st])).domain_errors
    db = Layout(Path(stack.info["state_dir"])).postfix_db
    proc = subprocess.run([sys.executable, "-c", _HALF_WRITE, str(db), name, str(n)],
                          capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL and "half written" in proc.stdout, proc.stderr
    # Every key shows the old content (the new rows were never committed), to Postfix's
    # read-only lookups and to a real RCPT.
    for i in (0, 1, n // 4, n // 2 - 1, n - 1):
        assert _postmap_q(stack, "virtual_mailboxes", f"old{i}@{name}") == "OK"
        assert _postmap_q(stack, "virtual_mailboxes", f"new{i}@{name}") is None
    assert _rcpt(stack, f"old{n - 1}@{name}") == 250
    assert _rcpt(stack, f"new0@{name}") == 550
    assert _postmap_q(stack, "virtual_aliases", f"abuse@{name}") == alice.address
    # The next apply (of a new state) converges it.
    new = tuple(_mailbox(name, f"new{i}", n=i) for i in range(3))
    assert not (await backend.apply([replace(st, mailboxes=(alice, *new))])).domain_errors
    assert _rcpt(stack, f"new2@{name}") == 250 and _rcpt(stack, f"old0@{name}") == 550
    backend.close()


async def test_a_server_with_cdb_tables_converges_and_delivers_once_main_cf_is_repointed(
        stack: Sandbox, mailbox: Mailbox) -> None:
    """The upgrade: the state dir holds the cdb maps and fragments of the old mechanism and
    Postfix reads them; the new backend builds its tables from a complete pass, the old
    files stay untouched and unread, and main.cf is switched to the sqlite lookups."""
    pf = stack.info["postfix_config_dir"]
    old_refs = {p: subprocess.run(["postconf", "-c", pf, "-h", p], capture_output=True,
                                  text=True, check=True).stdout.strip() for p in _MAP_PARAMS}
    # Inside the sandbox's directory, which Postfix's users may traverse.
    state = Path(stack.info["state_dir"]).parent / f"upgrade-{secrets.token_hex(4)}"
    (state / "postfix").mkdir(parents=True)
    (state / "fragments" / "mailboxes").mkdir(parents=True)
    old_maps = {"virtual_domains": f"{mailbox.domain} OK\n",
                "virtual_mailboxes": f"{mailbox.address} OK\n",
                "virtual_aliases": f"postmaster@{mailbox.domain} {mailbox.address}\n",
                "sender_logins": f"{mailbox.address} {mailbox.address}\n"}
    for name, text in old_maps.items():
        (state / "postfix" / name).write_text(text)
        subprocess.run(["postmap", "-c", pf, f"cdb:{state / 'postfix' / name}"], check=True)
    (state / "fragments" / "mailboxes" / mailbox.domain).write_text(old_maps[
        "virtual_mailboxes"])
    # The old release's Dovecot rows (the new backend keeps them).
    (state / "dovecot").mkdir()
    with contextlib.closing(sqlite3.connect(state / "dovecot" / "auth.sqlite")) as db, db:
        db.executescript(AUTH_SCHEMA)
        db.execute("INSERT INTO users VALUES (?, ?, 'x', 100, 1, ?, ?)",
                   (mailbox.domain, mailbox.local, mailbox.mailbox_id,
                    str(mailbox.home(stack.info["mail_root"]))))
    _postconf(pf, {p: f"cdb:{state / 'postfix' / m}" for p, m in _MAP_PARAMS.items()})
    try:
        assert _rcpt(stack, mailbox.address) == 250  # served by the cdb tables
        backend = _backend(stack, str(state))
        await backend.prepare()
        assert backend.needs_full_resync
        assert not (await backend.health())["tables_current"]
        st = DomainState(_domain(mailbox.domain),
                         (_mailbox(mailbox.domain, mailbox.local, mailbox.password),))
        assert not (await backend.apply([st])).domain_errors
        await backend.full_resync_done()
        assert (await backend.health())["tables_current"]
        backend.close()
        # The old files are left as they were (harmless: nothing names them any more).
        for name, text in old_maps.items():
            assert (state / "postfix" / name).read_text() == text
            assert (state / "postfix" / f"{name}.cdb").exists()
        layout = Layout(state)
        _postconf(pf, {p: layout.postfix_ref(m) for p, m in _MAP_PARAMS.items()})
        deliver(stack, mailbox)
        assert _rcpt(stack, f"postmaster@{mailbox.domain}") == 250
        assert _rcpt(stack, f"nobody@{mailbox.domain}") == 550
        # A second start finds the tables current: no second full pass.
        again = _backend(stack, str(state))
        await again.prepare()
        assert not again.needs_full_resync
        again.close()
    finally:
        _postconf(pf, old_refs)


_MAP_PARAMS = {"virtual_mailbox_domains": "virtual_domains",
               "virtual_mailbox_maps": "virtual_mailboxes",
               "virtual_alias_maps": "virtual_aliases",
               "smtpd_sender_login_maps": "sender_logins"}


def _postconf(config_dir: str, values: dict[str, str]) -> None:
    subprocess.run(["postconf", "-c", config_dir, "-e",
                    *(f"{k}={v}" for k, v in values.items())], check=True)
    subprocess.run(["postfix", "-c", config_dir, "reload"], check=True, capture_output=True)
    time.sleep(1.0)  # the reload is asynchronous: let master restart its children
