"""The domain slice without the stack: the conflict rule the DNS step and dns-status
share, the domain list's round trips (one query for a page with its reputation, however
long), its cursor, and the service refusing a DKIM rotation before anything is written."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from mailforge import paging
from mailforge.config import Config
from mailforge.dns.conflicts import blocks, conflicted_names, is_conflict
from mailforge.errors import NotFound, ValidationFailed
from mailforge.models import Domain, Principal
from mailforge.service import dns as dns_service
from mailforge.service import domains as domains_service
from mailforge.store import scope
from mailforge.store.db import Database
from mailforge.store.domains import Domains

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PRINCIPAL = Principal(token_id="tok_1", account_id="acct_a", permissions=frozenset({"admin"}))


def test_a_conflict_left_to_the_operator_blocks_nothing() -> None:
    conflicted = conflicted_names(["example.test. already has a SPF record mailforge did "
                                   "not create; left alone"])
    assert conflicted == {"example.test."}
    assert is_conflict("spf", "example.test.", "mismatch", conflicted)
    assert not blocks("spf", "example.test.", "mismatch", True, conflicted)
    # Only SPF and DMARC yield, only at the conflicted name, only as a mismatch.
    assert blocks("mx", "example.test.", "mismatch", True, conflicted)
    assert blocks("spf", "other.test.", "mismatch", True, conflicted)
    assert blocks("spf", "example.test.", "missing", True, conflicted)
    assert not blocks("mta-sts", "example.test.", "missing", False, conflicted)
    assert not blocks("mx", "example.test.", "ok", True, conflicted)


def _row(n: int) -> dict[str, Any]:
    return {"id": f"dom_{n:04d}aaaaaaaa", "account_id": "acct_a", "name": f"d{n}.test",
            "unicode_name": f"d{n}.test", "status": "active", "mail_host": "default",
            "dns_provider": "manual", "backend_enabled": True, "deleted": False,
            "generation": 2, "observed_generation": 2, "last_error": None,
            "created_at": T0 + timedelta(seconds=n), "updated_at": T0,
            "ownership_verified_at": T0, "sent": 100, "bounces": n % 3, "complaints": 0}


class _Conn:
    def __init__(self, rows: list[dict[str, Any]], log: list[tuple[str, tuple[Any, ...]]]):
        self.rows, self.log = rows, log

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        self.log.append((query, args))
        limit, offset = args[1], args[2]
        return self.rows[offset:offset + limit]

    async def fetchval(self, query: str, *args: Any) -> int:
        self.log.append((query, args))
        return len(self.rows)


class _Pool:
    def __init__(self, conn: _Conn) -> None:
        self.conn = conn

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        yield self.conn


@pytest.mark.parametrize("size", [1, 50, 500])
async def test_a_page_of_domains_and_their_reputation_is_one_query(size: int) -> None:
    log: list[tuple[str, tuple[Any, ...]]] = []
    rows = [_row(n) for n in range(size + 3)]
    repo = Domains(Database(cast(Any, _Pool(_Conn(rows, log)))))
    scope.set_domains(None)
    page = await repo.list_page("acct_a", size, 0, None, 30)
    # The page (with every domain's counts) in one statement, and the count: not one
    # query per domain, whatever the page size.
    assert len(log) == 2, [q.split("\n")[0] for q, _ in log]
    rows_query, args = log[0]
    assert "domain_reputation_counts" in rows_query and args[1] == size + 1
    assert args[0] == "acct_a" and args[3] is None and args[6] == 30
    assert len(page.items) == size and page.total == size + 3
    assert page.items[-1][1].bounces == (size - 1) % 3
    last = page.items[-1][0]
    assert page.next_position == (last.created_at, last.id)


async def test_the_last_page_has_no_next_position_and_the_restriction_is_passed() -> None:
    log: list[tuple[str, tuple[Any, ...]]] = []
    repo = Domains(Database(cast(Any, _Pool(_Conn([_row(1), _row(2)], log)))))
    scope.set_domains(frozenset({"d2.test", "d1.test"}))
    try:
        page = await repo.list_page("acct_a", 5, 0, (T0, "dom_0000aaaaaaaa"), 7)
    finally:
        scope.set_domains(None)
    assert page.next_position is None and len(page.items) == 2
    _, args = log[0]
    assert args[3] == ["d1.test", "d2.test"] and args[4:6] == (T0, "dom_0000aaaaaaaa")
    assert log[1][1] == ("acct_a", ["d1.test", "d2.test"])


def test_a_domain_list_cursor_round_trips_and_a_foreign_one_is_refused() -> None:
    at = T0 + timedelta(microseconds=123456)
    cursor = paging.encode(domains_service.CURSOR_SORT, [at.isoformat(), "dom_01abcdef"])
    assert domains_service._position(cursor) == (at, "dom_01abcdef")
    for bad in (paging.encode("jobs:created_at", [at.isoformat(), "dom_01abcdef"]),
                paging.encode(domains_service.CURSOR_SORT, ["yesterday", "dom_01abcdef"]),
                paging.encode(domains_service.CURSOR_SORT, [at.isoformat(), "usr_01abcdef"]),
                paging.encode(domains_service.CURSOR_SORT,
                              [at.replace(tzinfo=None).isoformat(), "dom_01abcdef"]),
                paging.encode(domains_service.CURSOR_SORT, [1, "dom_01abcdef"]), "zz"):
        with pytest.raises(ValidationFailed) as exc:
            domains_service._position(bad)
        assert exc.value.details[0].startswith("cursor: ")


def _domain(**kw: Any) -> Domain:
    base = Domain(id="dom_01abcdef", account_id="acct_a", name="d.test",
                  unicode_name="d.test", status="pending", mail_host="default",
                  dns_provider="manual", backend_enabled=False, deleted=False, generation=1,
                  observed_generation=0, last_error=None, created_at=T0, updated_at=T0)
    return replace(base, **kw)


class _Domains:
    def __init__(self, d: Domain) -> None:
        self.d = d
        self.requested: list[str] = []

    async def get(self, account_id: str, domain_id: str) -> Domain:
        return self.d

    async def request_rotation(self, account_id: str, domain_id: str) -> Any:
        self.requested.append(domain_id)
        return SimpleNamespace(id="job_1", status="pending")


@pytest.mark.parametrize("state", [{"backend_enabled": False},
                                   {"backend_enabled": True, "deleted": True}])
async def test_a_rotation_of_a_domain_not_set_up_is_refused_before_any_write(
        state: dict[str, Any]) -> None:
    repo = _Domains(_domain(**state))
    ctx = cast(Any, SimpleNamespace(cfg=Config(), store=SimpleNamespace(domains=repo)))
    with pytest.raises(NotFound) as exc:
        await dns_service.rotate_dkim(ctx, PRINCIPAL, "dom_01abcdef")
    assert exc.value.message == "No such set-up domain."
    assert repo.requested == []


async def test_a_rotation_records_the_request_and_makes_no_key() -> None:
    repo = _Domains(_domain(backend_enabled=True, status="active"))
    # No box, no DNS service, no key store: the request cannot make a key.
    ctx = cast(Any, SimpleNamespace(cfg=Config(), store=SimpleNamespace(domains=repo)))
    answer = await dns_service.rotate_dkim(ctx, PRINCIPAL, "dom_01abcdef")
    assert answer == {"job_id": "job_1", "status": "pending", "domain_id": "dom_01abcdef"}
    assert repo.requested == ["dom_01abcdef"]
