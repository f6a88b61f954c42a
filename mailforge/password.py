"""Mailbox passwords: generation and hashing in the formats Dovecot verifies.

Hashing happens here, in-process, never by running ``doveadm pw`` per user
(a process start costs ~12 ms; SHA512-CRYPT in-process costs ~2 ms).

Two schemes, chosen by ``passwords.scheme``:
- ``sha512-crypt`` (default): ``{SHA512-CRYPT}$6$...``, fast. Generated passwords
  carry > 140 bits of entropy, so a slow hash buys them nothing.
- ``argon2id``: ``{ARGON2ID}$argon2id$...`` with parallelism 1, the only lane count
  libsodium (which Dovecot uses to verify) accepts.
"""

from __future__ import annotations

import contextlib
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
SCHEMES = ("sha512-crypt", "argon2id")


def generate(length: int = 24) -> str:
    """A random password of *length* characters from 62 symbols (~5.95 bits each)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def lower_priority() -> None:
    """Initializer of the hashing processes: hashing yields the CPU to serving."""
    with contextlib.suppress(OSError):
        os.nice(10)


def hash_password(password: str, scheme: str = "sha512-crypt") -> str:
    """Return the Dovecot-style hash ``{SCHEME}...`` of *password*."""
    if scheme == "sha512-crypt":
        salt = _crypt.mksalt(_crypt.METHOD_SHA512)
        return "{SHA512-CRYPT}" + _crypt.crypt(password, salt)
    if scheme == "argon2id":
        from argon2 import PasswordHasher

        # 64 MiB, 3 passes, one lane: the RFC 9106 second recommendation, lane count
        # reduced to 1 for libsodium.
        hasher = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=1)
        return "{ARGON2ID}" + hasher.hash(password)
    raise ValueError(f"unknown password scheme {scheme!r}")


def verify(password: str, hashed: str) -> bool:
    """Check *password* against a hash made by :func:`hash_password` (tests, API checks)."""
    if hashed.startswith("{SHA512-CRYPT}"):
        h = hashed[len("{SHA512-CRYPT}") :]
        return secrets.compare_digest(_crypt.crypt(password, h), h)
    if hashed.startswith("{ARGON2ID}"):
        from argon2 import PasswordHasher
        from argon2.exceptions import VerificationError

        try:
            return PasswordHasher().verify(hashed[len("{ARGON2ID}") :], password)
        except VerificationError:
            return False
    return False
