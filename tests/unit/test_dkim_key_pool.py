"""RSA DKIM keys made ahead of need (dkim.keys.KeyPool, issue 11): a taken key carries
the selector it is given, is never handed out twice, and the pool refills itself."""

from __future__ import annotations

import asyncio

from mailforge.dkim.keys import KeyPool


async def test_pool_hands_out_distinct_ready_keys_and_refills() -> None:
    pool = KeyPool(rsa_bits=1024, size=2)
    pool.prime()
    for _ in range(200):
        if len(pool._ready) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(pool._ready) == 2
    a = await pool.take("rsa", "sel-a")
    b = await pool.take("rsa", "sel-b")
    assert (a.selector, b.selector) == ("sel-a", "sel-b")
    assert a.public_key != b.public_key and a.private_key.startswith(b"-----BEGIN RSA")
    c = await pool.take("rsa", "sel-c")  # empty now: made at once
    assert c.public_key not in (a.public_key, b.public_key)
    e = await pool.take("ed25519", "sel-e")
    assert e.algorithm == "ed25519" and e.selector == "sel-e"
    for _ in range(200):
        if len(pool._ready) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(pool._ready) == 2
    assert {k.public_key for k in pool._ready}.isdisjoint(
        {a.public_key, b.public_key, c.public_key})
