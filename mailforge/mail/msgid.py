"""Opaque message ids (``msg_…``): the mailbox, folder, UIDVALIDITY and UID of a message,
encrypted and authenticated with a key derived from the master key.

Deterministic (the same message always gets the same id, so clients can deduplicate):
the AES-GCM nonce is an HMAC of the plaintext, a synthetic-IV construction. Changing
any byte fails authentication, so an id cannot be forged to reach another mailbox;
the API also checks that the mailbox belongs to the caller's account.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..secretbox import SecretBox

PREFIX = "msg_"
# nonce (12) + tag (16) + at least "m\0f\00\00"; the whole id stays under 400 chars.
_MIN_BLOB = 12 + 16 + 7
_CANONICAL = re.compile(r"msg_[A-Za-z0-9_-]{47,396}")


def _b64(blob: bytes) -> str:
    return base64.urlsafe_b64encode(blob).decode().rstrip("=")


def canonical_folder(name: str) -> str:
    """INBOX is case-insensitive in IMAP (RFC 3501), every other name is not: one
    spelling of INBOX, so that a message in it has one id."""
    return "INBOX" if name.upper() == "INBOX" else name


@dataclass(frozen=True)
class MessageRef:
    mailbox_id: str
    folder: str
    uidvalidity: int
    uid: int


class MessageIds:
    def __init__(self, box: SecretBox) -> None:
        self._mac = box.derive("message-id-nonce")
        self._aead = AESGCM(box.derive("message-id-key"))

    def encode(self, ref: MessageRef) -> str:
        plain = "\0".join((ref.mailbox_id, ref.folder, str(ref.uidvalidity),
                           str(ref.uid))).encode()
        nonce = hmac.new(self._mac, plain, "sha256").digest()[:12]
        blob = nonce + self._aead.encrypt(nonce, plain, b"msg")
        return PREFIX + _b64(blob)

    def decode(self, value: str) -> MessageRef | None:
        """The message *value* names, or None. Only the canonical spelling decodes
        (urlsafe alphabet, no padding, no stray trailing bits): one message, one id.
        Anything else (a ``+``/``/`` spelling, ``=`` padding, a changed last
        character that decodes to the same bytes) is no id at all."""
        if not isinstance(value, str) or not _CANONICAL.fullmatch(value):
            return None
        text = value[len(PREFIX):]
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            return None
        if len(blob) < _MIN_BLOB or PREFIX + _b64(blob) != value:
            return None
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], b"msg")
            mailbox_id, folder, validity, uid = plain.decode().split("\0")
            ref = MessageRef(mailbox_id, folder, int(validity), int(uid))
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None
        if canonical_folder(ref.folder) != ref.folder:
            return None
        # Deterministic ids: the id of what we decoded must be the value we were given.
        return ref if hmac.compare_digest(self.encode(ref), value) else None
