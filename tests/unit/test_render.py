"""Rendering a domain's desired state into Postfix map and Dovecot passwd lines."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from mapview import maps

from mailforge.backends.postfix_dovecot.render import SUSPENDED_HASH, AuthUser, render
from mailforge.errors import PermanentError
from mailforge.models import Alias, Domain, DomainState, Mailbox

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HASH = "{SHA512-CRYPT}$6$salt$abcdefghijklmnopqrstuvwxyz0123456789./ABCDEFGH"


def domain(**kw: object) -> Domain:
    base = Domain(id="dom_1", account_id="acct_1", name="example.test",
                  unicode_name="example.test", status="active", mail_host="default",
                  dns_provider="manual", backend_enabled=True, deleted=False, generation=2,
                  observed_generation=1, last_error=None, created_at=NOW, updated_at=NOW,
                  ownership_verified_at=NOW)
    return replace(base, **kw)  # type: ignore[arg-type]


def mailbox(local: str, **kw: object) -> Mailbox:
    base = Mailbox(id=f"usr_{local}", account_id="acct_1", domain_id="dom_1",
                   local_part=local, address=f"{local}@example.test", name="",
                   password_hash=HASH, quota_mb=512, daily_send_limit=None, signature="",
                   suspended=False, deleted=False, status="pending", generation=1,
                   observed_generation=0, last_error=None, created_at=NOW, updated_at=NOW)
    return replace(base, **kw)  # type: ignore[arg-type]


def alias(address: str, *targets: str) -> Alias:
    return Alias(id=f"ali_{address}", account_id="acct_1", domain_id="dom_1", address=address,
                 targets=targets, deleted=False, generation=1, observed_generation=0,
                 last_error=None, created_at=NOW, updated_at=NOW)


def test_mailboxes_render_to_every_map() -> None:
    files = maps(DomainState(domain(), (mailbox("alice"), mailbox("bob"))))
    assert files.domains == "example.test OK\n"
    assert files.mailboxes == "alice@example.test OK\nbob@example.test OK\n"
    assert files.senders.splitlines() == ["alice@example.test alice@example.test",
                                          "bob@example.test bob@example.test"]
    assert files.users[0] == AuthUser("alice", HASH, 512, True, "usr_alice")


def test_suspended_mailbox_cannot_log_in_but_still_receives() -> None:
    files = maps(DomainState(domain(), (mailbox("alice", suspended=True),)))
    # nologin stops IMAP; the replaced hash stops SMTP AUTH (Dovecot SASL ignores nologin).
    assert files.users == (AuthUser("alice", SUSPENDED_HASH, 512, False, "usr_alice"),)
    assert "alice@example.test OK" in files.mailboxes


def test_deleted_mailbox_and_absent_domain_render_nothing() -> None:
    files = maps(DomainState(domain(), (mailbox("gone", deleted=True),)))
    assert files.users == () and files.mailboxes == ""
    assert maps(DomainState(domain(backend_enabled=False), (mailbox("a"),))).domains == ""
    assert maps(DomainState(domain(deleted=True), (mailbox("a"),))).mailboxes == ""


def test_catch_all_gets_identity_entries_so_mailboxes_win() -> None:
    files = maps(DomainState(domain(), (mailbox("alice"),),
                               (alias("@example.test", "bob@elsewhere.test"),)))
    lines = files.aliases.splitlines()
    assert "@example.test bob@elsewhere.test" in lines
    assert "alice@example.test alice@example.test" in lines


@pytest.mark.parametrize("bad", ["evil\nroot", "a b", "x:y"])
def test_injection_is_refused_even_past_validation(bad: str) -> None:
    with pytest.raises(PermanentError):
        render(DomainState(domain(), (mailbox(bad),)))


def test_malformed_hash_is_refused() -> None:
    with pytest.raises(PermanentError):
        render(DomainState(domain(), (mailbox("a", password_hash="plain:text\n"),)))
