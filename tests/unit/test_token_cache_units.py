"""The token cache's rules without a database: entries only while listening, only
from lookups no invalidation raced, short-lived, dropped by the notifications."""

from __future__ import annotations

import time

import pytest

from mailforge.models import Principal
from mailforge.store.tokencache import Entry, TokenCache


def _entry(account: str = "acct_a", fetched: float | None = None) -> Entry:
    now = time.monotonic() if fetched is None else fetched
    return Entry(b"h" * 32, Principal("tok_x", account, frozenset({"read"})), None, now, now)


def _cache(ttl: float = 5.0) -> TokenCache:
    cache = TokenCache("postgresql:///unused", ttl)
    cache.listening = True  # as once the LISTEN connection is up
    return cache


def test_nothing_is_cached_or_answered_while_not_listening() -> None:
    cache = _cache()
    cache.put("tok_1", _entry(), cache.generation)
    assert cache.get("tok_1") is not None
    cache.listening = False
    assert cache.get("tok_1") is None
    cache.put("tok_2", _entry(), cache.generation)
    cache.listening = True
    assert cache.get("tok_2") is None


def test_a_lookup_raced_by_an_invalidation_is_not_stored() -> None:
    cache = _cache()
    started = cache.generation
    cache.invalidate("tok tok_1")  # the revocation commits while the lookup runs
    cache.put("tok_1", _entry(), started)
    assert cache.get("tok_1") is None
    cache.put("tok_1", _entry(), cache.generation)
    assert cache.get("tok_1") is not None


@pytest.mark.parametrize("payload", ["tok tok_1", "acct acct_a", "*", "", "garbage"])
def test_notifications_drop_what_they_name(payload: str) -> None:
    cache = _cache()
    cache.put("tok_1", _entry("acct_a"), cache.generation)
    cache.put("tok_2", _entry("acct_b"), cache.generation)
    cache.invalidate(payload)
    assert cache.get("tok_1") is None
    # Only what the payload names goes; an unknown payload empties everything.
    assert (cache.get("tok_2") is None) == (payload not in ("tok tok_1", "acct acct_a"))


def test_entries_live_ttl_seconds_at_most() -> None:
    cache = _cache(ttl=5.0)
    cache.put("tok_old", _entry(fetched=time.monotonic() - 5.01), cache.generation)
    assert cache.get("tok_old") is None
    assert len(cache) == 0


def test_zero_ttl_caches_nothing_and_size_is_bounded() -> None:
    off = _cache(ttl=0)
    off.put("tok_1", _entry(), off.generation)
    assert off.get("tok_1") is None
    small = TokenCache("postgresql:///unused", 5.0, max_entries=3)
    small.listening = True
    for n in range(10):
        small.put(f"tok_{n}", _entry(), small.generation)
    assert len(small) == 3
    assert small.get("tok_9") is not None and small.get("tok_0") is None
