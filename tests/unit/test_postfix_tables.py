"""Postfix's and Dovecot's tables under complete and delta states (issue 11): a delta
changes only the objects it lists and never removes one because it is absent; a
complete state makes the domain's rows equal to it. The derived entries (role
addresses, catch-all identities, alias domains, alias senders) follow from the rows."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from mapview import maps, new_db, text
from test_mailbox_routing import _alias, _domain, _mb

from mailforge.backends.postfix_dovecot import tables
from mailforge.backends.postfix_dovecot.backend import PostfixDovecotBackend
from mailforge.backends.postfix_dovecot.layout import (
    AUTH_SCHEMA,
    POSTFIX_TABLE_QUERIES,
    postfix_query_file,
)
from mailforge.backends.postfix_dovecot.render import render
from mailforge.backends.postfix_dovecot.tables import lookup, sync_postfix
from mailforge.config import MailboxesConfig, PostfixDovecotConfig
from mailforge.errors import PermanentError
from mailforge.models import DomainState


def _apply(db: sqlite3.Connection, *states: DomainState) -> int:
    return sync_postfix(db, [render(st) for st in states])


def test_a_delta_changes_only_what_it_lists() -> None:
    db = new_db()
    full = DomainState(_domain(), (_mb("ann", 1), _mb("ben", 2)),
                       (_alias("team@ex.test", "ann@ex.test"),))
    _apply(db, full)
    before = text(db)
    # A delta with one new mailbox: one row, nothing else removed.
    assert _apply(db, replace(full, mailboxes=(_mb("cat", 3),), aliases=(),
                              complete=False)) == 1
    after = text(db)
    assert "cat@ex.test OK\n" in after["virtual_mailboxes"]
    assert before["virtual_mailboxes"] in after["virtual_mailboxes"].replace(
        "cat@ex.test OK\n", "")
    assert "team@ex.test ann@ex.test" in after["virtual_aliases"]
    # The same delta again writes nothing.
    assert _apply(db, replace(full, mailboxes=(_mb("cat", 3),), aliases=(),
                              complete=False)) == 0
    # A listed tombstone is removed; the oldest mailbox's role addresses move on.
    gone = _mb("ann", 1, deleted=True)
    _apply(db, replace(full, mailboxes=(gone,), aliases=(), complete=False))
    assert lookup(db, "virtual_mailboxes", "ann@ex.test") == []
    assert lookup(db, "virtual_aliases", "postmaster@ex.test") == ["ben@ex.test"]
    assert lookup(db, "virtual_aliases", "team@ex.test") == ["ann@ex.test"]
    # A complete state removes what it does not list.
    _apply(db, DomainState(_domain(), (_mb("ben", 2),)))
    assert lookup(db, "virtual_mailboxes", "cat@ex.test") == []
    assert lookup(db, "virtual_aliases", "team@ex.test") == []
    assert lookup(db, "sender_logins", "ben@ex.test") == ["ben@ex.test"]


def test_a_catch_all_added_by_a_delta_keeps_every_mailbox_winning() -> None:
    db = new_db()
    _apply(db, DomainState(_domain(), (_mb("ann", 1), _mb("ben", 2))))
    _apply(db, DomainState(_domain(), aliases=(_alias("@ex.test", "ann@ex.test"),),
                           complete=False))
    assert lookup(db, "virtual_aliases", "ben@ex.test") == ["ben@ex.test"]
    assert lookup(db, "virtual_aliases", "@ex.test") == ["ann@ex.test"]
    # No role entry with a catch-all; a catch-all is no sender address.
    assert lookup(db, "virtual_aliases", "postmaster@ex.test") == []
    assert lookup(db, "sender_logins", "@ex.test") == []
    # The catch-all's tombstone, in a delta, brings the role addresses back.
    dead = replace(_alias("@ex.test", "ann@ex.test"), deleted=True)
    _apply(db, DomainState(_domain(), aliases=(dead,), complete=False))
    assert lookup(db, "virtual_aliases", "ben@ex.test") == []
    assert lookup(db, "virtual_aliases", "abuse@ex.test") == ["ann@ex.test"]


def test_alias_targets_change_in_place_and_alias_domains_follow_the_state() -> None:
    db = new_db()
    st = DomainState(_domain(), (_mb("ann", 1), _mb("ben", 2)),
                     (_alias("team@ex.test", "ann@ex.test", "x@other.test"),),
                     alias_domains=("alias.test",))
    _apply(db, st)
    assert sorted(lookup(db, "virtual_aliases", "team@ex.test")) == ["ann@ex.test",
                                                                     "x@other.test"]
    assert lookup(db, "sender_logins", "team@ex.test") == ["ann@ex.test"]
    assert lookup(db, "virtual_aliases", "ben@alias.test") == ["ben@ex.test"]
    assert lookup(db, "sender_logins", "ben@alias.test") == ["ben@ex.test"]
    _apply(db, replace(st, mailboxes=(), aliases=(_alias("team@ex.test", "ben@ex.test"),),
                       alias_domains=(), complete=False))
    assert lookup(db, "virtual_aliases", "team@ex.test") == ["ben@ex.test"]
    assert lookup(db, "sender_logins", "team@ex.test") == ["ben@ex.test"]
    assert lookup(db, "virtual_aliases", "ben@alias.test") == []


def test_a_domain_no_longer_served_loses_every_row_even_from_a_delta() -> None:
    db = new_db()
    st = DomainState(_domain(), (_mb("ann", 1),), (_alias("@ex.test", "ann@ex.test"),),
                     alias_domains=("alias.test",))
    _apply(db, st)
    _apply(db, replace(st, domain=replace(st.domain, deleted=True), mailboxes=(),
                       aliases=(), complete=False))
    assert maps().aliases == "" and text(db) == text(new_db())


def test_a_domain_no_longer_served_is_no_alias_domain_of_another_either() -> None:
    """An alias domain that goes away stops being served at once, by its own pass,
    whether or not its target's pass runs (it may fail or wait, and the name may be
    connected again by another tenant)."""
    db = new_db()
    target = DomainState(_domain(), (_mb("ann", 1),), alias_domains=("alias.test",))
    _apply(db, target)
    assert db.execute("SELECT count(*) FROM alias_domains WHERE alias = 'alias.test'"
                      ).fetchone() == (1,)
    gone = DomainState(replace(_domain("alias.test"), id="dom_2", deleted=True))
    _apply(db, gone)
    assert db.execute("SELECT count(*) FROM alias_domains WHERE alias = 'alias.test'"
                      ).fetchone() == (0,)
    assert lookup(db, "virtual_aliases", "ann@alias.test") == []


@pytest.mark.parametrize("address", ["ceo@other.test", "@other.test", "x@ex.test.evil",
                                     "a,b@ex.test", "a b@ex.test", "a\n@ex.test"])
def test_an_alias_outside_its_domain_or_with_separators_is_refused(address: str) -> None:
    with pytest.raises(PermanentError):
        render(DomainState(_domain(), aliases=(_alias(address, "ann@ex.test"),)))
    if not address.endswith("other.test") and "evil" not in address:
        # A target may be anywhere, but never hold a separator.
        with pytest.raises(PermanentError):
            render(DomainState(_domain(), aliases=(_alias("ok@ex.test", address),)))


def test_query_files_quote_nothing_themselves() -> None:
    """Postfix replaces '%s' (and '%u', '%d') by the key with its quotes doubled; the file
    holds only those placeholders, every other literal is fixed SQL."""
    for table in POSTFIX_TABLE_QUERIES:
        cf = postfix_query_file(table, Path("/x/maps.sqlite"))
        assert cf.splitlines()[2] == "dbpath = /x/maps.sqlite"
        query = cf.splitlines()[3]
        assert "%" not in query.replace("'%s'", "").replace("'%u'", "").replace("'%d'", "")
    # A key with a quote is only a key: it matches nothing and breaks nothing.
    db = new_db()
    _apply(db, DomainState(_domain(), (_mb("ann", 1),)))
    for name in ("virtual_domains", "virtual_mailboxes", "virtual_aliases",
                 "sender_logins"):
        assert lookup(db, name, "x' OR '1'='1") == []
        assert lookup(db, name, "postmaster' OR '1'='1@ex.test") == []


def test_backend_delta_touches_only_listed_dovecot_rows(tmp_path: Path) -> None:
    b = PostfixDovecotBackend(PostfixDovecotConfig(state_dir=str(tmp_path / "s"),
                                                   mail_root=str(tmp_path / "m")),
                              MailboxesConfig())
    b.layout.initialize()
    full = DomainState(_domain(), (_mb("ann", 1), _mb("ben", 2)))
    b._write_tables([render(full)])
    b._write_tables([render(replace(full, mailboxes=(_mb("ben", 2, quota_mb=7),),
                                    complete=False))])
    with sqlite3.connect(f"file:{b.layout.auth_db}?mode=ro", uri=True) as db:
        rows = dict(db.execute("SELECT local_part, quota_mb FROM users"))
    assert rows == {"ann": 100, "ben": 7}
    b._write_tables([render(replace(full, mailboxes=(_mb("ann", 1, deleted=True),),
                                    complete=False))])
    with sqlite3.connect(f"file:{b.layout.auth_db}?mode=ro", uri=True) as db:
        rows = dict(db.execute("SELECT local_part, quota_mb FROM users"))
    assert rows == {"ben": 7}
    b.close()
    # Closing leaves the files a read-only reader (Postfix) needs.
    assert Path(f"{b.layout.postfix_db}-wal").exists()
    assert Path(f"{b.layout.postfix_db}-shm").exists()


def test_a_new_server_needs_no_full_pass_an_upgraded_one_does(tmp_path: Path) -> None:
    new = PostfixDovecotBackend(PostfixDovecotConfig(state_dir=str(tmp_path / "new"),
                                                     mail_root=str(tmp_path / "m")))
    new._prepare()
    assert not new.needs_full_resync
    new.close()
    # Dovecot rows of an older release, no Postfix database yet: the upgrade.
    old = tmp_path / "old"
    (old / "dovecot").mkdir(parents=True)
    with sqlite3.connect(old / "dovecot" / "auth.sqlite") as db:
        db.executescript(AUTH_SCHEMA)
        db.execute("INSERT INTO users VALUES ('ex.test', 'ann', 'x', 1, 1, 'u', 'h')")
    db.close()
    up = PostfixDovecotBackend(PostfixDovecotConfig(state_dir=str(old),
                                                    mail_root=str(tmp_path / "m")))
    up._prepare()
    assert up.needs_full_resync
    asyncio.run(up.full_resync_done())
    up.close()
    again = PostfixDovecotBackend(PostfixDovecotConfig(state_dir=str(old),
                                                       mail_root=str(tmp_path / "m")))
    again._prepare()
    assert not again.needs_full_resync
    again.close()
    # A host of the cdb mechanism whose domains only forward: no Dovecot row, but a
    # domain list, so it is resynced too.
    fwd = tmp_path / "fwd"
    (fwd / "postfix").mkdir(parents=True)
    (fwd / "postfix" / "virtual_domains").write_text("only-aliases.test OK\n")
    up2 = PostfixDovecotBackend(PostfixDovecotConfig(state_dir=str(fwd),
                                                     mail_root=str(tmp_path / "m")))
    up2._prepare()
    assert up2.needs_full_resync
    up2.close()


def test_a_crash_between_the_two_databases_is_safe_and_repaired(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dovecot's additions are committed before Postfix's rows, Dovecot's removals after:
    killed in between, Postfix never accepts an address Dovecot cannot deliver to, and
    the next apply of the same state finishes the work."""
    b = PostfixDovecotBackend(PostfixDovecotConfig(state_dir=str(tmp_path / "s"),
                                                   mail_root=str(tmp_path / "m")))
    b.layout.initialize()
    st = DomainState(_domain(), (_mb("ann", 1),))
    b._write_tables([render(st)])

    def crash(*_: object) -> int:
        raise KeyboardInterrupt("killed")

    def rows() -> tuple[set[str], set[str]]:
        with contextlib.closing(sqlite3.connect(
                f"file:{b.layout.auth_db}?mode=ro", uri=True)) as auth:
            users = {lp for (lp,) in auth.execute("SELECT local_part FROM users")}
        served = {a for (a,) in b._maps_db().execute("SELECT address FROM mailboxes")}
        return users, served

    add = replace(st, mailboxes=(_mb("ben", 2),), complete=False)
    monkeypatch.setattr(tables, "sync_postfix_counted", crash)
    with pytest.raises(KeyboardInterrupt):
        b._write_tables([render(add)])
    assert rows() == ({"ann", "ben"}, {"ann@ex.test"})  # Dovecot knows more: safe
    monkeypatch.undo()
    b._write_tables([render(add)])
    assert rows() == ({"ann", "ben"}, {"ann@ex.test", "ben@ex.test"})

    drop = replace(st, mailboxes=(_mb("ann", 1, deleted=True),), complete=False)
    monkeypatch.setattr(tables, "delete_auth", crash)
    with pytest.raises(KeyboardInterrupt):
        b._write_tables([render(drop)])
    assert rows() == ({"ann", "ben"}, {"ben@ex.test"})  # Postfix refuses first: safe
    monkeypatch.undo()
    b._write_tables([render(drop)])
    assert rows() == ({"ben"}, {"ben@ex.test"})
    b.close()
