"""Pure rendering of one domain's desired state into the rows Postfix and Dovecot read:
rows of Postfix's tables (``layout.POSTFIX_SCHEMA``) and Dovecot's auth rows.

No I/O here, so it is unit-tested directly. Every value was validated on the way in
(``mailforge.validation``); the checks below are a second line of defence: the values
are bound as SQL parameters, and Postfix quotes the key it puts in a query, but a key
with whitespace, a comma or a newline would still change what the server believes (a
comma splits a Postfix lookup result into several targets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ...errors import PermanentError
from ...models import DomainState, Mailbox

# fullmatch everywhere: "$" would also match before a final newline.
_SAFE_KEY = re.compile(r"[a-z0-9._@-]+")
_SAFE_HASH = re.compile(r"\{[A-Z0-9-]+\}[A-Za-z0-9$./=,+_-]+")
# A mailbox id names its home directory: one path component, nothing else.
_SAFE_ID = re.compile(r"[a-z0-9_]{1,64}")


@dataclass(frozen=True)
class AuthUser:
    """One row of Dovecot's auth database."""

    local_part: str
    password: str
    quota_mb: int
    login_allowed: bool
    # Keys the mailbox's home (<mail_root>/<domain>/<mailbox id>); empty only in rows
    # read back from a database written before homes were stored.
    mailbox_id: str = ""


@dataclass(frozen=True)
class MailboxRow:
    """One row of Postfix's ``mailboxes`` table."""

    address: str
    # Creation time in microseconds since the epoch, then the id: the domain's oldest
    # mailbox is the default target of its role addresses.
    created_us: int
    mailbox_id: str


@dataclass(frozen=True)
class AliasRow:
    """One alias: its rows in Postfix's ``alias_targets`` table."""

    source: str
    targets: tuple[str, ...]


@dataclass(frozen=True)
class DomainRows:
    """Everything the backend writes for one domain. For a complete state the domain's
    rows become exactly these; for a delta only the listed objects change: the live ones
    are upserted, the ``removed_*`` ones (listed tombstones) deleted."""

    domain: str
    present: bool
    complete: bool
    users: tuple[AuthUser, ...] = ()
    removed_users: tuple[str, ...] = ()
    mailboxes: tuple[MailboxRow, ...] = ()
    removed_mailboxes: tuple[str, ...] = ()
    aliases: tuple[AliasRow, ...] = ()
    removed_aliases: tuple[str, ...] = ()
    # Whole in every state (DomainState.complete).
    alias_domains: tuple[str, ...] = ()


def _key(value: str) -> str:
    if not _SAFE_KEY.fullmatch(value):
        raise PermanentError(f"refusing to write unsafe map key {value!r}")
    return value


def _own(address: str, domain: str) -> str:
    """An alias source of *domain* (``local@domain`` or the catch-all ``@domain``): a
    state can never write rows for another domain's addresses."""
    if _key(address).rpartition("@")[2] != domain or "@" not in address:
        raise PermanentError(f"refusing to write alias {address!r} outside {domain}")
    return address


# Written instead of the hash of a suspended mailbox; no password crypts to it (its
# "hash" part is not crypt output). Same constant as issue 4's mailbox suspension.
SUSPENDED_HASH = "{SHA512-CRYPT}$6$suspended$" + "x" * 86


@dataclass(frozen=True)
class Routing:
    """Per-server routing settings the rendering needs (config ``mailboxes``)."""

    role_addresses: tuple[str, ...] = ("postmaster", "abuse")
    # Empty: the domain's oldest mailbox.
    role_target: str = ""


DEFAULT_ROUTING = Routing()


def _created_us(m: Mailbox) -> int:
    ts = m.created_at
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def render(state: DomainState, default_quota_mb: int = 1024,
           routing: Routing = DEFAULT_ROUTING) -> DomainRows:
    """The rows of one domain's state. Role addresses, catch-all identities, alias
    domains and the sender logins of aliases are not rendered: the Postfix queries derive
    them (layout.POSTFIX_TABLE_QUERIES), so one changed mailbox is one changed row. *routing*
    is checked here (it is written to the roles table at start-up)."""
    if routing.role_target:
        _key(routing.role_target)
    if not state.present:
        # Absent (deleted, disabled or unproven): every row of the domain goes (the name
        # is only ever a bound parameter of those deletes).
        return DomainRows(state.domain.name, present=False, complete=True)
    domain = _key(state.domain.name)
    users: list[AuthUser] = []
    mailboxes: list[MailboxRow] = []
    live_locals: set[str] = set()
    for m in state.mailboxes:
        if m.deleted:
            continue
        local = _key(m.local_part)
        address = f"{local}@{domain}"
        if not _SAFE_HASH.fullmatch(m.password_hash):
            raise PermanentError(f"refusing to write malformed password hash for {address}")
        # A suspended mailbox (or any mailbox of a suspended account) may not log in:
        # nologin stops IMAP, but Dovecot still answers a SASL client (Postfix
        # submission) "OK", so the hash is replaced too and the password stops verifying.
        # The real hash stays in the store and comes back on unsuspend. Delivery, which
        # uses only the userdb, keeps working.
        suspended = m.suspended or state.account_suspended
        if not _SAFE_ID.fullmatch(m.id):
            raise PermanentError(f"refusing to use unsafe mailbox id {m.id!r} as a home")
        users.append(AuthUser(local, SUSPENDED_HASH if suspended else m.password_hash,
                              int(m.quota_mb or default_quota_mb), not suspended, m.id))
        mailboxes.append(MailboxRow(address, _created_us(m), m.id))
        live_locals.add(local)
    # A tombstone listed beside a live mailbox of the same name (deleted, then created
    # again) removes nothing: the live one wins.
    removed_locals = sorted({_key(m.local_part) for m in state.mailboxes if m.deleted}
                            - live_locals)
    aliases: list[AliasRow] = []
    for a in state.aliases:
        if a.deleted:
            continue
        targets = tuple(dict.fromkeys(_key(t) for t in a.targets))
        if not targets:
            raise PermanentError(f"refusing to write alias {a.address!r} without targets")
        aliases.append(AliasRow(_own(a.address, domain), targets))
    live_sources = {a.source for a in aliases}
    removed_aliases = sorted({_own(a.address, domain) for a in state.aliases if a.deleted}
                             - live_sources)
    return DomainRows(
        domain=domain, present=True, complete=state.complete,
        users=tuple(users), removed_users=tuple(removed_locals),
        mailboxes=tuple(mailboxes),
        removed_mailboxes=tuple(f"{lp}@{domain}" for lp in removed_locals),
        aliases=tuple(aliases), removed_aliases=tuple(removed_aliases),
        alias_domains=tuple(sorted({_key(d) for d in state.alias_domains})))
