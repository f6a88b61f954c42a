"""Pure rendering of one domain's desired state into the lines Postfix and Dovecot read.

No I/O here, so the map formats are unit-tested directly. Every value was validated
on the way in (``mailforge.validation``); the checks below are a second line of
defence against map-line injection, because a stray ``:`` or newline in a passwd-file
line, or whitespace in a Postfix map key, would change what the server believes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import PermanentError
from ...models import DomainState

_SAFE_KEY = re.compile(r"^[a-z0-9._@-]+$")
_SAFE_HASH = re.compile(r"^\{[A-Z0-9-]+\}[A-Za-z0-9$./=,+_-]+$")


@dataclass(frozen=True)
class DomainFiles:
    """Everything the backend writes for one domain; empty strings mean "absent"."""

    passwd: str
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
        return DomainFiles("", "", "", "", "")
    domain = _key(state.domain.name)
    passwd: list[str] = []
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
        quota = m.quota_mb or default_quota_mb
        extra = [f"userdb_quota_rule=*:storage={int(quota)}M"]
        if m.suspended:
            # Login (IMAP and SMTP AUTH through Dovecot SASL) refused; delivery, which
            # uses only the userdb, keeps working.
            extra = ["nologin", "reason=suspended", *extra]
        passwd.append(f"{local}:{m.password_hash}::::::{' '.join(extra)}")
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
        passwd="".join(line + "\n" for line in passwd),
        domains=f"{domain} OK\n",
        mailboxes="".join(line + "\n" for line in mailboxes),
        aliases="".join(line + "\n" for line in sorted(aliases)),
        senders="".join(line + "\n" for line in senders),
    )
