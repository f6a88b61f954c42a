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
