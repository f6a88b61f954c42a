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

_SAFE_KEY = re.compile(r"^[a-z0-9._@-]+$")
_SAFE_HASH = re.compile(r"^\{[A-Z0-9-]+\}[A-Za-z0-9$./=,+_-]+$")


@dataclass(frozen=True)
class AuthUser:
    """One row of Dovecot's auth database."""

    local_part: str
    password: str
    quota_mb: int
    login_allowed: bool


@dataclass(frozen=True)
class DomainFiles:
    """Everything the backend writes for one domain; empty means "absent"."""

    users: tuple[AuthUser, ...]
    domains: str
    mailboxes: str
    aliases: str
    senders: str


def _key(value: str) -> str:
    if not _SAFE_KEY.match(value):
        raise PermanentError(f"refusing to write unsafe map key {value!r}")
    return value


def render(state: DomainState, default_quota_mb: int = 1024) -> DomainFiles:
    if not state.present:
        return DomainFiles((), "", "", "", "")
    domain = _key(state.domain.name)
    users: list[AuthUser] = []
    mailboxes: list[str] = []
    senders: list[str] = []
    identities: list[str] = []
    for m in state.mailboxes:
        if m.deleted:
            continue
        local = _key(m.local_part)
        address = f"{local}@{domain}"
        if not _SAFE_HASH.match(m.password_hash):
            raise PermanentError(f"refusing to write malformed password hash for {address}")
        # A suspended mailbox (or any mailbox of a suspended account) may not log in
        # (IMAP, SMTP AUTH through Dovecot SASL); delivery, which uses only the userdb,
        # keeps working.
        users.append(AuthUser(local, m.password_hash, int(m.quota_mb or default_quota_mb),
                              not (m.suspended or state.account_suspended)))
        mailboxes.append(f"{address} OK")
        senders.append(f"{address} {address}")
        identities.append(address)
    aliases: list[str] = []
    has_catch_all = False
    for a in state.aliases:
        if a.deleted:
            continue
        source = _key(a.address)
        has_catch_all |= source.startswith("@")
        targets = ",".join(_key(t) for t in a.targets)
        aliases.append(f"{source} {targets}")
    if has_catch_all:
        # A catch-all in virtual_alias_maps would swallow mail for real mailboxes too;
        # identity entries make the mailbox win, as Postfix's documentation advises.
        aliases.extend(f"{addr} {addr}" for addr in identities)
    return DomainFiles(
        users=tuple(users),
        domains=f"{domain} OK\n",
        mailboxes="".join(line + "\n" for line in mailboxes),
        aliases="".join(line + "\n" for line in sorted(aliases)),
        senders="".join(line + "\n" for line in senders),
    )
