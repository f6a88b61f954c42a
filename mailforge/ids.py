"""Opaque, prefixed resource ids (``dom_…``, ``usr_…``) as the API contract requires."""

from __future__ import annotations

import secrets

PREFIXES = frozenset({"acct", "tok", "dom", "usr", "job", "msg", "ali", "evt", "dkim"})


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    # 16 bytes of randomness: unguessable, so an id never reveals how many exist.
    return f"{prefix}_{secrets.token_hex(10)}"


def has_prefix(value: str, prefix: str) -> bool:
    return value.startswith(prefix + "_") and len(value) <= 64
