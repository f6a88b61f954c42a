"""Opaque, tamper-proof list cursors (``next_cursor`` in, ``cursor`` back).

A cursor is the position of the last item of a page, signed with a key derived from
the master key and bound to the list it came from and the account that read it. A
cursor changed by hand, made up, or taken from another list or another account is a
400 naming ``cursor``, never a 500 and never a position in someone else's rows (every
list query is scoped by account anyway: the binding only makes the refusal explicit).
The position itself is visible (base64 of JSON): it is a time and an id the caller
has already seen, nothing secret.
"""

from __future__ import annotations

import base64
import hmac
import json
from datetime import datetime
from typing import Any

from ..errors import ValidationFailed
from ..secretbox import SecretBox

_MAC_BYTES = 16
_MAX_LEN = 512


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def refused(field: str = "cursor") -> ValidationFailed:
    return ValidationFailed([f"{field}: not a cursor this API returned"])


class Cursors:
    """Signs and checks cursors; one per process, keyed by the master key."""

    def __init__(self, box: SecretBox) -> None:
        self._key = box.derive("list-cursor")

    def _mac(self, kind: str, account_id: str, payload: bytes) -> bytes:
        msg = kind.encode() + b"\0" + account_id.encode() + b"\0" + payload
        return hmac.new(self._key, msg, "sha256").digest()[:_MAC_BYTES]

    def encode(self, kind: str, account_id: str, position: list[Any]) -> str:
        """A cursor for *position* (JSON values) in list *kind* of *account_id*."""
        payload = json.dumps(position, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(kind, account_id, payload))}"

    def decode(self, kind: str, account_id: str, value: str) -> list[Any]:
        """The position in *value*, or 400 naming ``cursor``."""
        if not 0 < len(value) <= _MAX_LEN or value.count(".") != 1:
            raise refused()
        body, _, mac = value.partition(".")
        try:
            payload, given = _unb64(body), _unb64(mac)
        except ValueError:
            raise refused() from None
        if not hmac.compare_digest(given, self._mac(kind, account_id, payload)):
            raise refused()
        try:
            position = json.loads(payload)
        except ValueError:
            raise refused() from None
        if not isinstance(position, list):
            raise refused()
        return position

    # The two positions the lists use.

    def encode_time_id(self, kind: str, account_id: str, at: datetime, oid: str) -> str:
        return self.encode(kind, account_id, [at.isoformat(), oid])

    def decode_time_id(self, kind: str, account_id: str, value: str) -> tuple[datetime, str]:
        pos = self.decode(kind, account_id, value)
        try:
            at, oid = pos
            when = datetime.fromisoformat(at)
        except (TypeError, ValueError):
            raise refused() from None
        if when.tzinfo is None or not isinstance(oid, str):
            raise refused()
        return when, oid

    def encode_seq(self, kind: str, account_id: str, seq: int) -> str:
        return self.encode(kind, account_id, [seq])

    def decode_seq(self, kind: str, account_id: str, value: str) -> int:
        pos = self.decode(kind, account_id, value)
        if len(pos) != 1 or isinstance(pos[0], bool) or not isinstance(pos[0], int) \
                or pos[0] < 1:
            raise refused()
        return int(pos[0])
