"""Opaque, prefixed resource ids (``dom_…``, ``usr_…``) as the API contract requires."""

from __future__ import annotations

import re
import secrets

PREFIXES = frozenset({"acct", "tok", "dom", "usr", "job", "msg", "ali", "evt", "dkim"})


def new_id(prefix: str) -> str:
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    # 16 bytes of randomness: unguessable, so an id never reveals how many exist.
    return f"{prefix}_{secrets.token_hex(10)}"


# What an id of ours may look like: the prefix, "_", lowercase letters and digits. Matched
# in full (``fullmatch``): no trailing newline, NUL or second spelling gets through.
_ID_BODY = re.compile(r"[a-z0-9]{1,59}")


def has_prefix(value: object, prefix: str) -> bool:
    """Is *value* a well-formed id of kind *prefix* (``usr_…``)?"""
    if not isinstance(value, str) or not value.startswith(prefix + "_"):
        return False
    return len(value) <= 64 and _ID_BODY.fullmatch(value[len(prefix) + 1:]) is not None
