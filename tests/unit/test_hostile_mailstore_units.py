"""Issue 9 units (items 1, 2, 11): the From guard's parsing and decision, its milter
protocol spoken over a real socket, id-keyed homes with the legacy migration and the
deleted domain's destruction on real files and a real SQLite database, the signer's
tables surviving a second ``ensure_tables``, and the rendered Postfix/signer settings."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import struct
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailforge.backends.postfix_dovecot.backend import PostfixDovecotBackend
from mailforge.backends.postfix_dovecot.layout import Layout, ensure_wal_files
from mailforge.backends.postfix_dovecot.render import render
from mailforge.config import DkimConfig, MailboxesConfig, PostfixDovecotConfig
from mailforge.dkim.keys import generate
from mailforge.dkim.signer import SigningKey, ensure_tables, render_conf, write_tables
from mailforge.errors import PermanentError
from mailforge.milter import fromguard
from mailforge.milter.fromguard import (
    BAD_FROM,
    NO_LOGIN,
    NOT_OWNED,
    decide,
    from_address,
    login_name,
    parse_sender_map,
)
from mailforge.models import Domain, DomainState, Mailbox
from mailforge.sandbox.stack import render_deploy

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HASH = "{SHA512-CRYPT}$6$abcdefgh$" + "A" * 86

SENDERS = parse_sender_map(
    "alice@x.test alice@x.test\n"
    "sales@x.test alice@x.test,bob@x.test\n"
    "bob@x.test bob@x.test\n"
    "ceo@y.test ceo@y.test\n")


# ----------------------------------------------------------------- From guard (pure)


@pytest.mark.parametrize("value,expected", [
    (b"alice@x.test", "alice@x.test"),
    (b"Alice <ALICE@X.TEST>", "alice@x.test"),
    (b'"Alice, Example"\n <alice@x.test>', "alice@x.test"),
    (b"=?utf-8?q?Alice?= <alice@x.test>", "alice@x.test"),
    (b"alice@x.test, ceo@y.test", None),           # two addresses
    (b'"alice@x.test" <ceo@y.test>', "ceo@y.test"),  # the display name is not the address
    (b"<alice@x.test> ceo@y.test", None),
    (b"undisclosed-recipients:;", None),
    (b"", None),
    (b"alice@x.test\r\n", None),
    (b"alice@x.test\x00", None),
    (b'"alice@x.test"@y.test', None),              # quoted local part
    (b"alice@x.test <ceo@y.test>", None),
    (b"a<@x.test:ceo@y.test>", None),               # source route
    (b"\xff\xfe@x.test", None),                     # not UTF-8
])
def test_from_address_is_one_plain_address_every_parser_agrees_on(
        value: bytes, expected: str | None) -> None:
    assert from_address([value]) == expected


def test_from_address_needs_exactly_one_from_header() -> None:
    assert from_address([]) is None
    assert from_address([b"alice@x.test", b"alice@x.test"]) is None


def test_login_name_strips_the_master_user() -> None:
    assert login_name("Alice@X.test") == "alice@x.test"
    assert login_name("alice@x.test*mailforge") == "alice@x.test"
    assert login_name("") == ""


@pytest.mark.parametrize("login,header,refusal", [
    ("alice@x.test", b"alice@x.test", None),
    ("alice@x.test*mailforge", b"Alice <alice@x.test>", None),
    ("alice@x.test", b"sales@x.test", None),          # an alias delivering to alice
    ("bob@x.test", b"sales@x.test", None),
    ("alice@x.test", b"alice+news@x.test", None),     # extension, as Postfix looks up
    ("alice@x.test", b"ceo@y.test", NOT_OWNED),       # another tenant
    ("alice@x.test", b"bob@x.test", NOT_OWNED),       # a sibling mailbox
    ("alice@x.test", b"nobody@x.test", NOT_OWNED),    # not in the map at all
    ("alice@x.test", b"ceo@y.test, alice@x.test", BAD_FROM),
    ("", b"alice@x.test", NO_LOGIN),                  # not authenticated
])
def test_decide(login: str, header: bytes, refusal: str | None) -> None:
    assert decide(SENDERS, login, [header])[1] == refusal


def test_refusals_are_permanent_5_7_1() -> None:
    for text in (NOT_OWNED, BAD_FROM, NO_LOGIN):
        assert text.startswith("553 5.7.1 ")
    assert NOT_OWNED == "553 5.7.1 From header not owned by the login"


# ---------------------------------------------------------- From guard over a socket


def _pkt(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", 1 + len(data)) + cmd + data


async def _read(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    body = await reader.readexactly(n)
    return body[:1], body[1:]


async def _converse(port: int, login: str, headers: list[tuple[bytes, bytes]]
                    ) -> list[tuple[bytes, bytes]]:
    """Speak to the guard as Postfix does; the replies to MAIL, headers, EOH, EOM."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_pkt(b"O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF)))
    cmd, data = await _read(reader)
    assert cmd == b"O"
    version, actions, proto = struct.unpack(">III", data[:12])
    assert version == 6 and actions == 0 and proto & fromguard.protocol.P_NOBODY
    replies = []
    writer.write(_pkt(b"D", b"M{auth_authen}\0" + login.encode() + b"\0i\0ABC123\0"))
    writer.write(_pkt(b"M", b"<env@x.test>\0"))
    replies.append(await _read(reader))
    for name, value in headers:
        writer.write(_pkt(b"L", name + b"\0" + value + b"\0"))
        replies.append(await _read(reader))
    writer.write(_pkt(b"N"))
    replies.append(await _read(reader))
    if replies[-1][0] == b"c":
        writer.write(_pkt(b"E"))
        replies.append(await _read(reader))
    writer.write(_pkt(b"Q"))
    await writer.drain()
    writer.close()
    return replies


def test_guard_speaks_milter_and_reports_accepted_messages(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "state")
    layout.initialize()
    senders = layout.postfix_db
    with contextlib.closing(sqlite3.connect(f"file:{senders}", uri=True)) as db, db:
        db.execute("INSERT INTO mailboxes VALUES ('alice@x.test', 'x.test', 0, 'usr_a')")
    ensure_wal_files(senders)
    accepted: list[tuple[str, str, str | None]] = []

    async def on_accepted(login: str, addr: str, msgid: str | None) -> None:
        accepted.append((login, addr, msgid))

    async def run() -> None:
        server = await fromguard.start(senders, "127.0.0.1", 0, on_accepted)
        port = server.sockets[0].getsockname()[1]
        async with server:
            ok = await _converse(port, "alice@x.test*mailforge", [
                (b"From", b"Alice <alice@x.test>"), (b"Message-ID", b"<m1@x.test>")])
            assert [c for c, _ in ok] == [b"c", b"c", b"c", b"c", b"c"]
            bad = await _converse(port, "alice@x.test", [(b"From", b"ceo@y.test")])
            assert bad[-1] == (b"y", NOT_OWNED.encode() + b"\0")
            two = await _converse(port, "alice@x.test", [(b"From", b"alice@x.test"),
                                                         (b"from", b"ceo@y.test")])
            assert two[-1] == (b"y", BAD_FROM.encode() + b"\0")
            # Each lookup sees what the backend committed since.
            with contextlib.closing(sqlite3.connect(senders)) as db, db:
                db.execute("INSERT INTO domains VALUES ('y.test')")
                db.execute("INSERT INTO alias_targets VALUES "
                           "('ceo@y.test', 'alice@x.test', 'y.test')")
                db.execute("INSERT INTO mailboxes VALUES ('alice@y.test', 'y.test', 0, 'u')")
                db.execute("INSERT INTO alias_targets VALUES "
                           "('boss@y.test', 'alice@y.test', 'y.test')")
            ensure_wal_files(senders)
            later = await _converse(port, "alice@x.test", [(b"From", b"ceo@y.test")])
            # An alias owns nothing outside its domain: only y.test's own mailbox.
            assert later[-1] == (b"y", NOT_OWNED.encode() + b"\0")
            boss = await _converse(port, "alice@y.test", [(b"From", b"boss@y.test")])
            assert boss[-1][0] == b"c"
        # An unreadable table defers (451), never accepts.
        missing = await fromguard.start(tmp_path / "missing.sqlite", "127.0.0.1", 0)
        async with missing:
            gone = await _converse(missing.sockets[0].getsockname()[1], "alice@x.test",
                                   [(b"From", b"alice@x.test")])
            assert gone[-1][0] == b"y" and gone[-1][1].startswith(b"451 4.")

    asyncio.run(run())
    assert accepted == [("alice@x.test", "alice@x.test", "<m1@x.test>"),
                        ("alice@y.test", "boss@y.test", None)]


# ------------------------------------------------------------------ id-keyed homes


def _domain(name: str = "ex.test", deleted: bool = False, did: str = "dom_1") -> Domain:
    return Domain(did, "acct_1", name, name, "active", "h", "manual", True, deleted, 2, 1,
                  None, NOW, NOW, ownership_verified_at=NOW)


def _mb(local: str, mid: str, **kw: object) -> Mailbox:
    base = Mailbox(mid, "acct_1", "dom_1", local, f"{local}@ex.test", "", HASH, 100, None,
                   "", False, False, "active", 1, 1, None, NOW, NOW)
    return replace(base, **kw)  # type: ignore[arg-type]


def _backend(tmp_path: Path) -> PostfixDovecotBackend:
    state = tmp_path / "state"
    layout = Layout(state)
    layout.dovecot_dir.mkdir(parents=True)
    # A database as the first release wrote it: no mailbox_id, no home.
    with sqlite3.connect(layout.auth_db) as db:
        db.executescript("""CREATE TABLE users (domain TEXT NOT NULL, local_part TEXT NOT
            NULL, password TEXT NOT NULL, quota_mb INTEGER NOT NULL, login_allowed INTEGER
            NOT NULL, PRIMARY KEY (domain, local_part)) WITHOUT ROWID;""")
        db.executemany("INSERT INTO users VALUES (?, ?, ?, 100, 1)",
                       [("ex.test", "ann", HASH), ("ex.test", "old", HASH)])
    db.close()
    layout.initialize()  # adds the new columns to the existing table
    return PostfixDovecotBackend(
        PostfixDovecotConfig(state_dir=str(state), mail_root=str(tmp_path / "vmail")),
        MailboxesConfig())


def _maildir(home: Path, name: str, text: str) -> None:
    (home / "Maildir" / "cur").mkdir(parents=True, exist_ok=True)
    (home / "Maildir" / "cur" / name).write_text(text)


def _rows(b: PostfixDovecotBackend) -> dict[str, tuple[str | None, str | None]]:
    db = sqlite3.connect(b.layout.auth_db)
    try:
        return {r[0]: (r[1], r[2]) for r in db.execute(
            "SELECT local_part, mailbox_id, home FROM users")}
    finally:
        db.close()


def _converge(b: PostfixDovecotBackend, st: DomainState) -> None:
    """The apply steps that touch homes and rows."""
    b._restore_homes([st])
    moved = b._migrate_legacy_homes([st])
    b._write_tables([render(st)])
    b._merge_legacy_leftovers(moved)
    b._retire_homes([st])
    b._destroy_deleted_domains([st])


def test_legacy_home_moves_to_the_id_path_only_for_the_mailbox_its_row_served(
        tmp_path: Path) -> None:
    b = _backend(tmp_path)
    root = b.mail_root
    _maildir(root / "ex.test" / "ann", "1.msg", "ann's mail")
    # "old" had a row, but the live mailbox of that name is a new one (never converged):
    # the directory is not its mail. "carol" has a directory and no row at all (left by
    # a domain deleted before this release): never attached either.
    _maildir(root / "ex.test" / "old", "2.msg", "someone else's mail")
    _maildir(root / "ex.test" / "carol", "3.msg", "the previous owner's mail")
    ann = _mb("ann", "usr_ann1")
    old = _mb("old", "usr_new2", observed_generation=0)
    carol = _mb("carol", "usr_car3", observed_generation=0)
    _converge(b, DomainState(_domain(), (ann, old, carol)))

    assert (root / "ex.test" / "usr_ann1" / "Maildir" / "cur" / "1.msg").read_text() == \
        "ann's mail"
    assert not (root / "ex.test" / "ann").exists()
    assert not (root / "ex.test" / "usr_new2").exists()
    assert not (root / "ex.test" / "usr_car3").exists()
    rows = _rows(b)
    for m in (ann, old, carol):
        assert rows[m.local_part] == (m.id, str(root / "ex.test" / m.id))
    # Idempotent: a second pass changes nothing.
    _converge(b, DomainState(_domain(), (ann, old, carol)))
    assert (root / "ex.test" / "usr_ann1" / "Maildir" / "cur" / "1.msg").exists()


def test_legacy_mail_delivered_during_the_move_is_merged(tmp_path: Path) -> None:
    b = _backend(tmp_path)
    legacy, home = b.mail_root / "ex.test" / "ann", b.mail_root / "ex.test" / "usr_ann1"
    _maildir(legacy, "1.msg", "a")
    moved = b._migrate_legacy_homes([DomainState(_domain(), (_mb("ann", "usr_ann1"),))])
    _maildir(legacy, "2.msg", "b")  # a delivery that still used the old row
    b._merge_legacy_leftovers(moved)
    assert sorted(p.name for p in (home / "Maildir" / "cur").iterdir()) == ["1.msg", "2.msg"]
    assert not legacy.exists()


def test_deleted_domain_destroys_live_and_retained_mail_only_of_that_domain(
        tmp_path: Path) -> None:
    b = _backend(tmp_path)
    root = b.mail_root
    _maildir(root / "ex.test" / "usr_ann1", "1.msg", "live")
    _maildir(b.retained_home("ex.test", "usr_gone"), "2.msg", "retained")
    _maildir(b.retention_dir / "ex.test" / "bob.usr_bob1", "3.msg", "retained, old layout")
    _maildir(root / "ex.test" / "legacy", "4.msg", "legacy leftover")
    _maildir(root / "other.test" / "usr_x", "5.msg", "another domain")
    st = DomainState(_domain(deleted=True), (_mb("ann", "usr_ann1"),))
    _converge(b, st)
    assert not (root / "ex.test").exists()
    assert not (b.retention_dir / "ex.test").exists()
    assert (root / "other.test" / "usr_x" / "Maildir" / "cur" / "5.msg").exists()
    assert "ann" not in _rows(b)
    # A disabled (not deleted) domain keeps its mail.
    _maildir(root / "kept.test" / "usr_k", "6.msg", "kept")
    b._destroy_deleted_domains([DomainState(replace(_domain("kept.test"),
                                                    backend_enabled=False))])
    assert (root / "kept.test" / "usr_k").exists()


def test_deleted_mailbox_retained_by_id_and_restored_from_either_layout(
        tmp_path: Path) -> None:
    b = _backend(tmp_path)
    home = b.home("ex.test", "usr_ann1")
    _maildir(home, "1.msg", "mail")
    gone = _mb("ann", "usr_ann1", deleted=True, generation=2)
    b._retire_homes([DomainState(_domain(), (gone,))])
    assert (b.retained_home("ex.test", "usr_ann1") / "Maildir" / "cur" / "1.msg").exists()
    back = _mb("ann", "usr_ann1", generation=3, observed_generation=2)
    b._restore_homes([DomainState(_domain(), (back,))])
    assert (home / "Maildir" / "cur" / "1.msg").exists()
    # Retained under the layout before ids (<local part>.<id>): restored too.
    _maildir(b.retention_dir / "ex.test" / "bob.usr_bob1", "2.msg", "old")
    bob = _mb("bob", "usr_bob1", generation=3, observed_generation=2)
    b._restore_homes([DomainState(_domain(), (bob,))])
    assert (b.home("ex.test", "usr_bob1") / "Maildir" / "cur" / "2.msg").exists()
    asyncio.run(b.purge_retained([("ex.test", "ann", "usr_ann1")]))


def test_render_refuses_unsafe_ids_and_names() -> None:
    for mid in ("../etc", "usr_a/b", "", "USR_A"):
        with pytest.raises(PermanentError):
            render(DomainState(_domain(), (_mb("ann", mid),)))
    for local in ("ann\n", "ann\nx", "a b"):
        with pytest.raises(PermanentError):
            render(DomainState(_domain(), (_mb(local, "usr_1"),)))
    assert render(DomainState(_domain(), (_mb("ann", "usr_1"),))).users[0].mailbox_id == \
        "usr_1"


# ------------------------------------------------------------------ signer settings


def test_ensure_tables_never_empties_written_tables(tmp_path: Path) -> None:
    cfg = DkimConfig(signer_dir=str(tmp_path / "dkim"))
    assert ensure_tables(cfg)  # fresh: placeholder tables written
    keys = [generate("rsa", "s1", 1024), generate("ed25519", "s2")]
    write_tables([SigningKey("x.test", k.algorithm, k.selector, k.private_key)
                  for k in keys], cfg)
    table = Path(cfg.signer_dir) / "SigningTable"
    before = table.read_text()
    assert "*@x.test " in before
    for _ in range(2):
        assert not ensure_tables(cfg)
    assert table.read_text() == before
    assert len(list((Path(cfg.signer_dir) / "keys").glob("x.test.*.key"))) == 2


def test_nothing_but_submission_reaches_the_signer() -> None:
    deploy = render_deploy()
    main = deploy["deploy/postfix/main.cf.mailforge"]
    active = [ln for ln in main.splitlines() if ln and not ln.startswith("#")]
    assert not [ln for ln in active if ln.split("=")[0].strip() in
                ("smtpd_milters", "non_smtpd_milters")]
    assert "{ inet:127.0.0.1:8892, default_action=tempfail }" in main
    master = deploy["deploy/postfix/master.cf.mailforge"]
    assert "-o smtpd_milters=$mailforge_submission_milters" in master
    assert "-o milter_macro_daemon_name=ORIGINATING" in master
    conf = [ln for ln in render_conf("inet:8891@[127.0.0.1]", "/x").splitlines()
            if not ln.startswith("#")]
    assert "InternalHosts 127.0.0.1" in conf and not any("0.0.0.0" in ln for ln in conf)
    assert "MacroList daemon_name|ORIGINATING" in conf
