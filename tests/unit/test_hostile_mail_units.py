"""Issue 9, the pure and local parts of the mail fixes: the outbound guard over many
address forms (and an aiohttp session through it against local receivers), canonical
message ids (hypothesis), reports as evidence, reputation thresholds, and the inbound
scanner isolating a failing mailbox (with a fake store and IMAP server)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given, settings
from hypothesis import strategies as st

from mailforge import config as config_mod
from mailforge import netguard, reputation, secretbox, webhooks
from mailforge.config import Config, ReputationConfig, WebhookConfig
from mailforge.mail import compose, reports
from mailforge.mail.imap import ImapError
from mailforge.mail.msgid import MessageIds, MessageRef
from mailforge.mail.service import MailService
from mailforge.store.queries import Q

# ------------------------------------------------------------------ the outbound guard

BLOCKED = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255",
    "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "169.254.0.1",
    "100.64.0.1", "100.127.255.255", "192.0.0.8", "192.0.2.1", "198.18.0.1",
    "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255",
    "::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1",
    "2001:db8::1", "100::1",
    # IPv4 inside IPv6: mapped, compatible, 6to4, NAT64 (well-known and local-use).
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "2002:7f00:1::1", "2002:a9fe:a9fe::", "2002:c0a8:101::1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1",
    # Teredo and other special-purpose ranges.
    "2001::1", "2001:10::1",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.128.0.1", "172.32.0.1",
          "192.169.0.1", "2606:4700:4700::1111", "2a00:1450:4001::200e",
          "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]


@pytest.mark.parametrize("addr", BLOCKED)
def test_guard_refuses_every_non_public_form(addr: str) -> None:
    ip = ipaddress.ip_address(addr)
    assert not netguard.is_public(ip)
    assert not netguard.Guard().allowed(addr)
    host = f"[{addr}]" if ":" in addr else addr
    with pytest.raises(netguard.Blocked):
        netguard.Guard().check_url(f"http://{host}:8080/x")
    errs = netguard.validate_url(f"http://{host}/hook", netguard.Guard())
    assert errs and errs[0].startswith("url: "), errs


@pytest.mark.parametrize("addr", PUBLIC)
def test_guard_allows_public_addresses(addr: str) -> None:
    assert netguard.Guard().allowed(addr)
    host = f"[{addr}]" if ":" in addr else addr
    assert netguard.validate_url(f"https://{host}/hook", netguard.Guard()) == []


def test_operator_ranges_allow_exactly_what_they_name() -> None:
    g = netguard.Guard.from_config(["127.0.0.0/8", "10.20.0.0/16", "fd00:1::/64"])
    for ok in ("127.0.0.1", "::ffff:127.0.0.1", "10.20.3.4", "fd00:1::5", "8.8.8.8"):
        assert g.allowed(ok), ok
    for bad in ("10.21.0.1", "169.254.169.254", "::1", "fd00:2::1", "192.168.0.1"):
        assert not g.allowed(bad), bad
    with pytest.raises(ValueError):
        netguard.Guard.from_config(["10.0.0.1/8"])  # host bits set: a typo, refused
    with pytest.raises(config_mod.ConfigError):
        config_mod.load(None, {"MAILFORGE__OUTBOUND__ALLOW_NETWORKS": "127.0.0.0/8,nonsense"})
    cfg = config_mod.load(None, {"MAILFORGE__OUTBOUND__ALLOW_NETWORKS": "127.0.0.0/8, ::1/128"})
    assert cfg.outbound.allow_networks == ("127.0.0.0/8", "::1/128")
    assert config_mod.load(None, {}).outbound.allow_networks == ()


@pytest.mark.parametrize(("url", "problem"), [
    ("http://localhost/x", "not allowed"),
    ("http://LOCALHOST./x", "not allowed"),
    ("http://api.localhost/x", "not allowed"),
    ("http://0x7f000001/", "four decimal numbers"),
    ("http://0177.0.0.1/", "DNS name or an IP address"),
    ("http://0x7f.1/", "DNS name or an IP address"),
    ("http://2130706433/", "DNS name or an IP address"),
    ("http://127.1/", "DNS name or an IP address"),
    ("http://user:pw@example.com/", "user name or password"),
    ("http://@example.com/", "user name or password"),
    ("http://example.com@127.0.0.1/", "user name or password"),
    ("http://example.com:0/", "port"),
    ("http://example.com:99999/", "url:"),
    ("http://example.com:/", "port"),
    ("ftp://example.com/", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("gopher://127.0.0.1:5432/", "http:// or https://"),
    ("http://exa mple.com/", "spaces"),
    ("http://example.com/\n", "control"),
    ("http://exämple.com/", "non-ASCII"),
    ("http://ex_ample.com/", "DNS name"),
    ("http://[fe80::1%25eth0]/", "url:"),
    ("http://" + "a" * 2000 + ".com/", "characters"),
    ("", "characters"),
    ("http://example.com/#x", "fragment"),
])
def test_webhook_url_validation_names_the_field(url: str, problem: str) -> None:
    errs = netguard.validate_url(url, netguard.Guard())
    assert len(errs) == 1 and errs[0].startswith("url: ") and problem in errs[0], errs


def test_webhook_url_validation_non_strings() -> None:
    for value in (None, 5, ["http://example.com/"], {"u": 1}):
        assert netguard.validate_url(value, netguard.Guard()) == ["url: must be a string"]


class _FakeDns(AbstractResolver):
    """A DNS that answers what the test says (e.g. a rebinding attacker's name)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        return [ResolveResult(hostname=host, host=a, port=port,
                              family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST)
                for a in self.answers[host]]

    async def close(self) -> None:
        pass


async def test_guarded_resolver_refuses_any_private_answer() -> None:
    dns = _FakeDns({"public.test": ["93.184.216.34"],
                    "mixed.test": ["93.184.216.34", "10.0.0.7"],
                    "meta.test": ["169.254.169.254"], "empty.test": []})
    r = netguard.GuardedResolver(netguard.Guard(), dns)
    assert [x["host"] for x in await r.resolve("public.test", 80)] == ["93.184.216.34"]
    for name in ("mixed.test", "meta.test", "empty.test"):
        with pytest.raises(netguard.Blocked):
            await r.resolve(name, 80)
    with pytest.raises(netguard.Blocked):
        await r.resolve("localhost", 80)
    assert "localhost" not in dns.asked  # refused without asking anyone


@contextlib.asynccontextmanager
async def _receiver(status: int = 204, host: str = "127.0.0.1",
                    headers: dict[str, str] | None = None
                    ) -> AsyncIterator[tuple[int, list[web.Request]]]:
    seen: list[web.Request] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(request)
        await request.read()
        return web.Response(status=status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield port, seen
    finally:
        await runner.cleanup()


def _dispatcher(guard: netguard.Guard, dns: AbstractResolver | None = None
                ) -> webhooks.Dispatcher:
    d = webhooks.Dispatcher(None, secretbox.SecretBox(b"k" * 32),  # type: ignore[arg-type]
                            WebhookConfig(timeout=5.0), guard)
    if dns is not None:
        d.guard = guard
        d.session = lambda: aiohttp.ClientSession(  # type: ignore[method-assign]
            connector=aiohttp.TCPConnector(resolver=netguard.GuardedResolver(guard, dns)),
            timeout=aiohttp.ClientTimeout(total=5))
    return d


async def test_delivery_to_loopback_is_blocked_and_reveals_nothing() -> None:
    async with _receiver() as (port, seen):
        d = _dispatcher(netguard.Guard())
        async with d.session() as session:
            for url in (f"http://127.0.0.1:{port}/h", f"http://localhost:{port}/h",
                        f"http://[::ffff:127.0.0.1]:{port}/h"):
                status, err = await d.post(session, url, b"{}", {})
                assert (status, err) == (None, netguard.BLOCKED_TEXT), url
            # A closed port on loopback looks exactly the same as an open one.
            status, err = await d.post(session, "http://127.0.0.1:1/h", b"{}", {})
            assert (status, err) == (None, netguard.BLOCKED_TEXT)
        assert seen == []
        # The operator's range lets the same receiver in.
        allowed = _dispatcher(netguard.Guard.from_config(["127.0.0.0/8"]))
        async with allowed.session() as session:
            assert await allowed.post(session, f"http://127.0.0.1:{port}/h", b"{}",
                                      {}) == (204, None)
        assert len(seen) == 1


async def test_connection_goes_to_the_checked_address_with_the_name_as_host() -> None:
    """DNS rebinding: the name answers a private address when it is used; the guard
    sees that answer and the connector connects to exactly it (no second lookup)."""
    async with _receiver() as (port, seen):
        dns = _FakeDns({"rebind.test": ["127.0.0.1"]})
        blocked = _dispatcher(netguard.Guard(), dns)
        async with blocked.session() as session:
            assert await blocked.post(session, f"http://rebind.test:{port}/h", b"{}",
                                      {}) == (None, netguard.BLOCKED_TEXT)
        assert seen == []
        dns2 = _FakeDns({"rebind.test": ["127.0.0.1"]})
        ok = _dispatcher(netguard.Guard.from_config(["127.0.0.0/8"]), dns2)
        async with ok.session() as session:
            assert await ok.post(session, f"http://rebind.test:{port}/h", b"{}",
                                 {}) == (204, None)
        assert dns2.asked == ["rebind.test"]
        assert seen[0].headers["Host"] == f"rebind.test:{port}"


async def test_redirects_are_not_followed() -> None:
    async with _receiver() as (inner_port, inner_seen):
        async with _receiver(302, headers={"Location": f"http://127.0.0.1:{inner_port}/x"}
                             ) as (port, seen):
            d = _dispatcher(netguard.Guard.from_config(["127.0.0.1/32"]))
            async with d.session() as session:
                status, err = await d.post(session, f"http://127.0.0.1:{port}/h", b"{}", {})
            assert (status, err) == (302, None) and len(seen) == 1 and inner_seen == []


# ------------------------------------------------------------------ message ids

_REFS = st.builds(
    MessageRef,
    mailbox_id=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1,
                       max_size=40),
    folder=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e,
                                          exclude_characters='"\\*%\0'),
                   min_size=1, max_size=60).filter(lambda f: f.upper() != "INBOX")
    | st.just("INBOX"),
    uidvalidity=st.integers(min_value=0, max_value=2**32 - 1),
    uid=st.integers(min_value=1, max_value=2**32 - 1))


def _variants(value: str) -> Iterator[str]:
    """Other spellings of the same bytes, and near misses."""
    text = value[4:]
    yield value + "="
    yield value + "=="
    yield value + "\n"
    yield " " + value
    yield value.upper()
    yield "MSG_" + text
    yield "msg_" + text.replace("-", "+").replace("_", "/")
    yield "msg_" + text + "A"
    yield value[:-1]
    rem = len(text) % 4
    if rem:
        # The last character carries 2 (rem 3) or 4 (rem 2) unused bits: change them.
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        i = alphabet.index(text[-1])
        spare = 4 if rem == 2 else 2
        for low in range(1, 2 ** spare):
            yield "msg_" + text[:-1] + alphabet[(i & ~(2 ** spare - 1)) | low]


@settings(max_examples=300, deadline=None)
@given(_REFS)
def test_message_ids_have_exactly_one_spelling(ref: MessageRef) -> None:
    ids = MessageIds(secretbox.SecretBox(b"k" * 32))
    value = ids.encode(ref)
    assert ids.decode(value) == ref
    for other in _variants(value):
        if other != value:
            assert ids.decode(other) is None, other
    # Padding or the standard alphabet spelled in base64 decode to the same bytes, but
    # are not the id.
    raw = base64.urlsafe_b64decode(value[4:] + "=" * (-len(value[4:]) % 4))
    assert ids.decode("msg_" + base64.b64encode(raw).decode()) in (None, ref)
    if base64.b64encode(raw).decode() != value[4:]:
        assert ids.decode("msg_" + base64.b64encode(raw).decode()) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_arbitrary_strings_never_decode(value: str) -> None:
    assert MessageIds(secretbox.SecretBox(b"k" * 32)).decode("msg_" + value) is None


# ------------------------------------------------------------------ reports as evidence


def _report(report_type: str, machine_type: str, machine: str, original_type: str,
            original: str) -> bytes:
    b = "b" + secrets.token_hex(4)
    return (f"From: MAILER-DAEMON@mx.example\r\nTo: me@mine.example\r\nSubject: r\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/report; "
            f'report-type={report_type}; boundary="{b}"\r\n\r\n'
            f"--{b}\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            f"--{b}\r\nContent-Type: {machine_type}\r\n\r\n{machine}\r\n"
            f"--{b}\r\nContent-Type: {original_type}\r\n\r\n{original}\r\n"
            f"--{b}--\r\n").encode()


DSN_FIELDS = ("Reporting-MTA: dns; mx.example\r\n\r\n"
              "Final-Recipient: rfc822; Bob@Remote.example\r\nAction: failed\r\n"
              "Status: 5.1.1\r\n\r\n"
              "Final-Recipient: rfc822; carol@remote.example\r\nAction: delayed\r\n"
              "Status: 4.4.1")


def test_reports_give_the_original_message_id_and_failed_recipients() -> None:
    orig = "From: me@mine.example\r\nMessage-ID: <abc.123@mine.example>\r\nSubject: hi"
    for otype, body in (("text/rfc822-headers", orig),
                        ("message/rfc822", orig + "\r\n\r\nbody text")):
        rep = reports.parse(compose.parse(_report(
            "delivery-status", "message/delivery-status", DSN_FIELDS, otype, body)))
        assert rep == reports.Report("bounce", "abc.123@mine.example",
                                     ("bob@remote.example",))
    arf = reports.parse(compose.parse(_report(
        "feedback-report", "message/feedback-report",
        "Feedback-Type: abuse\r\nVersion: 1\r\nOriginal-Message-ID: <f@mine.example>",
        "text/plain", "nothing attached")))
    assert arf == reports.Report("complaint", "f@mine.example", ())
    bare = reports.parse(compose.parse(_report(
        "feedback-report", "message/feedback-report", "Feedback-Type: abuse\r\nVersion: 1",
        "text/rfc822-headers", "From: x@y.example\r\nSubject: no id")))
    assert bare == reports.Report("complaint", None, ())
    delayed = DSN_FIELDS.replace("Action: failed", "Action: delayed")
    assert reports.parse(compose.parse(_report(
        "delivery-status", "message/delivery-status", delayed, "text/rfc822-headers",
        orig))) is None
    assert reports.parse(compose.parse(b"From: a@b\r\nSubject: x\r\n\r\nhello")) is None
    for bad in ("abc", "<a b@c>", "<a<b@c>", "<>", "<" + "a" * 300 + ">", "<a@b> <c@d>"):
        assert reports.normal_msgid(bad) is None, bad
    assert reports.normal_msgid("  <a.b@c>\r\n") == "a.b@c"


def test_reputation_blocks_only_with_several_reports() -> None:
    cfg = ReputationConfig()
    assert reputation.assess(0, 0, 1, cfg).status == "watch"  # one report never blocks
    assert reputation.assess(0, 1, 0, cfg).status == "watch"
    assert reputation.assess(5, 2, 2, cfg).status == "watch"
    assert reputation.assess(5, 0, 3, cfg).status == "blocked"
    assert reputation.assess(5, 3, 0, cfg).status == "blocked"
    assert reputation.assess(100_000, 3, 0, cfg).status == "healthy"


# ------------------------------------------------------------------ the scanner


class _Conn:
    def __init__(self, store: _Store) -> None:
        self.store = store

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if query == Q.mail_watched:
            self.store.excluded.append(list(args[2]))
            return [r for r in self.store.rows if r["mailbox_id"] not in args[2]]
        return []

    async def fetchrow(self, query: str, *args: Any) -> Any:
        return None

    async def fetchval(self, query: str, *args: Any) -> Any:
        return None

    async def execute(self, query: str, *args: Any) -> str:
        if query == Q.mail_scan_record:
            self.store.recorded[args[0]] = args[2]
        elif query == Q.webhook_enqueue:
            self.store.events.append((args[1], args[2]))
        return "OK"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


class _Store:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.excluded: list[list[str]] = []
        self.recorded: dict[str, int] = {}
        self.events: list[tuple[str, str]] = []

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        yield _Conn(self)


class _Imap:
    """An IMAP server with one good mailbox (3 new messages), a name that cannot log
    in, and a mailbox whose server breaks mid-scan with an unexpected error."""

    def __init__(self) -> None:
        self.sessions: list[str] = []

    @contextlib.asynccontextmanager
    async def session(self, address: str, keep: bool = True) -> AsyncIterator[str]:
        self.sessions.append(address)
        if "\n" in address:
            raise ImapError("IMAP login refused: the mailbox name is not a plain address")
        yield address

    async def select(self, c: str, folder: str) -> int:
        if c.startswith("broken"):
            raise RuntimeError("server said something no one expected")
        return 7

    async def uid_search(self, c: str, *criteria: str) -> list[int]:
        return [1, 2, 3]

    async def uid_fetch(self, c: str, uids: str, parts: str
                        ) -> list[tuple[str, list[tuple[str, bytes]]]]:
        return [(f"{u} FETCH (UID {u} BODY[HEADER]", [(
            "BODY[HEADER]", f"From: x@y.example\r\nSubject: m{u}\r\n\r\n".encode())])
            for u in uids.split(",")]


async def test_scanner_isolates_a_failing_mailbox_and_a_broken_message() -> None:
    rows = [{"mailbox_id": mid, "address": addr, "account_id": "acc_1",
             "domain_id": "dom_1", "last_uid": 0, "uidvalidity": 7}
            for mid, addr in (("usr_bad", "alice\n@d.example"),
                              ("usr_broken", "broken@d.example"),
                              ("usr_good", "good@d.example"))]
    store = _Store(rows)
    cfg = Config()
    cfg = config_mod.dataclasses.replace(
        cfg, mail=config_mod.dataclasses.replace(cfg.mail, master_password="x"))
    svc = MailService(store, cfg, secretbox.SecretBox(b"k" * 32))  # type: ignore[arg-type]
    svc.imap = _Imap()  # type: ignore[assignment]
    real = svc._event_data

    def event_data(r: Any, validity: int, uid: int, hdr: Any) -> dict[str, Any]:
        if uid == 2:
            raise ValueError("a header nothing can parse")
        return real(r, validity, uid, hdr)

    svc._event_data = event_data  # type: ignore[method-assign]
    assert await svc.scan_once() == 3
    # The good mailbox was scanned to its end, message 2 passed over.
    assert store.recorded == {"usr_good": 3}
    assert sorted(e[1] for e in store.events) == ["evt_in_usr_good:7:1", "evt_in_usr_good:7:3"]
    # The two failing mailboxes back off; the next pass leaves them out of the query.
    assert set(svc._scan_failures) == {"usr_bad", "usr_broken"}
    assert await svc.scan_once() == 1
    assert sorted(store.excluded[-1]) == ["usr_bad", "usr_broken"]
    # Once the backoff ran out they are tried again, and a success clears it.
    svc._scan_failures["usr_broken"] = (1, 0.0)
    svc.imap.select = _ok_select  # type: ignore[method-assign]
    await svc.scan_once()
    assert "usr_broken" not in svc._scan_failures and store.recorded["usr_broken"] == 3
    assert svc._scan_failures["usr_bad"][0] == 1
    svc.submitter.close()


async def _ok_select(c: str, folder: str) -> int:
    return 7


async def test_scan_loop_survives_an_unexpected_error() -> None:
    cfg = Config()
    svc = MailService(_Store([]), cfg, secretbox.SecretBox(b"k" * 32))  # type: ignore[arg-type]
    calls = 0

    async def boom(limit: int = 200) -> int:
        nonlocal calls
        calls += 1
        raise KeyError("a bug in one pass")

    svc.scan_once = boom  # type: ignore[method-assign]
    cfg2 = config_mod.dataclasses.replace(
        cfg, mail=config_mod.dataclasses.replace(cfg.mail, scan_interval=0.01))
    svc.cfg = cfg2
    stop = asyncio.Event()
    task = asyncio.create_task(svc._scan_loop(stop))
    deadline = asyncio.get_running_loop().time() + 5
    while calls < 3 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert calls >= 3  # the loop went on after each failure
    svc.submitter.close()


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(max_size=60).map(lambda t: "http://" + t),
                 st.text(max_size=60).map(lambda t: "https://[" + t)))
def test_url_validation_never_raises_and_always_names_the_field(value: str) -> None:
    errs = netguard.validate_url(value, netguard.Guard())
    assert all(e.startswith("url: ") for e in errs)
    if not errs:
        # Whatever passes is an http(s) URL whose literal host, if any, is public.
        assert value.startswith(("http://", "https://"))
        netguard.Guard().check_url(value)


async def test_guard_resolve_for_other_clients() -> None:
    g = netguard.Guard()
    assert await g.resolve("93.184.216.34", 25) == ["93.184.216.34"]
    for host in ("127.0.0.1", "[::1]", "localhost", "169.254.169.254"):
        with pytest.raises(netguard.Blocked):
            await g.resolve(host, 993)
    # A name the hosts file maps to loopback: resolved locally, then refused.
    with pytest.raises(netguard.Blocked):
        await g.resolve(socket.gethostname(), 993) if _loopback_hostname() else \
            await g.resolve("localhost", 993)
    assert await netguard.Guard.from_config(["127.0.0.0/8"]).resolve("127.0.0.1", 1) == \
        ["127.0.0.1"]


def _loopback_hostname() -> bool:
    try:
        with open("/etc/hosts") as fh:
            return any(line.split()[:1] and line.split()[0].startswith("127.")
                       and socket.gethostname() in line.split()[1:] for line in fh)
    except OSError:
        return False


def test_inbox_has_one_spelling_in_message_ids() -> None:
    from mailforge.mail.msgid import canonical_folder

    ids = MessageIds(secretbox.SecretBox(b"k" * 32))
    assert canonical_folder("inbox") == canonical_folder("InBoX") == "INBOX"
    assert canonical_folder("Sent") == "Sent" and canonical_folder("sent") == "sent"
    assert ids.decode(ids.encode(MessageRef("usr_a", "inbox", 1, 1))) is None
    assert ids.decode(ids.encode(MessageRef("usr_a", "INBOX", 1, 1))) is not None
