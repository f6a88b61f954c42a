"""Issue 12, the transport of connected mailboxes as pure logic: error classification,
secrets hidden from every repr and error, AUTH done once with the right mechanism,
the Sent folder found in LIST answers, the OAuth token response parsed, and the
per-host pool's bounds, fairness and reuse rules (with fake connections)."""

from __future__ import annotations

import asyncio
import base64
import errno
import smtplib
import socket
import ssl
from dataclasses import dataclass, field

import aioimaplib
import pytest

from mailforge import netguard
from mailforge.connected import oauth
from mailforge.connected.imap import sent_folder
from mailforge.connected.network import Network, classify
from mailforge.connected.pool import HostPool
from mailforge.connected.settings import REASONS, Endpoint, RemoteError, Secrets, scrub, server_text
from mailforge.connected.smtp import smtp_login

EP = Endpoint("smtp.example.com", 465, "tls", "sarah@example.com")
PW = "hunter2-very-secret"


# ---------------------------------------------------------------- classification

def _cert_error() -> ssl.SSLCertVerificationError:
    e = ssl.SSLCertVerificationError(1, "certificate verify failed")
    e.verify_message = "unable to get local issuer certificate"
    return e


def _ssl_error() -> ssl.SSLError:
    e = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    e.reason = "WRONG_VERSION_NUMBER"
    return e


@pytest.mark.parametrize("exc,reason,words", [
    (netguard.Blocked("smtp.example.com"), "blocked", "not connect to"),
    (smtplib.SMTPAuthenticationError(535, b"5.7.8 Username and Password not accepted"),
     "auth_failed", "refused the login for sarah@example.com"),
    (smtplib.SMTPAuthenticationError(534, b"5.7.9 Application-specific password required"),
     "auth_failed", "Application-specific"),
    (smtplib.SMTPAuthenticationError(538, b"Encryption required"), "smtp_rejected", "538"),
    (smtplib.SMTPAuthenticationError(454, b"Temporary authentication failure"),
     "smtp_rejected", "454"),
    (smtplib.SMTPHeloError(501, b"bad EHLO"), "smtp_rejected", "501"),
    (smtplib.SMTPConnectError(554, b"go away"), "smtp_rejected", "554"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed"), "unreachable",
     "closed the connection"),
    (smtplib.SMTPServerDisconnected("Connection unexpectedly closed: timed out"), "timeout",
     "in time"),
    (_cert_error(), "tls_error", "not trusted: unable to get local issuer"),
    (_ssl_error(), "tls_error", "try security starttls"),
    (TimeoutError(), "timeout", "did not answer in time"),
    (TimeoutError("timed out"), "timeout", "in time"),
    (aioimaplib.CommandTimeout(None), "timeout", "in time"),  # type: ignore[arg-type]
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "unreachable",
     "no such host"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "unreachable", "refused"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable", "no route"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), "unreachable", "closed"),
    (aioimaplib.Abort("command LIST illegal in state NONAUTH"), "imap_error", "illegal"),
])
def test_classify(exc: BaseException, reason: str, words: str) -> None:
    err = classify(exc, EP, (PW,))
    assert err.reason == reason and err.reason in REASONS
    assert words in err.detail, err.detail
    assert PW not in str(err)


def test_classify_scrubs_a_secret_the_server_echoes() -> None:
    b64 = base64.b64encode(PW.encode()).decode()
    err = classify(smtplib.SMTPAuthenticationError(535, f"bad {PW} {b64}".encode()), EP, (PW,))
    assert PW not in str(err) and b64 not in str(err) and "***" in err.detail


def test_remote_error_names_only_known_reasons() -> None:
    with pytest.raises(ValueError):
        RemoteError("no_such_reason", "x")
    e = RemoteError("timeout", "slow")
    assert str(e) == "timeout: slow" and e.reason == "timeout" and e.detail == "slow"


def test_secrets_never_in_repr_or_str() -> None:
    s = Secrets(smtp_password=PW, imap_password="imap-" + PW, access_token="tok-" + PW)
    for text in (repr(s), str(s), f"{s}", repr([s]), repr({"s": s})):
        assert PW not in text and "***" in text
    assert s.imap_secret == "imap-" + PW
    assert Secrets(smtp_password=PW).imap_secret == PW
    g = oauth.Grant("https://t.example/token", "client", "csecret-" + PW, "refresh-" + PW)
    t = oauth.AccessToken("access-" + PW, __import__("datetime").datetime.now(), "rot-" + PW)
    for text in (repr(g), str(g), repr(t), str(t)):
        assert PW not in text
    assert "client" in repr(g) and "t.example" in repr(g)


def test_scrub_makes_one_short_printable_line() -> None:
    out = scrub("line one\r\nline\x00two " + "x" * 1000, (PW,))
    assert "\n" not in out and "\x00" not in out and len(out) <= 300
    assert server_text(b"\xff\xfe bad utf8") .endswith("bad utf8")


# ---------------------------------------------------------------- SMTP AUTH (fake session)

@dataclass
class FakeSMTP:
    mechs: str | None
    replies: list[tuple[int, bytes]]
    sent: list[tuple[str, str]] = field(default_factory=list)

    @property
    def esmtp_features(self) -> dict[str, str]:
        return {"auth": self.mechs} if self.mechs is not None else {}

    def has_extn(self, name: str) -> bool:
        return name.lower() in self.esmtp_features

    def docmd(self, cmd: str, args: str = "") -> tuple[int, bytes]:
        self.sent.append((cmd, args))
        return self.replies.pop(0)


def _login(fake: FakeSMTP, secrets: Secrets, auth: str = "password",
           ep: Endpoint = EP) -> None:
    smtp_login(fake, ep, auth, secrets)  # type: ignore[arg-type]


def test_smtp_plain_once_even_when_refused() -> None:
    fake = FakeSMTP("LOGIN PLAIN CRAM-MD5", [(535, b"5.7.8 bad credentials")])
    with pytest.raises(RemoteError) as err:
        _login(fake, Secrets(smtp_password=PW))
    assert err.value.reason == "auth_failed"
    assert len(fake.sent) == 1 and fake.sent[0][1].startswith("PLAIN ")
    assert base64.b64decode(fake.sent[0][1][6:]) == f"\0{EP.username}\0{PW}".encode()
    assert PW not in str(err.value) and fake.sent[0][1][6:] not in str(err.value)


def test_smtp_login_mechanism_and_non_ascii_password() -> None:
    fake = FakeSMTP("LOGIN", [(334, b"VXNlcm5hbWU6"), (235, b"ok")])
    _login(fake, Secrets(smtp_password="pässwörd"))
    assert [c for c, _ in fake.sent] == ["AUTH", base64.b64encode("pässwörd".encode()).decode()]


def test_smtp_auth_missing_or_unsupported() -> None:
    with pytest.raises(RemoteError) as err:
        _login(FakeSMTP(None, []), Secrets(smtp_password=PW),
               ep=Endpoint("h.example", 587, "none", "u"))
    assert err.value.reason == "smtp_rejected" and "security tls or starttls" in err.value.detail
    with pytest.raises(RemoteError) as err:
        _login(FakeSMTP("CRAM-MD5", []), Secrets(smtp_password=PW))
    assert err.value.reason == "smtp_rejected" and "CRAM-MD5" in err.value.detail
    with pytest.raises(RemoteError) as err:
        _login(FakeSMTP("PLAIN", []), Secrets(access_token="t"), auth="xoauth2")
    assert err.value.reason == "smtp_rejected" and "XOAUTH2" in err.value.detail
    with pytest.raises(RemoteError) as err:
        _login(FakeSMTP("XOAUTH2", []), Secrets(), auth="xoauth2")
    assert err.value.reason == "oauth_failed"
    with pytest.raises(RemoteError) as err:
        _login(FakeSMTP("PLAIN", []), Secrets(smtp_password=PW),
               ep=Endpoint("h.example", 587, "tls", "evil\r\nRCPT TO:<x>"))
    assert err.value.reason == "auth_failed"


def test_smtp_xoauth2_error_challenge_is_answered_empty() -> None:
    token = "ya29.A0-token-value"
    fake = FakeSMTP("PLAIN XOAUTH2", [(334, b"eyJzdGF0dXMiOiI0MDEifQ=="),
                                      (535, b"5.7.8 Username and Password not accepted")])
    with pytest.raises(RemoteError) as err:
        _login(fake, Secrets(access_token=token), auth="xoauth2")
    assert err.value.reason == "auth_failed"
    cmd, blob = fake.sent[0]
    assert cmd == "AUTH" and blob.startswith("XOAUTH2 ")
    assert base64.b64decode(blob[8:]) == \
        f"user={EP.username}\x01auth=Bearer {token}\x01\x01".encode()
    assert fake.sent[1] == ("", "")
    assert token not in str(err.value) and blob[8:] not in str(err.value)
    ok = FakeSMTP("XOAUTH2", [(235, b"2.7.0 Accepted")])
    _login(ok, Secrets(access_token=token), auth="xoauth2")


# ---------------------------------------------------------------- IMAP LIST parsing

def test_sent_folder_from_list_answers() -> None:
    assert sent_folder([b'(\\HasNoChildren) "/" INBOX', b'(\\HasNoChildren \\Sent) "/" Sent',
                        b"LIST completed"]) == "Sent"
    assert sent_folder([b'(\\HasNoChildren \\Sent) "/" "[Gmail]/Sent Mail"']) \
        == "[Gmail]/Sent Mail"
    assert sent_folder([b'(\\Sent) "." {10}', bytearray(b"Sent Items"), b""]) == "Sent Items"
    assert sent_folder([b'(\\Sent \\HasNoChildren) NIL "Gesendete Objekte"']) \
        == "Gesendete Objekte"
    assert sent_folder([b'(\\Drafts) "/" Drafts', b'(\\HasNoChildren) "/" Sent']) is None
    # A name the quoted-string operations cannot carry is not offered.
    assert sent_folder([b'(\\Sent) "/" "bad\\"name"']) is None
    assert sent_folder([b'(\\Sentinel) "/" X']) is None


# ---------------------------------------------------------------- OAuth token response

def _parse(status: int, body: object, secrets: tuple[str, ...] = ()) -> oauth.AccessToken:
    import json
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return oauth._parse(status, raw, "oauth.example", secrets)


def test_token_response_parsing() -> None:
    t = _parse(200, {"access_token": "at-1", "token_type": "Bearer", "expires_in": 3599})
    assert t.token == "at-1" and t.refresh_token is None
    t = _parse(200, {"access_token": "at-2", "token_type": "bearer", "expires_in": "60",
                     "refresh_token": "rt-rotated"})
    assert t.refresh_token == "rt-rotated"
    for status, body, words in [
        (400, {"error": "invalid_grant", "error_description": "Token has been expired"},
         "invalid_grant (Token has been expired)"),
        (401, {"error": "invalid_client"}, "invalid_client"),
        (302, b"", "redirected"),
        (500, b"<html>oops</html>", "HTTP 500 without a token"),
        (200, b"not json", "without a token"),
        (200, {"token_type": "Bearer"}, "usable access_token"),
        (200, {"access_token": "a b\r\nc"}, "usable access_token"),
        (200, {"access_token": "at", "token_type": "mac"}, "not Bearer"),
    ]:
        with pytest.raises(RemoteError) as err:
            _parse(status, body)
        assert err.value.reason == "oauth_failed" and words in err.value.detail, err.value


def test_token_error_description_never_echoes_the_refresh_token() -> None:
    with pytest.raises(RemoteError) as err:
        _parse(400, {"error": "invalid_grant", "error_description": "bad token rt-SECRET-1"},
               ("rt-SECRET-1",))
    assert "rt-SECRET-1" not in str(err.value)


async def test_plain_http_token_url_only_to_operator_allowed_addresses() -> None:
    public = Network(netguard.Guard(), None, 2)
    with pytest.raises(RemoteError) as err:
        await oauth.refresh(public, oauth.Grant("http://8.8.8.8/token", "c", None, "rt"))
    assert err.value.reason == "oauth_failed" and "https" in err.value.detail
    for url in ("ftp://x.example/t", "not a url", "https:///nohost"):
        with pytest.raises(RemoteError) as err:
            await oauth.refresh(public, oauth.Grant(url, "c", None, "rt"))
        assert err.value.reason == "oauth_failed"
    with pytest.raises(RemoteError) as err:
        await oauth.refresh(public, oauth.Grant("https://10.1.2.3/token", "c", None, "rt"))
    assert err.value.reason == "blocked"
    loop = netguard.Guard.from_config(["127.0.0.0/8"])
    assert oauth._explicit(loop, "127.0.0.2") and oauth._explicit(loop, "::ffff:127.0.0.1")
    assert not oauth._explicit(loop, "8.8.8.8")


# ---------------------------------------------------------------- the pool (fakes)

@dataclass(eq=False)
class FakeConn:
    name: str
    alive: bool = True
    closed: bool = False


class Harness:
    def __init__(self, per_host: int = 2, per_mailbox: int = 2, idle: float = 60) -> None:
        self.made = 0
        self.closed: list[FakeConn] = []
        self.pool: HostPool[FakeConn] = HostPool(per_host, per_mailbox, idle, self._discard,
                                                 usable=lambda c: c.alive and not c.closed)

    async def _discard(self, c: FakeConn) -> None:
        await asyncio.sleep(0)
        c.closed = True
        self.closed.append(c)

    async def get(self, host: str, mb: str) -> FakeConn:
        c = await self.pool.acquire(host, mb)
        if c is None:
            self.made += 1
            c = FakeConn(f"{mb}#{self.made}")
        return c

    async def settle(self) -> None:
        for _ in range(10):
            await asyncio.sleep(0)


async def test_pool_reuses_per_mailbox_and_bounds_per_host() -> None:
    h = Harness(per_host=2)
    a = await h.get("H", "a")
    h.pool.release("H", "a", a, keep=True)
    assert await h.get("H", "a") is a and h.made == 1
    b = await h.get("H", "b")
    assert h.pool.held() == {"H": 2}
    # Full: c waits until a slot frees.
    waiter = asyncio.create_task(h.get("H", "c"))
    await h.settle()
    assert not waiter.done()
    h.pool.release("H", "b", b, keep=True)  # kept, but c waits: b's connection gives way
    c = await asyncio.wait_for(waiter, 1)
    await h.settle()
    assert b.closed and c.name.startswith("c#") and h.pool.held() == {"H": 2}
    # Other hosts have their own bound.
    x = await h.get("OTHER", "a")
    assert h.pool.held() == {"H": 2, "OTHER": 1}
    h.pool.release("OTHER", "a", x, keep=False)
    await h.settle()
    assert x.closed and h.pool.held() == {"H": 2}


async def test_pool_idle_of_another_mailbox_gives_way_at_once() -> None:
    h = Harness(per_host=2)
    a, b = await h.get("H", "a"), await h.get("H", "b")
    h.pool.release("H", "a", a, keep=True)
    h.pool.release("H", "b", b, keep=True)
    c = await asyncio.wait_for(h.get("H", "c"), 1)  # no wait: the oldest idle (a) closed
    assert a.closed and not b.closed and c.name.startswith("c#")
    assert h.pool.held() == {"H": 2}


async def test_pool_waiters_are_served_in_order_and_same_mailbox_gets_the_connection() -> None:
    h = Harness(per_host=1, per_mailbox=4)
    a = await h.get("H", "a")
    order: list[str] = []

    async def want(mb: str) -> FakeConn:
        c = await h.get("H", mb)
        order.append(mb)
        return c

    tasks = [asyncio.create_task(want(mb)) for mb in ("a", "b", "c")]
    await h.settle()
    h.pool.release("H", "a", a, keep=True)
    first = await asyncio.wait_for(tasks[0], 1)
    assert first is a  # handed over as is
    h.pool.release("H", "a", first, keep=True)
    second = await asyncio.wait_for(tasks[1], 1)
    await h.settle()
    assert a.closed and second.name.startswith("b#")
    h.pool.release("H", "b", second, keep=False)
    await asyncio.wait_for(tasks[2], 1)
    assert order == ["a", "b", "c"] and h.pool.held() == {"H": 1}


async def test_pool_never_reuses_failed_or_dead_or_expired() -> None:
    h = Harness(per_host=3, idle=0.05)
    a = await h.get("H", "a")
    h.pool.release("H", "a", a, keep=False)  # failed in use
    await h.settle()
    assert a.closed and h.pool.held() == {}
    b = await h.get("H", "a")
    b.alive = False  # the server closed it while idle
    h.pool.release("H", "a", b, keep=True)
    await h.settle()
    assert b.closed and h.pool.held() == {}
    c = await h.get("H", "a")
    h.pool.release("H", "a", c, keep=True)
    await asyncio.sleep(0.06)
    d = await h.get("H", "a")  # c expired: closed, its slot reused
    assert c.closed and d is not c and h.pool.held() == {"H": 1}
    h.pool.release("H", "a", d, keep=True)
    await asyncio.sleep(0.06)
    h.pool.reap()
    await h.settle()
    assert d.closed and h.pool.held() == {}


async def test_pool_a_slot_for_a_connect_that_failed_is_freed() -> None:
    h = Harness(per_host=1)
    assert await h.pool.acquire("H", "a") is None
    waiter = asyncio.create_task(h.get("H", "b"))
    await h.settle()
    h.pool.release("H", "a", None, keep=False)  # the connect failed
    b = await asyncio.wait_for(waiter, 1)
    assert b.name.startswith("b#") and h.pool.held() == {"H": 1}


async def test_pool_cancelled_waiter_loses_nothing() -> None:
    h = Harness(per_host=1)
    a = await h.get("H", "a")
    w1 = asyncio.create_task(h.get("H", "b"))
    w2 = asyncio.create_task(h.get("H", "c"))
    await h.settle()
    w1.cancel()
    await h.settle()
    h.pool.release("H", "a", a, keep=False)
    c = await asyncio.wait_for(w2, 1)
    assert c.name.startswith("c#") and h.pool.held() == {"H": 1}
    h.pool.release("H", "c", c, keep=True)
    await h.pool.close()
    assert c.closed and h.pool.held() == {}


async def test_pool_per_mailbox_bound() -> None:
    h = Harness(per_host=10, per_mailbox=2)
    a1, a2 = await h.get("H", "a"), await h.get("H", "a")
    third = asyncio.create_task(h.get("H", "a"))
    await h.settle()
    assert not third.done() and h.pool.held() == {"H": 2}
    h.pool.release("H", "a", a1, keep=True)
    assert await asyncio.wait_for(third, 1) is a1
    h.pool.release("H", "a", a1, keep=True)
    h.pool.release("H", "a", a2, keep=True)
    assert h.pool.idle_count() == 2 and h.pool._mailboxes == {}


async def test_500_mailboxes_hold_at_most_per_host() -> None:
    h = Harness(per_host=16, per_mailbox=2)
    peak = 0

    async def use(mb: str) -> None:
        nonlocal peak
        c = await h.get("smtp.provider.example:465", mb)
        peak = max(peak, sum(h.pool.held().values()))
        await asyncio.sleep(0)
        h.pool.release("smtp.provider.example:465", mb, c, keep=True)

    await asyncio.gather(*(use(f"usr_{i}") for i in range(500) for _ in range(2)))
    await h.settle()
    assert peak <= 16 and h.pool.held()["smtp.provider.example:465"] <= 16


def test_network_tls_context_verifies() -> None:
    n = Network(netguard.Guard(), None, 5)
    assert n.context.verify_mode == ssl.CERT_REQUIRED and n.context.check_hostname
    assert n.context.minimum_version >= ssl.TLSVersion.TLSv1_2
