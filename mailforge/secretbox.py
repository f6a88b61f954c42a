"""Encryption of secrets at rest (DKIM private keys, external credentials, one-time
passwords kept briefly for a job) with the operator's master key.

AES-256-GCM from ``cryptography``; each value gets a random nonce and is bound to a
context string (``aad``), so a ciphertext copied to another column or row does not
decrypt there.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .config import Config, ConfigError

_VERSION = b"\x01"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("master key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, label: str) -> bytes:
        """A 32-byte key for one purpose (HMAC of *label* under the master key)."""
        import hmac

        return hmac.new(self._key, b"mailforge-derive:" + label.encode(), "sha256").digest()

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, blob: bytes, context: str) -> bytes:
        if blob[:1] != _VERSION:
            raise ValueError("unknown secret format")
        return self._aead.decrypt(blob[1:13], blob[13:], context.encode())

    def __repr__(self) -> str:  # never show key material
        return "SecretBox(<key>)"


def generate_key() -> str:
    """A new master key, base64 text as kept in the key file."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _decode(text: str, source: str, key: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise ConfigError(source, key, "must be 32 bytes in base64") from None
    if len(raw) != 32:
        raise ConfigError(source, key, "must be 32 bytes in base64")
    return raw


def from_config(cfg: Config) -> SecretBox:
    """The box for the configured master key (environment first, then the key file)."""
    if cfg.secrets.master_key:
        return SecretBox(_decode(cfg.secrets.master_key, cfg.source, "secrets.master_key"))
    if cfg.secrets.master_key_file:
        path = Path(cfg.secrets.master_key_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(cfg.source, "secrets.master_key_file",
                              f"cannot read {path}: {exc.strerror}") from None
        if path.stat().st_mode & 0o077:
            raise ConfigError(cfg.source, "secrets.master_key_file",
                              f"{path} must not be readable by group or others (chmod 600)")
        return SecretBox(_decode(text, cfg.source, "secrets.master_key_file"))
    raise ConfigError(cfg.source, "secrets.master_key_file",
                      "a master key is required (file, or MAILFORGE_MASTER_KEY)")
