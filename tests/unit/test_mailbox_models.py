"""The mailbox and alias request models (schema/email_users.py, schema/aliases.py) and
what the generated document says of them, without a database: every bad field named in
one answer, duplicates named with the item that repeats, configuration-bound limits in
both the check and the document, the hosted products' style names accepted."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import pytest
from openapi_spec_validator import validate as validate_openapi

from mailforge import names
from mailforge.api import app as app_mod
from mailforge.api.openapi import DOC_KEY
from mailforge.config import Config
from mailforge.errors import ValidationFailed
from mailforge.schema.aliases import AliasFilters, AliasTargets, NewAlias
from mailforge.schema.base import validate
from mailforge.schema.email_users import (
    EmailUserChanges,
    EmailUserFilters,
    EmailUserIds,
    GenerateNames,
    NewEmailUser,
    NewEmailUsers,
)
from mailforge.service.context import ServiceContext


def _cfg(bulk: int = 500) -> Config:
    cfg = Config()
    return replace(cfg, limits=replace(cfg.limits, bulk_max_items=bulk))


def _details(model: Any, data: Any, cfg: Config | None = None) -> list[str]:
    with pytest.raises(ValidationFailed) as exc:
        validate(model, data, cfg or _cfg())
    return exc.value.details


def test_a_bulk_names_every_bad_item_and_every_repeat_at_once() -> None:
    users: list[dict[str, Any]] = [{"username": f"u{n}"} for n in range(10)]
    users[7]["username"] = "bad name!"
    users[9]["username"] = "U3"  # another spelling of users[3]
    users[2]["quota_mb"] = "5"
    details = _details(NewEmailUsers, {"domain": "Example.COM.", "users": users})
    assert details == ["users[2].quota_mb: must be an integer",
                       "users[7].username: must not contain whitespace",
                       "users[9].username: u3 is also users[3]"]


def test_bulk_size_follows_the_configuration_and_skips_item_checks() -> None:
    users = [{"username": "same"}] * 4
    assert _details(NewEmailUsers, {"domain": "a.test", "users": users}, _cfg(3)) == \
        ["users: must be a list of 1 to 3 users (got 4)"]
    ok = validate(NewEmailUsers, {"domain": "a.test", "users": [{"username": "a"}]}, _cfg(3))
    assert ok.users[0].username == "a"


def test_single_creation_canonicalises_and_names_fields() -> None:
    made = validate(NewEmailUser, {"domain": "B\u00fccher\u3002Example.", "username": "Sarah",
                                   "name": " Sarah Chen "}, _cfg())
    assert (made.domain, made.username, made.name) == ("xn--bcher-kva.example", "sarah",
                                                       "Sarah Chen")
    assert validate(NewEmailUser, {"domain": "dom_01abc", "username": "a"}, _cfg()).domain \
        == "dom_01abc"
    details = _details(NewEmailUser, {"domain": "dom_x!", "username": 5, "quota_mb": True,
                                      "password": "short", "zz": 1})
    assert sorted(d.split(":")[0] for d in details) == ["domain", "password", "quota_mb",
                                                        "username", "zz"]
    assert "short" not in str(details)  # never the value (it may be a password)


def test_patch_rules() -> None:
    assert _details(EmailUserChanges, {}) == ["body: give at least one field to change"]
    assert _details(EmailUserChanges, {"password": "p" * 20, "reset_password": True}) == \
        ["password: give either password or reset_password, not both"]
    details = _details(EmailUserChanges, {"reset_password": False, "status": "gone",
                                          "signature": "a\0b", "daily_send_limit": -1})
    assert sorted(d.split(":")[0] for d in details) == ["daily_send_limit", "reset_password",
                                                        "signature", "status"]
    cleared = validate(EmailUserChanges, {"daily_send_limit": None, "name": None}, _cfg())
    assert cleared.model_fields_set == {"daily_send_limit", "name"}


def test_bulk_delete_ids() -> None:
    details = _details(EmailUserIds, {"ids": ["usr_a", "usr_b", "usr_a", "ali_x", 3]})
    assert details == ["ids[3]: must be an email user id (usr_...)", "ids[4]: must be a string",
                       "ids[2]: usr_a is also ids[0]"]


def test_alias_targets_are_canonical_and_distinct() -> None:
    made = validate(NewAlias, {"domain": "a.test", "username": "*",
                               "targets": ["Bob@A.TEST.", "dave@b\u00fccher\u3002example"]},
                    _cfg())
    assert made.username == "" and made.targets == ["bob@a.test",
                                                    "dave@xn--bcher-kva.example"]
    details = _details(NewAlias, {"domain": "a.test", "username": "bad name",
                                  "targets": ["bob@a.test", "BOB@a.test.", "x", None]})
    assert details == ['username: must not contain whitespace (or "*" for a catch-all)',
                       "targets[2]: must be an address of the form local@domain",
                       "targets[3]: must be a string",
                       "targets[1]: bob@a.test is also targets[0]"]
    assert _details(AliasTargets, {"targets": ["b@a.test"] * 51}) == \
        ["targets: must hold at most 50 items"]


def test_list_queries() -> None:
    q = validate(EmailUserFilters, {"limit": "7", "sort": "-email", "domain": "dom_x"}, _cfg())
    assert (q.limit, q.sort, q.domain) == (7, "-email", "dom_x")
    assert _details(EmailUserFilters, {"status": "zz", "search": "s" * 201}) == [
        "status: must be one of: pending, active, suspended, deleting, deleted, failed, connecting",
        "search: must be at most 200 characters"]
    assert validate(AliasFilters, {"cursor": "abc"}, _cfg()).cursor == "abc"


def test_seed_style_names_map_to_ours() -> None:
    assert validate(GenerateNames, {"count": 5, "style": "professional"}, _cfg()).style == \
        "professional"
    assert names.style("professional") == "dotted" and names.style("mixed") == "mixed"
    with pytest.raises(ValueError, match="must be one of"):
        names.style("casual")
    people = [("sarah", "chen"), ("james", "rivera"), ("maria", "santos")]
    out = names.generate(3, names.style("professional"), people, [], 5, set())
    assert out == ["sarah.chen", "james.r", "m.santos"]  # the seed's answer's shape


def test_the_document_describes_the_slice() -> None:
    ctx = cast(ServiceContext, type("Ctx", (), {"cfg": _cfg(7)})())
    doc = app_mod.make_app(ctx)[DOC_KEY]
    validate_openapi(doc)
    schemas = doc["components"]["schemas"]
    assert schemas["NewEmailUsers"]["properties"]["users"]["maxItems"] == 7
    assert schemas["EmailUserIds"]["properties"]["ids"]["maxItems"] == 7
    mine = [(path, method, op) for path, item in doc["paths"].items()
            for method, op in item.items()
            if isinstance(op, dict) and op.get("tags") in (["email-users"], ["aliases"])]
    # 19, and the 4 of connected mailboxes (issue 12).
    assert len(mine) == 23, [(p, m) for p, m, _ in mine]
    for path, method, op in mine:
        assert op["description"] and op["summary"], (path, method)
        body = op.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            assert body["example"], (path, method)
        for status, answer in op["responses"].items():
            if status.startswith("2"):
                assert answer["content"]["application/json"]["example"], (path, method)
    for name in ("NewEmailUser", "NewEmailUsers", "EmailUserChanges", "GenerateNames",
                 "NewAlias", "AliasTargets", "AliasDomain", "EmailUser", "Alias"):
        for field, prop in schemas[name]["properties"].items():
            assert prop.get("description") and "examples" in prop, (name, field)
