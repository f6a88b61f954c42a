"""When is a record that does not verify no reason to wait? Written once for the DNS
step (which decides whether the domain converged) and for the dns-status answer (which
reports it): an SPF or DMARC record mailforge wanted at a name where the operator has
their own (a plan conflict, ``dns/plan.py``) stays the operator's. It is reported as a
conflict with what was found, and it blocks nothing. Pure functions.
"""

from __future__ import annotations

from collections.abc import Iterable

# Records of these purposes yield to the operator's own record of that kind.
YIELDING = ("spf", "dmarc")


def conflicted_names(conflicts: Iterable[str]) -> frozenset[str]:
    """The record names a plan's conflict lines are about (each starts with it)."""
    return frozenset(c.split(" ", 1)[0] for c in conflicts)


def is_conflict(purpose: str, name: str, status: str, conflicted: frozenset[str]) -> bool:
    """A record that mismatches only because the operator's own record of its kind is
    there: left to the operator, not waited for."""
    return status == "mismatch" and purpose in YIELDING and name in conflicted


def blocks(purpose: str, name: str, status: str, required: bool,
           conflicted: frozenset[str]) -> bool:
    """Does this record keep the domain from being verified?"""
    return required and status != "ok" and not is_conflict(purpose, name, status,
                                                            conflicted)
