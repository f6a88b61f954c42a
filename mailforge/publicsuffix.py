"""Is a name a public suffix (``co.uk``, ``github.io``), under which names belong to
different owners?

Names are owned by one account at, under and above them (``Domains.connect``), so
a tenant connecting ``co.uk`` would lock every other tenant out of every name under it.
Connecting a public suffix itself is therefore refused. The rules are the Public Suffix
List as the ``publicsuffixlist`` package ships it (updated with each release): bundled,
so the check can never silently fall back to "nothing is a public suffix" on a host
that lacks a system copy of the list. Unknown top-level labels count as public suffixes
(the list's implicit ``*`` rule), as do single labels.
"""

from __future__ import annotations

from functools import cache

from publicsuffixlist import PublicSuffixList


@cache
def _list() -> PublicSuffixList:
    return PublicSuffixList(accept_unknown=True)


def is_public_suffix(name: str) -> bool:
    """*name*: canonical ASCII (``validation.domain_name``); A-labels are matched
    against the list's IDN rules."""
    return bool(_list().is_public(name))
