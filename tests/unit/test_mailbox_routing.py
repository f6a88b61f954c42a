"""Issue 4 units: rendering of suspended mailboxes, alias senders, role addresses and
alias domains; username generation; Maildir retention moves on real files."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mapview import maps

from mailforge import names
from mailforge.backends.postfix_dovecot.backend import PostfixDovecotBackend
from mailforge.backends.postfix_dovecot.render import Routing
from mailforge.config import MailboxesConfig, PostfixDovecotConfig
from mailforge.models import Alias, Domain, DomainState, Mailbox

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HASH = "{SHA512-CRYPT}$6$abcdefgh$" + "A" * 86


def _domain(name: str = "ex.test") -> Domain:
    return Domain("dom_1", "acct_1", name, name, "active", "h", "manual", True, False, 1, 1,
                  None, NOW, NOW, ownership_verified_at=NOW)


def _mb(local: str, n: int = 0, **kw: object) -> Mailbox:
    base = Mailbox(f"usr_{local}", "acct_1", "dom_1", local, f"{local}@ex.test", "", HASH,
                   100, None, "", False, False, "active", 1, 1, None,
                   NOW.replace(second=n), NOW)
    return replace(base, **kw)  # type: ignore[arg-type]


def _alias(address: str, *targets: str) -> Alias:
    return Alias(f"ali_{address}", "acct_1", "dom_1", address, tuple(targets), False, 1, 1,
                 None, NOW, NOW)


def test_suspended_mailbox_may_not_log_in_but_stays_deliverable() -> None:
    files = maps(DomainState(_domain(), (_mb("ann", suspended=True), _mb("ben"))))
    allowed = {u.local_part: u.login_allowed for u in files.users}
    assert allowed == {"ann": False, "ben": True}
    assert "ann@ex.test OK" in files.mailboxes.splitlines()


def test_mailbox_may_send_as_itself_and_its_aliases_only() -> None:
    st = DomainState(_domain(), (_mb("ann"), _mb("ben")),
                     (_alias("team@ex.test", "ann@ex.test", "ben@ex.test", "x@other.test"),
                      _alias("sales@ex.test", "ann@ex.test")))
    senders = dict(line.split(" ", 1) for line in maps(st).senders.splitlines())
    assert senders == {"ann@ex.test": "ann@ex.test", "ben@ex.test": "ben@ex.test",
                       "team@ex.test": "ann@ex.test,ben@ex.test",
                       "sales@ex.test": "ann@ex.test"}


def test_role_addresses_go_to_oldest_mailbox_or_configured_target() -> None:
    st = DomainState(_domain(), (_mb("zed", 1), _mb("amy", 5)))
    aliases = maps(st).aliases.splitlines()
    assert "postmaster@ex.test zed@ex.test" in aliases
    assert "abuse@ex.test zed@ex.test" in aliases
    routed = maps(st, routing=Routing(("postmaster",), "ops@operator.test"))
    assert routed.aliases.splitlines() == ["postmaster@ex.test ops@operator.test"]
    # A mailbox of that name wins; a domain without mailboxes has no target yet.
    own = maps(DomainState(_domain(), (_mb("postmaster"),))).aliases.splitlines()
    assert own == ["abuse@ex.test postmaster@ex.test"]
    assert maps(DomainState(_domain())).aliases == ""


def test_catch_all_never_swallows_real_mailboxes() -> None:
    st = DomainState(_domain(), (_mb("ann"),), (_alias("@ex.test", "ann@ex.test"),))
    aliases = maps(st).aliases.splitlines()
    assert "@ex.test ann@ex.test" in aliases and "ann@ex.test ann@ex.test" in aliases


def test_alias_domain_maps_every_mailbox_name() -> None:
    st = DomainState(_domain(), (_mb("ann"),), alias_domains=("alias.test",))
    files = maps(st)
    assert "ann@alias.test ann@ex.test" in files.aliases.splitlines()
    assert "ann@alias.test ann@ex.test" in files.senders.splitlines()


def test_names_follow_patterns_avoid_taken_and_spread_round_robin() -> None:
    people = [names.parse_person("Sarah Chen"), names.parse_person({"first": "José",
                                                                    "last": "Núñez"})]
    assert names.generate(2, "first.last", people, [], 5, set()) == ["sarah.chen",
                                                                       "jose.nunez"]
    assert names.generate(1, "f.last", people, [], 5, set()) == ["s.chen"]
    assert names.generate(1, "firstl", people, [], 5, set()) == ["sarahc"]
    out = names.generate(1, "first.last", people, ["a.test"], 5, {"sarah.chen@a.test"})
    assert out == ["sarah@a.test"]
    spread = names.generate(6, "mixed", [], ["a.test", "b.test", "c.test"], 2, set(),
                            rng=random.Random(1))
    assert [a.split("@")[1] for a in spread] == ["a.test", "b.test", "c.test"] * 2
    assert len(set(spread)) == 6
    with pytest.raises(ValueError):
        names.parse_person("")


def test_retention_moves_mail_away_back_and_purges(tmp_path: Path) -> None:
    root = tmp_path / "vmail"
    backend = PostfixDovecotBackend(
        PostfixDovecotConfig(state_dir=str(tmp_path / "state"), mail_root=str(root)),
        MailboxesConfig())
    home = root / "ex.test" / "usr_ann"  # keyed by the mailbox id, not the name
    assert backend.home("ex.test", "usr_ann") == home
    (home / "Maildir" / "cur").mkdir(parents=True)
    (home / "Maildir" / "cur" / "1.msg").write_text("old mail")
    deleted = _mb("ann", deleted=True, generation=2, observed_generation=1)
    backend._retire_homes([DomainState(_domain(), (deleted,))])
    kept = backend.retained_home("ex.test", "usr_ann")
    assert not home.exists() and (kept / "Maildir" / "cur" / "1.msg").exists()
    backend._retire_homes([DomainState(_domain(), (deleted,))])  # idempotent
    assert kept.exists()

    restored = _mb("ann", generation=3, observed_generation=2)
    backend._restore_homes([DomainState(_domain(), (restored,))])
    assert (home / "Maildir" / "cur" / "1.msg").read_text() == "old mail"

    backend._retire_homes([DomainState(_domain(), (deleted,))])
    asyncio.run(backend.purge_retained([("ex.test", "ann", "usr_ann")]))
    assert not kept.exists() and not home.exists()
