"""A stolen token is worth no more than it allows, for no longer than it lives (issue 9):
a token minted by another never outlives it and is revoked with it, through every path
that mints one (``POST /v1/auth/tokens``, a sub-account's first token)."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _short_lived(api: Any, seconds: int = 600) -> tuple[Any, dict[str, Any]]:
    status, tok = await api.post("/v1/auth/tokens", {"name": "short", "permissions": ["admin"],
                                                     "expires_in_seconds": seconds})
    assert status == 201, tok
    return api.with_token(tok["token"]), tok


async def test_minted_token_never_outlives_its_minter(api: Any) -> None:
    short, parent = await _short_lived(api)
    status, child = await short.post("/v1/auth/tokens", {"name": "forever",
                                                         "permissions": ["admin"]})
    assert status == 201, child
    assert child["expires_at"] is not None
    assert _t(child["expires_at"]) <= _t(parent["expires_at"])
    for later in ({"expires_in_seconds": 3600}, {"expires_at": "2035-01-01T00:00:00Z"}):
        status, err = await short.post("/v1/auth/tokens", {"name": "later",
                                                           "permissions": ["read"], **later})
        assert status == 400, err
        assert any(d.startswith("expires_at") for d in err["error"]["details"]), err
    # A sub-account's first token, minted by the short-lived one, is clamped too.
    status, acct = await short.post("/v1/reseller/accounts", {
        "email": f"sub-{secrets.token_hex(3)}@customers.example", "domain_limit": 1,
        "email_user_limit": 1})
    assert status == 201, acct
    status, tokens = await api.with_token(acct["token"]).get("/v1/auth/tokens")
    assert status == 200, tokens
    first = next(t for t in tokens["tokens"] if t["id"] == acct["token_id"])
    assert first["expires_at"] is not None
    assert _t(first["expires_at"]) <= _t(parent["expires_at"])


async def test_revoking_a_token_revokes_everything_it_minted(api: Any) -> None:
    short, parent = await _short_lived(api)
    status, child = await short.post("/v1/auth/tokens", {"name": "child",
                                                         "permissions": ["admin"]})
    assert status == 201, child
    c = api.with_token(child["token"])
    status, grandchild = await c.post("/v1/auth/tokens", {"name": "grandchild",
                                                          "permissions": ["read"]})
    assert status == 201, grandchild
    status, acct = await c.post("/v1/reseller/accounts", {
        "email": f"sub-{secrets.token_hex(3)}@customers.example", "domain_limit": 1,
        "email_user_limit": 1})
    assert status == 201, acct
    minted = [child["token"], grandchild["token"], acct["token"]]
    for tok in minted:
        assert (await api.with_token(tok).get("/v1/account"))[0] == 200
    # An unrelated token of the same account stays valid.
    _, sibling = await _short_lived(api)
    status, _ = await api.delete(f"/v1/auth/tokens/{parent['id']}")
    assert status == 204
    for tok in [parent["token"], *minted]:
        status, err = await api.with_token(tok).get("/v1/account")
        assert status == 401, (tok[:12], err)
    assert (await api.with_token(sibling["token"]).get("/v1/account"))[0] == 200


async def test_idempotency_keys_are_the_calling_tokens_own(api: Any,
                                                           make_domain: Any) -> None:
    """Another token of the same account reusing a key (and body) is neither answered
    from the first token's request nor blocked by it."""
    from support import ready_domain

    mine, theirs = make_domain(), make_domain()
    await ready_domain(api, mine)
    await ready_domain(api, theirs)
    status, restricted = await api.post("/v1/auth/tokens", {
        "name": "restricted", "permissions": ["write"], "domains": [mine]})
    assert status == 201, restricted
    r = api.with_token(restricted["token"])
    key = secrets.token_hex(8)
    body = {"domain": theirs, "username": "idem"}
    # The unrestricted token goes first; the restricted token replaying its key must not
    # receive that answer (a mailbox of a domain outside its restriction).
    status, first = await api.post("/v1/email-users", body, headers={"Idempotency-Key": key})
    assert status == 202, first
    status, answer = await r.post("/v1/email-users", body, headers={"Idempotency-Key": key})
    assert status == 404, answer
    # And the other way: a key the restricted token used does not occupy the other's.
    key2 = secrets.token_hex(8)
    status, _ = await r.post("/v1/email-users", {"domain": mine, "username": "a1"},
                             headers={"Idempotency-Key": key2})
    assert status == 202
    status, other = await api.post("/v1/email-users", {"domain": mine, "username": "a2"},
                                   headers={"Idempotency-Key": key2})
    assert status == 202 and other["email"] == f"a2@{mine}", other
