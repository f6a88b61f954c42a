"""Pure rendering of one domain's desired state into what Postfix and Dovecot read:
Postfix map lines and Dovecot auth rows.

No I/O here, so the formats are unit-tested directly. Every value was validated on
the way in (``mailforge.validation``); the checks below are a second line of defence
against map-line injection, because whitespace or a newline in a Postfix map key would
change what the server believes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import PermanentError
from ...models import DomainState

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
class DomainFiles:
    """Everything the backend writes for one domain; empty means "absent"."""

    users: tuple[AuthUser, ...]
    domains: str
    mailboxes: str
    aliases: str
    senders: str


def _key(value: str) -> str:
    if not _SAFE_KEY.fullmatch(value):
        raise PermanentError(f"refusing to write unsafe map key {value!r}")
    return value


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


def render(state: DomainState, default_quota_mb: int = 1024,
           routing: Routing = DEFAULT_ROUTING) -> DomainFiles:
    if not state.present:
        return DomainFiles((), "", "", "", "")
    domain = _key(state.domain.name)
    users: list[AuthUser] = []
    mailboxes: list[str] = []
    senders: dict[str, list[str]] = {}
    identities: list[str] = []
    live = [m for m in state.mailboxes if not m.deleted]
    for m in live:
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
        mailboxes.append(f"{address} OK")
        senders.setdefault(address, []).append(address)
        identities.append(address)
        for alias_domain in state.alias_domains:
            # Same name at an alias domain: delivered here, and the mailbox may send as it.
            senders.setdefault(f"{local}@{_key(alias_domain)}", []).append(address)
    aliases: list[str] = []
    has_catch_all = False
    taken = set(identities)
    for a in state.aliases:
        if a.deleted:
            continue
        source = _key(a.address)
        has_catch_all |= source.startswith("@")
        targets = [_key(t) for t in a.targets]
        aliases.append(f"{source} {','.join(targets)}")
        taken.add(source)
        if not source.startswith("@"):
            # A mailbox may send as the aliases that deliver to it (and only those).
            owners = senders.setdefault(source, [])
            owners.extend(t for t in targets if t in identities and t not in owners)
    if has_catch_all:
        # A catch-all in virtual_alias_maps would swallow mail for real mailboxes too;
        # identity entries make the mailbox win, as Postfix's documentation advises.
        aliases.extend(f"{addr} {addr}" for addr in identities)
    else:
        target = routing.role_target
        if not target and live:
            target = f"{min(live, key=lambda m: (m.created_at, m.id)).local_part}@{domain}"
        if target:
            # RFC 2142 role addresses must reach someone even when no mailbox has them.
            aliases.extend(f"{role}@{domain} {_key(target)}"
                           for role in routing.role_addresses
                           if f"{role}@{domain}" not in taken)
    for alias_domain in state.alias_domains:
        other = _key(alias_domain)
        aliases.extend(f"{addr.split('@')[0]}@{other} {addr}" for addr in identities)
    return DomainFiles(
        users=tuple(users),
        domains=f"{domain} OK\n",
        mailboxes="".join(line + "\n" for line in mailboxes),
        aliases="".join(line + "\n" for line in sorted(aliases)),
        senders="".join(f"{addr} {','.join(owners)}\n" for addr, owners in senders.items()
                        if owners),
    )
