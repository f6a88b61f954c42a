"""Issue 12, the sandbox as an "external provider": its own Postfix + Dovecot serve
TLS listeners (implicit TLS and STARTTLS, SMTP submission and IMAP) with a private test
CA, a pair whose certificate nobody trusts, and XOAUTH2 logins that Dovecot checks
against the sandbox's OAuth2 server, all without changing what mailforge itself uses.

Clients here are the standard library's smtplib and imaplib, with an SSL context that
trusts the test CA and nothing else, as a mail client of the provider would. A mailbox
is created through the API (a managed mailbox: the provider's "account") and logged in
with its password and with bearer tokens.
"""

from __future__ import annotations

import base64
import imaplib
import secrets
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from cryptography import x509
from support import ready_domain, ready_mailbox

from mailforge import config as config_mod
from mailforge.mail.master import login_name
from mailforge.sandbox import Sandbox, oauth, tls
from mailforge.sandbox.stack import EXTERNAL_NETWORK

pytestmark = pytest.mark.stack

TLS_LISTENERS = ("smtp_tls", "smtp_starttls", "imap_tls", "imap_starttls")


@dataclass(frozen=True)
class Box:
    address: str
    password: str


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def boxes(api: Any) -> tuple[Box, Box]:
    """Two mailboxes of one domain, made through the API with known passwords."""
    domain = f"t{secrets.token_hex(5)}.test"
    await ready_domain(api, domain)
    out = []
    for name in ("alice", "bob"):
        password = secrets.token_urlsafe(18)
        await ready_mailbox(api, domain, name, password)
        out.append(Box(f"{name}@{domain}", password))
    return out[0], out[1]


@pytest.fixture(scope="module")
def ctx(external: dict[str, Any]) -> ssl.SSLContext:
    """Trusts the sandbox's test CA only (not the system store), verifies host names."""
    return ssl.create_default_context(cafile=external["ca_file"])


@contextmanager
def smtp_client(external: dict[str, Any], name: str, ctx: ssl.SSLContext,
                ) -> Iterator[smtplib.SMTP]:
    """An SMTP session on listener *name*, TLS established (implicitly or by STARTTLS)."""
    ep = external[name] if name in external else external["bad_tls"]["smtp"]
    s: smtplib.SMTP
    if name == "smtp_starttls":
        s = smtplib.SMTP(ep["host"], ep["port"], local_hostname="client.test", timeout=15)
        s.starttls(context=ctx)
    else:
        s = smtplib.SMTP_SSL(ep["host"], ep["port"], local_hostname="client.test",
                             context=ctx, timeout=15)
    try:
        s.ehlo()
        yield s
    finally:
        s.close()


@contextmanager
def imap_client(external: dict[str, Any], name: str, ctx: ssl.SSLContext,
                ) -> Iterator[imaplib.IMAP4]:
    ep = external[name] if name in external else external["bad_tls"]["imap"]
    im: imaplib.IMAP4
    if name == "imap_starttls":
        im = imaplib.IMAP4(ep["host"], ep["port"], timeout=15)
        im.starttls(ssl_context=ctx)
    else:
        im = imaplib.IMAP4_SSL(ep["host"], ep["port"], ssl_context=ctx, timeout=15)
    try:
        yield im
    finally:
        im.shutdown()


def xoauth2(address: str, token: str) -> str:
    return f"user={address}\x01auth=Bearer {token}\x01\x01"


def imap_xoauth2(im: imaplib.IMAP4, address: str, token: str) -> str:
    """AUTHENTICATE XOAUTH2; on refusal the server sends a JSON error as a challenge,
    which the client acknowledges with an empty answer (as Gmail's clients do)."""
    answers = iter([xoauth2(address, token).encode(), b""])
    typ, _ = im.authenticate("XOAUTH2", lambda _challenge: next(answers))
    return str(typ)


def smtp_xoauth2(s: smtplib.SMTP, address: str, token: str) -> int:
    def answer(challenge: bytes | None = None) -> str:
        return xoauth2(address, token) if challenge is None else ""

    code, _ = s.auth("XOAUTH2", answer, initial_response_ok=True)
    return code


def access_token(sandbox: Sandbox, refresh_token: str) -> dict[str, Any]:
    return oauth.refresh(sandbox.info, refresh_token)


def http_status(req: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


# ----------------------------------------------------------------------------- tests


def test_sandbox_json_external_block(sandbox: Sandbox, external: dict[str, Any]) -> None:
    assert set(external) == {"smtp_tls", "smtp_starttls", "imap_tls", "imap_starttls",
                             "bad_tls", "ca_file", "oauth"}
    for name in TLS_LISTENERS:
        assert set(external[name]) == {"host", "port"}
    assert set(external["bad_tls"]) == {"smtp", "imap"}
    assert set(external["oauth"]) == {"token_url", "client_id", "client_secret", "mint_url"}
    assert Path(external["ca_file"]).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    # Every listener answers on its own port.
    ports = [external[n]["port"] for n in TLS_LISTENERS]
    ports += [external["bad_tls"][k]["port"] for k in ("smtp", "imap")]
    assert len(set(ports)) == len(ports)


def test_daemon_config_allows_only_the_external_provider(sandbox: Sandbox,
                                                         external: dict[str, Any]) -> None:
    raw = yaml.safe_load(Path(sandbox.info["config_path"]).read_text())
    assert raw["outbound"]["allow_networks"] == [EXTERNAL_NETWORK]
    cfg = config_mod.load(sandbox.info["config_path"])
    assert cfg.outbound.allow_networks == (EXTERNAL_NETWORK,)
    # Nothing else of the sandbox's is on the allowed addresses: PostgreSQL, the PowerDNS
    # API, the daemon's own listeners stay unreachable for tenant-given hosts.
    for name in TLS_LISTENERS:
        assert external[name]["host"] in ("127.0.0.2", "127.0.0.3")
    if hasattr(cfg, "connected"):  # the section of issue 12's connected mailboxes
        assert raw["connected"]["ca_file"] == external["ca_file"]


@pytest.mark.parametrize("listener", ["smtp_tls", "smtp_starttls"])
async def test_smtp_password_login_and_send_over_tls(
        sandbox: Sandbox, external: dict[str, Any], ctx: ssl.SSLContext,
        boxes: tuple[Box, Box], listener: str) -> None:
    alice, bob = boxes
    with smtp_client(external, listener, ctx) as s:
        assert isinstance(s.sock, ssl.SSLSocket)
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        code, _ = s.login(alice.address, alice.password)
        assert code == 235
        msg = EmailMessage()
        msg["From"] = alice.address
        msg["To"] = bob.address
        msg["Subject"] = f"via {listener}"
        msg.set_content("sent through the external provider")
        assert s.send_message(msg) == {}
    with imap_client(external, "imap_tls", ctx) as im:
        im.login(bob.address, bob.password)
        im.select("INBOX", readonly=True)
        deadline = time.monotonic() + 15
        while True:
            _, data = im.search(None, "SUBJECT", f'"via {listener}"')
            if data[0].split():
                break
            assert time.monotonic() < deadline, f"message via {listener} never arrived"
            time.sleep(0.2)
            im.noop()


@pytest.mark.parametrize("listener", ["imap_tls", "imap_starttls"])
async def test_imap_password_login_over_tls(external: dict[str, Any], ctx: ssl.SSLContext,
                                            boxes: tuple[Box, Box], listener: str) -> None:
    alice, _ = boxes
    with imap_client(external, listener, ctx) as im:
        assert isinstance(im.sock, ssl.SSLSocket)
        typ, _ = im.login(alice.address, alice.password)
        assert typ == "OK"
        typ, folders = im.list()
        assert typ == "OK" and any(b"INBOX" in f for f in folders if isinstance(f, bytes))


async def test_a_wrong_password_is_refused_over_tls(external: dict[str, Any],
                                                    ctx: ssl.SSLContext,
                                                    boxes: tuple[Box, Box]) -> None:
    alice, bob = boxes
    with smtp_client(external, "smtp_tls", ctx) as s, \
            pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(alice.address, bob.password)
    with imap_client(external, "imap_tls", ctx) as im, pytest.raises(imaplib.IMAP4.error):
        im.login(alice.address, alice.password + "x")


async def test_starttls_listeners_take_no_login_before_tls(external: dict[str, Any],
                                                           boxes: tuple[Box, Box]) -> None:
    alice, _ = boxes
    ep = external["smtp_starttls"]
    with smtplib.SMTP(ep["host"], ep["port"], timeout=15) as s:
        s.ehlo()
        assert s.has_extn("starttls")
        assert not s.has_extn("auth")  # smtpd_tls_auth_only
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(
            f"\0{alice.address}\0{alice.password}".encode()).decode())
        assert code >= 500
    ep = external["imap_starttls"]
    with imaplib.IMAP4(ep["host"], ep["port"], timeout=15) as im:
        assert "STARTTLS" in im.capabilities and "LOGINDISABLED" in im.capabilities
        with pytest.raises(imaplib.IMAP4.error, match=r"PRIVACYREQUIRED|disallowed"):
            im.login(alice.address, alice.password)


async def test_the_bad_certificate_listeners_fail_verification(
        external: dict[str, Any], ctx: ssl.SSLContext) -> None:
    bad = external["bad_tls"]
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(bad["smtp"]["host"], bad["smtp"]["port"], context=ctx, timeout=15)
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(bad["imap"]["host"], bad["imap"]["port"], ssl_context=ctx,
                          timeout=15)
    # Unverified, the same listener speaks TLS: only trust is missing (so tls_error is
    # what mailforge must report, not a connection failure).
    loose = ssl.create_default_context()
    loose.check_hostname = False
    loose.verify_mode = ssl.CERT_NONE
    with imaplib.IMAP4_SSL(bad["imap"]["host"], bad["imap"]["port"], ssl_context=loose,
                           timeout=15) as im:
        assert "IMAP4REV1" in im.capabilities


async def test_the_test_ca_is_private(external: dict[str, Any]) -> None:
    """The system store does not trust the sandbox's certificate, and the certificate
    names the sandbox (its addresses, mail.sandbox.test), not anything else."""
    ep = external["imap_tls"]
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(ep["host"], ep["port"], ssl_context=ssl.create_default_context(),
                          timeout=15)
    ctx = ssl.create_default_context(cafile=external["ca_file"])
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        with ctx.wrap_socket(socket.create_connection(
                (ep["host"], ep["port"]), timeout=15), server_hostname="imap.gmail.com"):
            pass
    with ctx.wrap_socket(socket.create_connection(
            (ep["host"], ep["port"]), timeout=15), server_hostname="mail.sandbox.test") as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3")


async def test_xoauth2_on_every_tls_listener(sandbox: Sandbox, external: dict[str, Any],
                                             ctx: ssl.SSLContext, boxes: tuple[Box, Box],
                                             oauth_mint: Callable[..., str]) -> None:
    alice, _ = boxes
    refresh_token = oauth_mint(alice.address, expires_in=120)
    grant = access_token(sandbox, refresh_token)
    assert grant["token_type"] == "Bearer" and grant["expires_in"] == 120
    assert "refresh_token" not in grant  # not rotating
    token = grant["access_token"]
    for name in ("imap_tls", "imap_starttls"):
        with imap_client(external, name, ctx) as im:
            assert "AUTH=XOAUTH2" in im.capabilities
            assert imap_xoauth2(im, alice.address, token) == "OK"
            typ, _ = im.select("INBOX")
            assert typ == "OK"
    for name in ("smtp_tls", "smtp_starttls"):
        with smtp_client(external, name, ctx) as s:
            assert "XOAUTH2" in s.esmtp_features["auth"].split()
            assert smtp_xoauth2(s, alice.address, token) == 235
            msg = EmailMessage()
            msg["From"] = alice.address
            msg["To"] = "someone@elsewhere.example"
            msg["Subject"] = f"xoauth2 via {name}"
            msg.set_content("a bearer token is as good as a password for sending")
            assert s.send_message(msg) == {}  # accepted for relay: the login is alice
    # OAUTHBEARER (RFC 7628) is served too.
    with imap_client(external, "imap_tls", ctx) as im:
        ob = f"n,a={alice.address},\x01auth=Bearer {token}\x01\x01".encode()
        typ, _ = im.authenticate("OAUTHBEARER", lambda _c: ob)
        assert typ == "OK"
    stats = oauth.stats(sandbox.info, alice.address)
    assert stats["refresh_grants"] >= 1 and stats["introspections_active"] >= 5


async def test_bad_tokens_are_refused(sandbox: Sandbox, external: dict[str, Any],
                                      ctx: ssl.SSLContext, boxes: tuple[Box, Box],
                                      oauth_mint: Callable[..., str]) -> None:
    alice, bob = boxes
    short = access_token(sandbox, oauth_mint(alice.address, expires_in=1))["access_token"]
    bobs = access_token(sandbox, oauth_mint(bob.address))["access_token"]
    time.sleep(1.5)
    refused = {
        "made up": "sbx-at-" + secrets.token_urlsafe(32),
        "expired": short,
        "another mailbox's": bobs,
        # The password is no bearer token: tokens never reach the password passdb.
        "the password": alice.password,
        "the refresh token": oauth_mint(alice.address),
    }
    for what, token in refused.items():
        with imap_client(external, "imap_tls", ctx) as im:
            with pytest.raises(imaplib.IMAP4.error):
                imap_xoauth2(im, alice.address, token)
        with smtp_client(external, "smtp_starttls", ctx) as s:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp_xoauth2(s, alice.address, token)
            # The session goes on: a right login after a refused one works.
            assert s.login(alice.address, alice.password)[0] == 235, what
    # bob's token still opens bob's mailbox.
    with imap_client(external, "imap_tls", ctx) as im:
        assert imap_xoauth2(im, bob.address, bobs) == "OK"


async def test_token_endpoint_follows_rfc6749(sandbox: Sandbox, external: dict[str, Any],
                                              ctx: ssl.SSLContext, boxes: tuple[Box, Box],
                                              oauth_mint: Callable[..., str]) -> None:
    alice, _ = boxes
    o = external["oauth"]
    rt = oauth_mint(alice.address)

    def post(form: dict[str, str], headers: dict[str, str] | None = None) -> int:
        return http_status(urllib.request.Request(
            o["token_url"], data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}))

    ok = {"grant_type": "refresh_token", "refresh_token": rt, "client_id": o["client_id"]}
    assert post(ok) == 200  # a public client: no secret
    assert post({**ok, "client_secret": o["client_secret"]}) == 200
    basic = base64.b64encode(f"{o['client_id']}:{o['client_secret']}".encode()).decode()
    assert post({"grant_type": "refresh_token", "refresh_token": rt},
                {"Authorization": f"Basic {basic}"}) == 200
    assert post({**ok, "client_secret": "wrong"}) == 401
    assert post({**ok, "client_id": "someone-else"}) == 401
    assert post({**ok, "refresh_token": rt + "x"}) == 400
    assert post({**ok, "grant_type": "password"}) == 400
    # Revoked: the refresh token and the access tokens it gave are dead.
    token = access_token(sandbox, rt)["access_token"]
    assert oauth.revoke(sandbox.info, refresh_token=rt) == 1
    assert post(ok) == 400
    with imap_client(external, "imap_tls", ctx) as im, pytest.raises(imaplib.IMAP4.error):
        imap_xoauth2(im, alice.address, token)


async def test_a_rotating_refresh_token_is_replaced(sandbox: Sandbox,
                                                    external: dict[str, Any],
                                                    ctx: ssl.SSLContext,
                                                    boxes: tuple[Box, Box],
                                                    oauth_mint: Callable[..., str]) -> None:
    alice, _ = boxes
    rt = oauth_mint(alice.address, rotate=True)
    first = access_token(sandbox, rt)
    new_rt = first["refresh_token"]
    assert new_rt != rt
    with pytest.raises(urllib.error.HTTPError) as err:
        access_token(sandbox, rt)
    assert err.value.code == 400
    second = access_token(sandbox, new_rt)
    with imap_client(external, "imap_tls", ctx) as im:
        assert imap_xoauth2(im, alice.address, second["access_token"]) == "OK"


async def test_mint_and_introspection_need_their_secrets(sandbox: Sandbox,
                                                         external: dict[str, Any]) -> None:
    o = external["oauth"]
    base = o["mint_url"].rsplit("/", 1)[0]
    body = b'{"email": "someone@example.com"}'
    for auth in ({}, {"Authorization": "Bearer wrong"},
                 {"Authorization": f"Bearer {o['client_secret']}"}):
        assert http_status(urllib.request.Request(
            o["mint_url"], data=body, method="POST",
            headers={"Content-Type": "application/json", **auth})) == 401
    # The client mailforge is (id and secret from sandbox.json) cannot introspect:
    # only Dovecot's own client can.
    form = (f"token=x&client_id={o['client_id']}&client_secret={o['client_secret']}").encode()
    assert http_status(urllib.request.Request(
        base + "/introspect", data=form, method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"})) == 401


async def test_password_and_master_user_logins_of_mailforge_still_work(
        sandbox: Sandbox, boxes: tuple[Box, Box]) -> None:
    """mailforge's own listeners (127.0.0.1, plaintext) are unchanged: the daemon's
    master-user login and a mailbox's password login work, and no bearer token is
    needed or taken there for them."""
    alice, _ = boxes
    cfg = config_mod.load(sandbox.info["config_path"])
    ep = sandbox.info["imap"]
    with imaplib.IMAP4(ep["host"], ep["port"], timeout=15) as im:
        assert im.login(login_name(alice.address, cfg), cfg.mail.master_password)[0] == "OK"
    with imaplib.IMAP4(ep["host"], ep["port"], timeout=15) as im:
        assert im.login(alice.address, alice.password)[0] == "OK"
    sub = sandbox.info["submission"]
    with smtplib.SMTP(sub["host"], sub["port"], timeout=15) as s:
        assert s.login(login_name(alice.address, cfg), cfg.mail.master_password)[0] == 235
    with smtplib.SMTP(sub["host"], sub["port"], timeout=15) as s:
        assert s.login(alice.address, alice.password)[0] == 235


async def test_no_token_or_secret_in_the_oauth_server_log(
        sandbox: Sandbox, external: dict[str, Any], ctx: ssl.SSLContext,
        boxes: tuple[Box, Box], oauth_mint: Callable[..., str]) -> None:
    alice, _ = boxes
    token = access_token(sandbox, oauth_mint(alice.address))["access_token"]
    with imap_client(external, "imap_tls", ctx) as im:
        assert imap_xoauth2(im, alice.address, token) == "OK"
    text = Path(sandbox.info["logs"]["oauth"]).read_text()
    assert "sbx-rt-" not in text and "sbx-at-" not in text
    for key in ("oauth_client_secret", "oauth_dovecot_secret", "oauth_mint_secret"):
        assert sandbox.info["secrets"][key] not in text
    assert "refresh grant for" in text  # it does log, without the secrets


async def test_tokens_survive_a_restart_of_the_oauth_server(
        sandbox: Sandbox, external: dict[str, Any], ctx: ssl.SSLContext,
        boxes: tuple[Box, Box], oauth_mint: Callable[..., str]) -> None:
    alice, _ = boxes
    rt = oauth_mint(alice.address)
    token = access_token(sandbox, rt)["access_token"]
    revoked = oauth_mint(alice.address)
    oauth.revoke(sandbox.info, refresh_token=revoked)
    sandbox.stop_service("oauth")
    sandbox.start_service("oauth")
    with imap_client(external, "imap_tls", ctx) as im:
        assert imap_xoauth2(im, alice.address, token) == "OK"
    assert access_token(sandbox, rt)["access_token"] != token
    with pytest.raises(urllib.error.HTTPError):
        access_token(sandbox, revoked)
    journal = (sandbox.dir / "oauth" / "tokens.jsonl").read_text()
    assert rt not in journal and token not in journal  # digests only


def test_the_test_ca_is_made_once_and_renewed_when_due(tmp_path: Path) -> None:
    names, ips = ["mail.sandbox.test"], ["127.0.0.2"]
    first = tls.ensure(tmp_path, names, ips)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert tls.ensure(tmp_path, names, ips) == first
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert oct(first.key_file.stat().st_mode & 0o777) == "0o600"
    # A new name: a new server certificate from the same CA; the CA file is kept.
    tls.ensure(tmp_path, names, [*ips, "127.0.0.9"])
    assert first.ca_file.read_bytes() == before["ca.pem"]
    assert first.cert_file.read_bytes() != before["server.pem"]
    # The server certificate chains to the CA, the bad one does not (the handshakes
    # above show it to OpenSSL; here, the signatures).
    ca = x509.load_pem_x509_certificate(first.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(first.cert_file.read_bytes())
    bad = x509.load_pem_x509_certificate(first.bad_cert_file.read_bytes())
    assert server.issuer == ca.subject and bad.issuer != ca.subject
    server.verify_directly_issued_by(ca)
