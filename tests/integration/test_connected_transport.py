"""Issue 12, the transport of connected mailboxes against real servers: SMTP over
implicit TLS, STARTTLS and plaintext with AUTH (aiosmtpd on loopback, with a throwaway
CA made here), IMAP against the sandbox's real Dovecot (plaintext today; TLS, STARTTLS
and XOAUTH2 against the sandbox's ``external`` provider when sandbox.json has it), and
the failures a person must be told about: wrong password, untrusted certificate,
no STARTTLS, closed port, unknown host, a silent server, and a host the guard refuses
(refused before any socket is opened)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import ipaddress
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support import wait_job

from mailforge import netguard
from mailforge.connected import oauth
from mailforge.connected.imap import RemoteImapPool
from mailforge.connected.network import Network
from mailforge.connected.probe import probe
from mailforge.connected.settings import Endpoint, Remote, RemoteError, Secrets
from mailforge.connected.smtp import RemoteSubmitter
from mailforge.mail.imap import ImapPool

LOOPBACK = netguard.Guard.from_config(["127.0.0.0/8"])
USER, PASSWORD = "sarah@remote.test", "s3cret-Pässword\"x"
TOKEN = "ya29.good-access-token"


# ---------------------------------------------------------------- a throwaway CA

@dataclass
class Pki:
    ca_file: str
    server: ssl.SSLContext    # cert for 127.0.0.1 and mail.remote.test, from the trusted CA
    rogue: ssl.SSLContext     # same names, from a CA nobody trusts
    wrong_name: ssl.SSLContext  # trusted CA, but only for other.test


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], sans: list[x509.GeneralName],
          d: Path, stem: str) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(stem)).issuer_name(ca[1].subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca[0], hashes.SHA256()))
    (d / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                    + ca[1].public_bytes(serialization.Encoding.PEM))
    (d / f"{stem}.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(d / f"{stem}.pem", d / f"{stem}.key")
    return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca, rogue_ca = _ca("mailforge test CA"), _ca("nobody trusts me")
    (d / "ca.pem").write_bytes(ca[1].public_bytes(serialization.Encoding.PEM))
    good = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("mail.remote.test")]
    return Pki(str(d / "ca.pem"), _leaf(ca, good, d, "server"), _leaf(rogue_ca, good, d, "rogue"),
               _leaf(ca, [x509.DNSName("other.test")], d, "wrong"))


# ---------------------------------------------------------------- SMTP servers (aiosmtpd)

@dataclass
class Handler:
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    sessions: int = 0

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos),
                              bytes(envelope.original_content or b"")))
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def auth_XOAUTH2(self, server: SMTPServer, args: list[str]) -> AuthResult:
        raw = base64.b64decode(args[1]).decode() if len(args) > 1 else ""
        if raw == f"user={USER}\x01auth=Bearer {TOKEN}\x01\x01":
            self.logins.append("xoauth2")
            return AuthResult(success=True)
        # Gmail's way: the error as a challenge, then 535 after the empty answer.
        await server.challenge_auth(json.dumps({"status": "401", "schemes": "bearer"}))
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Username and Password not accepted")


def _authenticator(handler: Handler) -> Any:
    def check(server: Any, session: Session, envelope: Envelope, mechanism: str,
              auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER
              and auth_data.password.decode() == PASSWORD)
        if ok:
            handler.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)
    return check


class _Counting(SMTPServer):
    def connection_made(self, transport: Any) -> None:
        handler = self.event_handler
        if isinstance(handler, Handler):
            handler.sessions += 1
        super().connection_made(transport)


class _Controller(Controller):
    def factory(self) -> SMTPServer:
        return _Counting(self.handler, **self.SMTP_kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SmtpServer:
    port: int
    handler: Handler
    controller: Controller


@pytest.fixture(scope="module")
def smtp_servers(pki: Pki) -> Iterator[dict[str, SmtpServer]]:
    specs: dict[str, dict[str, Any]] = {
        "tls": {"ssl_context": pki.server, "auth_require_tls": False},
        "starttls": {"tls_context": pki.server, "require_starttls": True},
        "none": {"auth_require_tls": False},
        "rogue": {"ssl_context": pki.rogue, "auth_require_tls": False},
        "wrong_name": {"ssl_context": pki.wrong_name, "auth_require_tls": False},
        "no_auth": {"auth_exclude_mechanism": ["LOGIN", "PLAIN", "XOAUTH2"]},
        "short_idle": {"auth_require_tls": False, "timeout": 1},
    }
    out: dict[str, SmtpServer] = {}
    try:
        for name, kw in specs.items():
            h = Handler()
            port = free_port()
            c = _Controller(h, hostname="127.0.0.1", port=port, server_hostname="mail.remote.test",
                            authenticator=_authenticator(h), **kw)
            c.start()
            out[name] = SmtpServer(port, h, c)
        yield out
    finally:
        for s in out.values():
            s.controller.stop()


def net(pki: Pki, timeout: float = 5.0, guard: netguard.Guard = LOOPBACK) -> Network:
    return Network(guard, pki.ca_file, timeout)


def remote(smtp: Endpoint, imap: Endpoint | None = None, auth: str = "password",
           mailbox: str = "usr_test1", address: str = USER) -> Remote:
    return Remote(mailbox, address, smtp, imap or smtp, auth)  # type: ignore[arg-type]


def ep(port: int, security: str, host: str = "127.0.0.1", user: str = USER) -> Endpoint:
    return Endpoint(host, port, security, user)  # type: ignore[arg-type]


def message(to: str = "bob@example.org", subject: str = "hello") -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = USER, to, subject
    m.set_content("hi")
    return m


SECRETS = Secrets(smtp_password=PASSWORD)


# ---------------------------------------------------------------- SMTP: the good paths

@pytest.mark.parametrize("mode", ["tls", "starttls", "none"])
async def test_submit_over_each_security_mode_reuses_the_logged_in_connection(
        pki: Pki, smtp_servers: dict[str, SmtpServer], mode: str) -> None:
    srv = smtp_servers[mode]
    before = len(srv.handler.logins)
    sub = RemoteSubmitter(net(pki), per_host=4, idle_seconds=30, threads=4)
    try:
        r = remote(ep(srv.port, mode))
        for i in range(3):
            res = await sub.submit(r, SECRETS, USER, ["bob@example.org"], message(subject=f"m{i}"))
            assert res.ok and res.code == 0, res
        assert sub.held() == {f"127.0.0.1:{srv.port}": 1}
        assert sub.opened == 1 and len(srv.handler.logins) - before == 1
        assert [m[2].count(b"Subject: m") for m in srv.handler.messages[-3:]] == [1, 1, 1]
        # A refusal is a result; the session stays usable (RSET) and is kept.
        res = await sub.submit(r, SECRETS, USER, ["nobody@example.org"], message())
        assert not res.ok and res.code == 550 and "no such user" in res.text
        res = await sub.submit(r, SECRETS, USER, ["bob@example.org"], message())
        assert res.ok and sub.opened == 1
        sub.close()
        assert sub.held() == {}
    finally:
        sub.close()


async def test_smtp_by_host_name_verifies_the_name_and_connects_to_the_checked_address(
        pki: Pki, smtp_servers: dict[str, SmtpServer]) -> None:
    """A name (mail.remote.test, resolved here by a stub to 127.0.0.1) is verified
    against the certificate; the socket goes to the address the guard returned."""
    class Stub(netguard.Guard):
        async def resolve(self, host: str, port: int) -> list[str]:
            assert host == "mail.remote.test"
            return self.check_resolved(host, ["127.0.0.1"])

    stub = Stub(LOOPBACK.allow)
    sub = RemoteSubmitter(Network(stub, pki.ca_file, 5), per_host=1, idle_seconds=30, threads=2)
    try:
        res = await sub.submit(remote(ep(smtp_servers["tls"].port, "tls", "mail.remote.test")),
                               SECRETS, USER, ["bob@example.org"], message())
        assert res.ok
        with pytest.raises(RemoteError) as err:  # the cert names mail.remote.test, not other.test
            await sub.submit(remote(ep(smtp_servers["wrong_name"].port, "tls",
                                       "mail.remote.test")), SECRETS, USER, ["b@x.org"],
                             message())
        assert err.value.reason == "tls_error"
    finally:
        sub.close()


async def test_smtp_xoauth2_initial_response_and_error_challenge(
        pki: Pki, smtp_servers: dict[str, SmtpServer]) -> None:
    srv = smtp_servers["tls"]
    r = remote(ep(srv.port, "tls"), auth="xoauth2")
    sub = RemoteSubmitter(net(pki), per_host=2, idle_seconds=30, threads=2)
    try:
        res = await sub.submit(r, Secrets(access_token=TOKEN), USER, ["bob@example.org"],
                               message())
        assert res.ok and "xoauth2" in srv.handler.logins
        with pytest.raises(RemoteError) as err:
            await sub.submit(remote(ep(srv.port, "tls"), auth="xoauth2", mailbox="usr_other"),
                             Secrets(access_token="ya29.expired"), USER, ["b@x.org"],
                             message())
        assert err.value.reason == "auth_failed", err.value
        assert "ya29" not in str(err.value)
        assert sub.held() == {f"127.0.0.1:{srv.port}": 1}  # the failed one is not kept
    finally:
        sub.close()


async def test_kept_connection_closed_by_the_server_is_replaced_once(
        pki: Pki, smtp_servers: dict[str, SmtpServer]) -> None:
    srv = smtp_servers["short_idle"]  # the server drops a session idle for 1 s
    sub = RemoteSubmitter(net(pki), per_host=2, idle_seconds=60, threads=2)
    try:
        r = remote(ep(srv.port, "none"))
        before = len(srv.handler.logins)
        assert (await sub.submit(r, SECRETS, USER, ["bob@example.org"], message())).ok
        await asyncio.sleep(1.6)
        assert (await sub.submit(r, SECRETS, USER, ["bob@example.org"], message())).ok
        assert len(srv.handler.logins) - before == 2  # a second login, no error seen
        assert sub.held() == {f"127.0.0.1:{srv.port}": 1}
    finally:
        sub.close()


async def test_per_host_bound_holds_for_many_mailboxes_sending_at_once(
        pki: Pki, smtp_servers: dict[str, SmtpServer]) -> None:
    srv = smtp_servers["none"]
    sub = RemoteSubmitter(net(pki), per_host=3, idle_seconds=30, threads=8)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sum(sub.held().values()))
            await asyncio.sleep(0.001)

    w = asyncio.create_task(watch())
    try:
        results = await asyncio.gather(*(
            sub.submit(remote(ep(srv.port, "none"), mailbox=f"usr_{i}"), SECRETS, USER,
                       ["bob@example.org"], message(subject=f"b{i}")) for i in range(40)))
        assert all(r.ok for r in results)
        assert peak <= 3 and sum(sub.held().values()) <= 3
    finally:
        w.cancel()
        sub.close()


# ---------------------------------------------------------------- SMTP: the failures

async def _smtp_error(pki: Pki, endpoint: Endpoint, secrets: Secrets = SECRETS,
                      timeout: float = 5.0, guard: netguard.Guard = LOOPBACK) -> RemoteError:
    sub = RemoteSubmitter(net(pki, timeout, guard), per_host=2, idle_seconds=30, threads=2)
    try:
        with pytest.raises(RemoteError) as err:
            await sub.submit(remote(endpoint), secrets, USER, ["bob@example.org"], message())
        assert sub.held() == {}, "a failed connection holds no slot"
    finally:
        sub.close()
    for s in secrets.values():
        assert s not in str(err.value) and s not in repr(err.value)
        assert base64.b64encode(s.encode()).decode() not in str(err.value)
    return err.value


async def test_smtp_failures_are_classified_with_an_actionable_detail(
        pki: Pki, smtp_servers: dict[str, SmtpServer]) -> None:
    s = smtp_servers
    e = await _smtp_error(pki, ep(s["tls"].port, "tls"), Secrets(smtp_password="wrong-pass"))
    assert e.reason == "auth_failed" and USER in e.detail
    e = await _smtp_error(pki, ep(s["rogue"].port, "tls"))
    assert e.reason == "tls_error" and "not trusted" in e.detail
    e = await _smtp_error(pki, ep(s["none"].port, "starttls"))
    assert e.reason == "tls_error" and "STARTTLS" in e.detail
    e = await _smtp_error(pki, ep(s["none"].port, "tls"))
    assert e.reason == "tls_error"
    e = await _smtp_error(pki, ep(s["starttls"].port, "none"))  # AUTH only after STARTTLS
    assert e.reason == "smtp_rejected" and "offers no authentication" in e.detail
    e = await _smtp_error(pki, ep(s["no_auth"].port, "none"))
    assert e.reason == "smtp_rejected"
    e = await _smtp_error(pki, ep(free_port(), "tls"))
    assert e.reason == "unreachable" and "refused" in e.detail
    e = await _smtp_error(pki, ep(25, "tls", host="no-such-host.invalid"))
    assert e.reason == "unreachable" and "no-such-host.invalid" in e.detail


async def test_silent_server_times_out(pki: Pki) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        e = await _smtp_error(pki, ep(silent.getsockname()[1], "none"), timeout=0.5)
        assert e.reason == "timeout"
        pool = RemoteImapPool(net(pki, 0.5), per_host=2, per_mailbox=1, idle_seconds=30)
        with pytest.raises(RemoteError) as err:
            async with pool.session(remote(ep(silent.getsockname()[1], "tls")), SECRETS):
                pass
        assert err.value.reason == "timeout"
        assert pool.held() == {}
    finally:
        silent.close()


async def test_default_guard_refuses_loopback_before_any_socket_is_opened(pki: Pki) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        for host in ("127.0.0.1", "localhost"):
            e = await _smtp_error(pki, ep(port, "none", host=host), guard=netguard.Guard())
            assert e.reason == "blocked", e
        default = Network(netguard.Guard(), None, 5)
        res = await probe(default, remote(ep(port, "tls")), SECRETS)
        assert not res.ok and res.reason == "blocked"
        with pytest.raises(RemoteError) as err:
            await oauth.refresh(default, oauth.Grant(f"https://127.0.0.1:{port}/token", "c",
                                                     None, "r-token"))
        assert err.value.reason == "blocked"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected
    finally:
        listener.close()


# ---------------------------------------------------------------- IMAP: small fakes

async def _fake_imap(lines: list[bytes]) -> tuple[asyncio.AbstractServer, int]:
    """A server that greets and answers CAPABILITY without STARTTLS."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(lines[0])
        while line := await reader.readline():
            tag = line.split(b" ", 1)[0]
            if b"CAPABILITY" in line.upper():
                writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            else:
                writer.write(tag + b" BAD no\r\n")
            await writer.drain()
        writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_imap_starttls_not_offered_and_greeting_refused(pki: Pki) -> None:
    server, port = await _fake_imap([b"* OK IMAP4rev1 ready\r\n"])
    bye, bye_port = await _fake_imap([b"* BYE too many connections\r\n"])
    try:
        pool = RemoteImapPool(net(pki), per_host=2, per_mailbox=1, idle_seconds=30)
        with pytest.raises(RemoteError) as err:
            async with pool.session(remote(ep(port, "starttls")), SECRETS):
                pass
        assert err.value.reason == "tls_error" and "STARTTLS" in err.value.detail
        with pytest.raises(RemoteError) as err:
            async with pool.session(remote(ep(bye_port, "none")), SECRETS):
                pass
        assert err.value.reason == "imap_error" and "too many" in err.value.detail
        assert pool.held() == {}
    finally:
        server.close()
        bye.close()


# ---------------------------------------------------------------- IMAP: the sandbox's Dovecot

@dataclass
class Box:
    id: str
    email: str
    password: str


async def _mailboxes(api: Any, domain: str, n: int) -> list[Box]:
    from support import ready_domain
    await ready_domain(api, domain)
    out = []
    for i in range(n):
        pw = f"a-long-remote-pass-{i}\\\"q"
        status, user = await api.post("/v1/email-users", {
            "domain": domain, "username": f"remote{i}", "password": pw})
        assert status == 202, user
        assert (await wait_job(api, user["job_id"]))["status"] == "completed"
        out.append(Box(user["id"], user["email"], pw))
    return out


@pytest.fixture(scope="module")
async def sandbox_boxes(sandbox: Any, api: Any) -> list[Box]:
    import secrets as _s
    return await _mailboxes(api, f"remote-{_s.token_hex(4)}.example", 3)


def _sandbox_remote(sandbox: Any, box: Box, imap_security: str = "none",
                    imap: dict[str, Any] | None = None) -> Remote:
    i = imap or sandbox.info["imap"]
    s = sandbox.info["submission"]
    return Remote(box.id, box.email, Endpoint(s["host"], s["port"], "none", box.email),
                  Endpoint(i["host"], i["port"], imap_security, box.email),  # type: ignore[arg-type]
                  "password")


@pytest.mark.stack
async def test_probe_and_imap_session_against_the_sandbox_dovecot(
        pki: Pki, sandbox: Any, sandbox_boxes: list[Box]) -> None:
    box = sandbox_boxes[0]
    r = _sandbox_remote(sandbox, box)
    secrets = Secrets(smtp_password=box.password)
    res = await probe(net(pki), r, secrets)
    assert res.ok and res.reason is None and res.detail == "", res
    assert res.seconds < 10

    pool = RemoteImapPool(net(pki), per_host=2, per_mailbox=2, idle_seconds=30)
    pool.start()
    try:
        for _ in range(3):
            async with pool.session(r, secrets) as conn:
                assert await ImapPool.select(conn, "INBOX") > 0
                await ImapPool.uid_search(conn, "ALL")
        assert pool.opened == 1
        assert pool.held() == {f"{r.imap.host}:{r.imap.port}": 1}
        # The body raised: that connection is not kept.
        with pytest.raises(ZeroDivisionError):
            async with pool.session(r, secrets):
                raise ZeroDivisionError
        assert await _settled(pool, {})
    finally:
        await pool.close()

    bad = await probe(net(pki), r, Secrets(smtp_password="not-it-at-all"))
    assert not bad.ok and bad.reason == "auth_failed" and "not-it-at-all" not in bad.detail


async def _settled(pool: RemoteImapPool, want: dict[str, int]) -> bool:
    for _ in range(100):
        if pool.held() == want:
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.stack
async def test_imap_pool_bounded_per_host_idle_of_others_give_way(
        pki: Pki, sandbox: Any, sandbox_boxes: list[Box]) -> None:
    pool = RemoteImapPool(net(pki), per_host=2, per_mailbox=1, idle_seconds=30)
    remotes = [(_sandbox_remote(sandbox, b), Secrets(smtp_password=b.password))
               for b in sandbox_boxes]
    host = f"{remotes[0][0].imap.host}:{remotes[0][0].imap.port}"
    peak = 0

    async def use(r: Remote, s: Secrets) -> None:
        nonlocal peak
        async with pool.session(r, s) as conn:
            peak = max(peak, pool.held()[host])
            await ImapPool.select(conn, "INBOX")
            await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(use(r, s) for _ in range(4) for r, s in remotes))
        assert peak <= 2 and pool.held()[host] <= 2
        # Two mailboxes idle; the third takes a slot from the oldest idle one.
        await use(*remotes[2])
        assert pool.held()[host] <= 2
        # Wrong credentials (another mailbox row: a kept session is reused by the
        # mailbox it belongs to, never by another).
        wrong = dataclasses.replace(remotes[0][0], mailbox_id="usr_wrong")
        with pytest.raises(RemoteError) as err:
            async with pool.session(wrong, Secrets(smtp_password="wrong-password")):
                pass
        assert err.value.reason == "auth_failed"
    finally:
        await pool.close()
    assert await _settled(pool, {})


# ---------------------------------------------------------------- the sandbox's external provider

def _external(sandbox: Any) -> dict[str, Any]:
    ext = sandbox.info.get("external")
    if not ext:
        pytest.skip("sandbox.json has no `external` block (the sandbox's TLS listeners and "
                    "OAuth2 server, issue 12 helper A): TLS/STARTTLS/XOAUTH2 IMAP tests skipped")
    return dict(ext)


def _mint(sandbox: Any, email: str) -> str:
    ext = _external(sandbox)
    req = urllib.request.Request(
        ext["oauth"]["mint_url"], data=json.dumps({"email": email}).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {sandbox.info['secrets']['oauth_mint_secret']}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["refresh_token"])


@pytest.fixture
async def external_net(sandbox: Any) -> Network:
    ext = _external(sandbox)
    return Network(LOOPBACK, ext["ca_file"], 10)


def _ext_remote(ext: dict[str, Any], box: Box, smtp: str, imap: str,
                auth: str = "password") -> Remote:
    s, i = ext[f"smtp_{smtp}"], ext[f"imap_{imap}"]
    return Remote(box.id, box.email, Endpoint(s["host"], s["port"], smtp, box.email),  # type: ignore[arg-type]
                  Endpoint(i["host"], i["port"], imap, box.email), auth)  # type: ignore[arg-type]


@pytest.mark.stack
@pytest.mark.parametrize("smtp_mode,imap_mode", [("tls", "tls"), ("starttls", "starttls")])
async def test_external_tls_and_starttls_probe_send_and_read(
        sandbox: Any, sandbox_boxes: list[Box], external_net: Network, smtp_mode: str,
        imap_mode: str) -> None:
    ext = _external(sandbox)
    box = sandbox_boxes[1]
    r = _ext_remote(ext, box, smtp_mode, imap_mode)
    secrets = Secrets(smtp_password=box.password)
    res = await probe(external_net, r, secrets)
    assert res.ok, res
    sub = RemoteSubmitter(external_net, per_host=2, idle_seconds=30, threads=2)
    pool = RemoteImapPool(external_net, per_host=2, per_mailbox=1, idle_seconds=30)
    try:
        m = message(to=box.email, subject=f"external {smtp_mode}")
        m.replace_header("From", box.email)
        assert (await sub.submit(r, secrets, box.email, [box.email], m)).ok
        async with pool.session(r, secrets) as conn:
            await ImapPool.select(conn, "INBOX")
            assert await ImapPool.uid_search(conn, "ALL") is not None
    finally:
        sub.close()
        await pool.close()


@pytest.mark.stack
async def test_external_untrusted_certificate_is_tls_error(
        sandbox: Any, sandbox_boxes: list[Box], external_net: Network) -> None:
    ext = _external(sandbox)
    box = sandbox_boxes[1]
    bad = ext["bad_tls"]
    r = Remote(box.id, box.email,
               Endpoint(bad["smtp"]["host"], bad["smtp"]["port"], "tls", box.email),
               Endpoint(bad["imap"]["host"], bad["imap"]["port"], "tls", box.email), "password")
    res = await probe(external_net, r, Secrets(smtp_password=box.password))
    assert not res.ok and res.reason == "tls_error", res
    ok_smtp = Endpoint(ext["smtp_tls"]["host"], ext["smtp_tls"]["port"], "tls", box.email)
    res = await probe(external_net, Remote(box.id, box.email, ok_smtp, r.imap, "password"),
                      Secrets(smtp_password=box.password))
    assert not res.ok and res.reason == "tls_error" and res.detail.startswith("IMAP"), res


@pytest.mark.stack
async def test_external_xoauth2_refresh_then_smtp_and_imap(
        sandbox: Any, sandbox_boxes: list[Box], external_net: Network) -> None:
    ext = _external(sandbox)
    box = sandbox_boxes[2]
    o = ext["oauth"]
    refresh_token = _mint(sandbox, box.email)
    grant = oauth.Grant(o["token_url"], o["client_id"], o.get("client_secret"), refresh_token)
    token = await oauth.refresh(external_net, grant)
    assert refresh_token not in repr(grant) and token.token not in repr(token)
    assert token.expires_at > datetime.datetime.now(datetime.UTC)
    r = _ext_remote(ext, box, "tls", "tls", auth="xoauth2")
    res = await probe(external_net, r, Secrets(access_token=token.token))
    assert res.ok, res
    bad = await probe(external_net, r, Secrets(access_token="not-a-live-token"))
    assert not bad.ok and bad.reason == "auth_failed", bad
    with pytest.raises(RemoteError) as err:
        await oauth.refresh(external_net, oauth.Grant(o["token_url"], o["client_id"],
                                                      o.get("client_secret"), "dead-token"))
    assert err.value.reason == "oauth_failed" and "invalid_grant" in err.value.detail
    assert "dead-token" not in str(err.value)
