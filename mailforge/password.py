"""Mailbox passwords: generation and hashing in the formats Dovecot verifies.

Hashing happens here, in-process, never by running ``doveadm pw`` per user
(a process start costs ~12 ms; SHA512-CRYPT in-process costs ~4.3 ms here). The
reconcile pass hashes in a process pool (``pending_passwords``), never the request.

Schemes: ``passwords.scheme`` for passwords a user chose, ``passwords.generated_scheme``
for the ones mailforge generates (see "Password hashing" in docs/security.md):
- ``sha512-crypt`` (default): ``{SHA512-CRYPT}$6$...``, 5000 rounds.
- ``argon2id``: ``{ARGON2ID}$argon2id$...`` with parallelism 1, the only lane count
  libsodium (which Dovecot uses to verify) accepts.
- ``ssha512``: ``{SSHA512}`` (one salted SHA-512, ~4 us), for generated passwords only:
  with >= 142 bits of entropy no guessing attack exists for a slow hash to slow down.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import string
import sys
import warnings

if sys.version_info >= (3, 13):  # pragma: no cover - the stdlib module was removed
    import crypt_r as _crypt
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt as _crypt

_ALPHABET = string.ascii_letters + string.digits
SCHEMES = ("sha512-crypt", "argon2id", "ssha512")
_SYMBOL_OF_BYTE = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) for b in range(256))
_REJECTED_BYTES = bytes(range(len(_ALPHABET) * 4, 256))


def generate(length: int = 24) -> str:
    """A random password of *length* characters from 62 symbols (~5.95 bits each).

    Random bytes below 248 (4 x 62) map to a symbol each, the rest are dropped, so every
    symbol is equally likely; one ``bytes.translate`` instead of a ``secrets.choice``
    per character (~1 us instead of ~55 us: 500 of them are on a request path)."""
    out = b""
    while len(out) < length:
        out += os.urandom(length + 8).translate(_SYMBOL_OF_BYTE, _REJECTED_BYTES)
    return out[:length].decode()


def lower_priority() -> None:
    """Initializer of the hashing processes: hashing yields the CPU to serving."""
    with contextlib.suppress(OSError):
        os.nice(10)


def hash_password(password: str, scheme: str = "sha512-crypt") -> str:
    """Return the Dovecot-style hash ``{SCHEME}...`` of *password*."""
    if scheme == "sha512-crypt":
        salt = _crypt.mksalt(_crypt.METHOD_SHA512)
        return "{SHA512-CRYPT}" + _crypt.crypt(password, salt)
    if scheme == "ssha512":
        salt16 = os.urandom(16)
        return "{SSHA512}" + base64.b64encode(hashlib.sha512(password.encode() + salt16)
                                              .digest() + salt16).decode()
    if scheme == "argon2id":
        from argon2 import PasswordHasher

        # 64 MiB, 3 passes, one lane: the RFC 9106 second recommendation, lane count
        # reduced to 1 for libsodium.
        hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)
        return "{ARGON2ID}" + hasher.hash(password)
    raise ValueError(f"unknown password scheme {scheme!r}")


def hash_many(items: list[tuple[str, str]]) -> list[str]:
    """:func:`hash_password` of each (password, scheme): one task of a process pool for
    a share of a batch, so a batch costs a few round trips to the pool, not one each."""
    return [hash_password(p, s) for p, s in items]


def verify(password: str, hashed: str) -> bool:
    """Check *password* against a hash made by :func:`hash_password` (tests, API checks)."""
    if hashed.startswith("{SHA512-CRYPT}"):
        h = hashed[len("{SHA512-CRYPT}") :]
        return secrets.compare_digest(_crypt.crypt(password, h), h)
    if hashed.startswith("{SSHA512}"):
        raw = base64.b64decode(hashed[len("{SSHA512}") :])
        digest, salt = raw[:64], raw[64:]
        return secrets.compare_digest(hashlib.sha512(password.encode() + salt).digest(),
                                      digest)
    if hashed.startswith("{ARGON2ID}"):
        from argon2 import PasswordHasher
        from argon2.exceptions import VerificationError

        try:
            return PasswordHasher().verify(hashed[len("{ARGON2ID}") :], password)
        except VerificationError:
            return False
    return False
