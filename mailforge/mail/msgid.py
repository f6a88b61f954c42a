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
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..secretbox import SecretBox

PREFIX = "msg_"


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
        return PREFIX + base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def decode(self, value: str) -> MessageRef | None:
        if not value.startswith(PREFIX) or len(value) > 400:
            return None
        text = value[len(PREFIX):]
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            plain = self._aead.decrypt(blob[:12], blob[12:], b"msg")
            mailbox_id, folder, validity, uid = plain.decode().split("\0")
            return MessageRef(mailbox_id, folder, int(validity), int(uid))
        except (InvalidTag, ValueError, UnicodeDecodeError):
            return None
