"""The domain restriction of the request being served, for the store's tenant queries.

A token may be restricted to a list of domains. ``http.authenticate`` sets the
restriction here (a context variable: each aiohttp request runs in its own task, so
the value never leaks between requests; the reconcile engine never sets it). Store
methods read it so that a restricted token sees only its domains, whichever handler
calls them, exactly as the account id scopes every tenant query.

Store code outside ``store.py`` that reads or writes a domain's objects must apply it
too: pass ``names()`` as a ``text[]`` parameter (NULL = unrestricted) into list
queries, and call ``check(domain_name)`` on single objects (a domain outside the
restriction is a 404, like a resource of another tenant).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar

from ..errors import Forbidden, NotFound

_DOMAINS: ContextVar[frozenset[str] | None] = ContextVar("mailforge_domain_scope",
                                                         default=None)


def set_domains(domains: frozenset[str] | None) -> None:
    _DOMAINS.set(domains)


def names() -> list[str] | None:
    """The allowed ASCII domain names, or None when the caller is unrestricted."""
    d = _DOMAINS.get()
    return None if d is None else sorted(d)


def allows(name: str) -> bool:
    d = _DOMAINS.get()
    return d is None or name in d


def check(name: str, what: str = "domain") -> None:
    """404 for an object of a domain outside the restriction (never reveal it exists)."""
    if not allows(name):
        raise NotFound(what)


def check_new(domain_names: Iterable[str]) -> None:
    """403 when a restricted token tries to bring in a domain outside its list."""
    outside = [n for n in domain_names if not allows(n)]
    if outside:
        raise Forbidden("forbidden", "This token is restricted to other domains.",
                        [f"domains: {n} is outside this token's domain restriction"
                         for n in outside])
