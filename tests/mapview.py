"""Postfix's maps of some domain states as text lines (``key value``), for unit tests of
the rendering: the states are rendered, written into an in-memory copy of Postfix's
database and read back through the very queries Postfix runs (tables.map_lines)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from mailforge.backends.postfix_dovecot.layout import POSTFIX_SCHEMA
from mailforge.backends.postfix_dovecot.render import (
    DEFAULT_ROUTING,
    AuthUser,
    Routing,
    render,
)
from mailforge.backends.postfix_dovecot.tables import map_lines, sync_postfix
from mailforge.models import DomainState


@dataclass(frozen=True)
class Maps:
    users: tuple[AuthUser, ...]
    domains: str
    mailboxes: str
    aliases: str
    senders: str


def new_db(routing: Routing = DEFAULT_ROUTING) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript(POSTFIX_SCHEMA)
    db.executemany("INSERT INTO roles VALUES (?, ?)",
                   [(r, routing.role_target or None) for r in routing.role_addresses])
    return db


def text(db: sqlite3.Connection) -> dict[str, str]:
    return {k: "".join(line + "\n" for line in v) for k, v in map_lines(db).items()}


def maps(*states: DomainState, default_quota_mb: int = 1024,
         routing: Routing = DEFAULT_ROUTING) -> Maps:
    db = new_db(routing)
    rows = [render(st, default_quota_mb, routing) for st in states]
    sync_postfix(db, rows)
    t = text(db)
    return Maps(tuple(u for r in rows for u in r.users), t["virtual_domains"],
                t["virtual_mailboxes"], t["virtual_aliases"], t["sender_logins"])
