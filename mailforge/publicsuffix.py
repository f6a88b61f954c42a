"""Is a name a public suffix (``co.uk``, ``github.io``), under which names belong to
different owners?

Names are owned by one account at, under and above them (``Store.connect_domains``), so
a tenant connecting ``co.uk`` would lock every other tenant out of every name under it.
Connecting a public suffix itself is therefore refused. The rules come from the Public
Suffix List as Debian ships it (package ``publicsuffix``); without that file only the
implicit rule applies (every single label is a public suffix), which
``validation.domain_name`` already enforces by requiring two labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import idna

PSL_PATHS = (Path("/usr/share/publicsuffix/public_suffix_list.dat"),)


@dataclass(frozen=True)
class Rules:
    exact: frozenset[str]
    wildcard: frozenset[str]  # "*.ck" stored as "ck"
    exception: frozenset[str]  # "!www.ck" stored as "www.ck"


def _ascii(rule: str) -> str:
    if rule.isascii():
        return rule.lower()
    try:
        return idna.encode(rule, uts46=True).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return rule.lower()


def parse(text: str) -> Rules:
    exact, wildcard, exception = set(), set(), set()
    for raw in text.splitlines():
        line = raw.strip().split()[0] if raw.strip() else ""
        if not line or line.startswith("//"):
            continue
        if line.startswith("!"):
            exception.add(_ascii(line[1:]))
        elif line.startswith("*."):
            wildcard.add(_ascii(line[2:]))
        else:
            exact.add(_ascii(line))
    return Rules(frozenset(exact), frozenset(wildcard), frozenset(exception))


@cache
def rules() -> Rules:
    for path in PSL_PATHS:
        try:
            return parse(path.read_text(encoding="utf-8"))
        except OSError:
            continue
    return Rules(frozenset(), frozenset(), frozenset())


def is_public_suffix(name: str, table: Rules | None = None) -> bool:
    """*name*: canonical ASCII (``validation.domain_name``)."""
    r = table or rules()
    if "." not in name:
        return True  # the implicit "*" rule
    if name in r.exception:
        return False
    if name in r.exact:
        return True
    return name.split(".", 1)[1] in r.wildcard
