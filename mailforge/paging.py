"""Keyset cursors for every list: opaque to clients, checked on the way back in.

A cursor holds the sort key values of the last item of a page (and the sort it belongs
to). It needs no secrecy: every list query is scoped by account and domain restriction,
so a cursor edited by hand can at most start a page elsewhere in the caller's own
objects. Anything that does not decode to the expected shape is a 400 on ``cursor``,
never a 500.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

import orjson

from .errors import ValidationFailed

_VERSION = 1
_MAX_LEN = 512


def encode(sort: str, values: Sequence[str | int | None]) -> str:
    raw = orjson.dumps([_VERSION, sort, list(values)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, sort: str, arity: int) -> list[str | int | None]:
    """The key values of *cursor*, which must have been made for *sort* with *arity*
    values; ``ValidationFailed`` naming ``cursor`` otherwise."""
    bad = ValidationFailed(["cursor: not a cursor of this list (use next_cursor as given)"])
    if not cursor or len(cursor) > _MAX_LEN or not cursor.isascii():
        raise bad
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not (isinstance(data, list) and len(data) == 3 and data[0] == _VERSION
            and data[1] == sort and isinstance(data[2], list) and len(data[2]) == arity):
        raise bad
    values = data[2]
    for v in values:
        if not (v is None or isinstance(v, str | int)) or isinstance(v, bool) or (
                isinstance(v, str) and (len(v) > 256 or "\0" in v)):
            raise bad
    return values
