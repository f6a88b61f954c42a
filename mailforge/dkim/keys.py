"""DKIM key generation (RSA-2048 and Ed25519, RFC 8463) and the pure lifecycle rules.

Lifecycle per key: pending -> published (its TXT record answered by the authoritative
servers) -> active (signing) -> retiring (no longer signs, still published) -> revoked
(published with an empty p=) -> deleted. A key is only activated once its record
verified, so mail is never signed by a key that is not visible in DNS.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ALGORITHMS = ("rsa", "ed25519")


@dataclass(frozen=True)
class NewKey:
    algorithm: str
    selector: str
    public_key: str  # base64, as in the p= tag
    private_key: bytes  # as the signer reads it (PEM for RSA, base64 seed for Ed25519)


def selector_for(algorithm: str, now: datetime, taken: set[str]) -> str:
    """A dated selector (``mf202611a-rsa``), unique among *taken*."""
    base = f"mf{now:%Y%m%d}"
    for suffix in "abcdefghijklmnopqrstuvwxyz":
        sel = f"{base}{suffix}-{algorithm}"
        if sel not in taken:
            return sel
    return f"mf{now:%Y%m%d%H%M%S}-{algorithm}"


def generate(algorithm: str, selector: str, rsa_bits: int = 2048) -> NewKey:
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        pub = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        return NewKey("rsa", selector, base64.b64encode(pub).decode(), pem)
    if algorithm == "ed25519":
        ek = ed25519.Ed25519PrivateKey.generate()
        seed = ek.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        pub_raw = ek.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        # RFC 8463: p= is the base64 of the raw 32-byte public key; dkimpy reads the
        # private key as the base64 of the 32-byte seed.
        return NewKey("ed25519", selector, base64.b64encode(pub_raw).decode(),
                      base64.b64encode(seed) + b"\n")
    raise ValueError(f"unknown DKIM algorithm {algorithm!r}")


class KeyPool:
    """RSA keys made ahead of need: generating an RSA-2048 key takes 50-200 ms of CPU
    here, on the critical path of a domain's setup. The engine's process keeps a few
    ready (in memory only, never written unsealed; lost harmlessly at exit) and makes
    the next one in a thread after each is taken. Ed25519 keys cost microseconds and
    are made when asked. A key from the pool is as fresh as one made at once: its
    selector (which dates it) is given when it is taken."""

    def __init__(self, rsa_bits: int = 2048, size: int = 2) -> None:
        self.rsa_bits = rsa_bits
        self.size = size
        self._ready: list[NewKey] = []
        self._filling: asyncio.Task[None] | None = None

    def prime(self) -> None:
        """Start making keys (call on the running event loop of the engine's process)."""
        if self.size and (self._filling is None or self._filling.done()):
            self._filling = asyncio.create_task(self._fill(), name="dkim-key-pool")

    async def _fill(self) -> None:
        while len(self._ready) < self.size:
            self._ready.append(await asyncio.to_thread(generate, "rsa", "", self.rsa_bits))

    async def take(self, algorithm: str, selector: str) -> NewKey:
        if algorithm == "rsa" and self._ready:
            key = dataclasses.replace(self._ready.pop(0), selector=selector)
            self.prime()
            return key
        key = await asyncio.to_thread(generate, algorithm, selector, self.rsa_bits)
        if algorithm == "rsa":
            self.prime()
        return key


@dataclass(frozen=True)
class KeyView:
    id: str
    algorithm: str
    selector: str
    state: str
    created_at: datetime
    state_changed_at: datetime


@dataclass(frozen=True)
class Transition:
    key_id: str
    to: str  # new state, or "deleted"


def due_transitions(keys: list[KeyView], now: datetime, retire_after: timedelta,
                    revoked_for: timedelta) -> list[Transition]:
    """Time-based moves: retiring keys are revoked after *retire_after*, revoked
    records are removed after *revoked_for*."""
    out = []
    for k in keys:
        if k.state == "retiring" and now - k.state_changed_at >= retire_after:
            out.append(Transition(k.id, "revoked"))
        elif k.state == "revoked" and now - k.state_changed_at >= revoked_for:
            out.append(Transition(k.id, "deleted"))
    return out


def needs_new_key(keys: list[KeyView], algorithm: str, now: datetime,
                  rotate_after: timedelta) -> bool:
    """A new key is due when the algorithm has no key on its way (pending/published)
    and its active key is missing or older than *rotate_after*."""
    mine = [k for k in keys if k.algorithm == algorithm]
    if any(k.state in ("pending", "published") for k in mine):
        return False
    active = [k for k in mine if k.state == "active"]
    return not active or all(now - k.created_at >= rotate_after for k in active)


def promotions(keys: list[KeyView], verified_selectors: set[str]) -> list[Transition]:
    """Pending keys whose record verified become published (the signer may load them)."""
    return [Transition(k.id, "published") for k in keys
            if k.state == "pending" and k.selector in verified_selectors]


def activations(keys: list[KeyView]) -> list[Transition]:
    """Once the signer loaded the newest published key of an algorithm, it is active
    and the key it replaces starts retiring. The signer lists a domain only with a key
    of each algorithm, so nothing is activated before both are there."""
    if not all(any(k.algorithm == a and k.state in ("published", "active") for k in keys)
               for a in ALGORITHMS):
        return []
    out = []
    for alg in ALGORITHMS:
        ready = [k for k in keys if k.algorithm == alg and k.state == "published"]
        if not ready:
            continue
        newest = max(ready, key=lambda k: k.created_at)
        out.append(Transition(newest.id, "active"))
        out += [Transition(k.id, "retiring") for k in keys
                if k.algorithm == alg and k.id != newest.id
                and k.state in ("active", "published")]
    return out


def next_due(keys: list[KeyView], rotate_after: timedelta, retire_after: timedelta,
             revoked_for: timedelta) -> datetime | None:
    """When the next time-based transition falls due (for re-visiting the domain)."""
    times = []
    for k in keys:
        if k.state == "active":
            times.append(k.created_at + rotate_after)
        elif k.state == "retiring":
            times.append(k.state_changed_at + retire_after)
        elif k.state == "revoked":
            times.append(k.state_changed_at + revoked_for)
    return min(times) if times else None
