"""The host's own names, which no tenant may connect.

The MX / submission / IMAP host names, the web host (MTA-STS, autoconfig) and the
nameservers of the zones mailforge hosts are the operator's: a tenant owning
``mail.<operator domain>``, a name under it, or the operator domain above it would get
a zone answering for the platform's own names, DKIM keys for them and mail addressed to
them. ``store.domains.Domains.connect`` refuses such names (409 ``domain_name_reserved``).

"At, under or above" as for names of another account (``docs/names.md``): reserving
``mail.example.net`` refuses ``mail.example.net``, ``x.mail.example.net`` and
``example.net``, never a sibling such as ``other.example.net`` or ``other.net``. A
public suffix above a reserved name (``net``) is refused by connect anyway (400), so a
reserved name never locks out everything under a suffix.

Pure: the config is read here, the check is a function of names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from . import validation
from .config import Config


def _canonical(name: str) -> str | None:
    try:
        ipaddress.ip_address(name.strip("[]"))
        return None  # an address names no domain
    except ValueError:
        pass
    try:
        return validation.domain_name(name)
    except ValueError:
        return None


def reserved_names(cfg: Config) -> tuple[str, ...]:
    """The host's names from the config, canonical, without duplicates."""
    d = cfg.dns
    raw: list[str] = [cfg.host.mx_hostname, d.mx_hostname, d.web_hostname,
                      cfg.host.imap.host, cfg.host.submission.host, cfg.host.smtp.host,
                      cfg.mail.submission_host, cfg.mail.imap_host,
                      *d.powerdns.nameservers, *d.rfc2136.nameservers]
    out = {c for c in (_canonical(n) for n in raw if n) if c is not None}
    return tuple(sorted(out))


def related(a: str, b: str) -> bool:
    """Is *a* the same name as *b*, a parent of it or under it?"""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def clashes(name: str, reserved: Iterable[str]) -> list[str]:
    """The reserved names *name* (canonical) is at, under or above."""
    return [r for r in reserved if related(name, r)]


def refusals(names: Sequence[str], reserved: Sequence[str]) -> list[str]:
    """``domains[i]: ...`` for each canonical name that is at, under or above a host name."""
    out = []
    for i, n in enumerate(names):
        hit = clashes(n, reserved)
        if hit:
            out.append(f"domains[{i}]: {n} is at, under or above {hit[0]}, a name of this "
                       "mail host")
    return out
