"""Writing the rendered rows into the two SQLite databases, and reading Postfix's maps back.

Every function here works inside a transaction its caller opened: the backend commits
a batch's changes to each database at once, in the order that keeps a crash between
the two harmless (backend.py). Only the rows of the objects a state lists are touched,
except when a complete state makes a domain's rows equal to it (one read of the
domain's keys) or a domain stops being served (its rows go).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from .layout import POSTFIX_MAP_TABLES, POSTFIX_MAPS, POSTFIX_TABLE_QUERIES, postfix_query
from .render import AuthUser, DomainRows


def sync_postfix(db: sqlite3.Connection, batch: Sequence[DomainRows]) -> int:
    """Make Postfix's rows follow *batch*; returns the number of rows changed."""
    return sync_postfix_counted(db, batch)[0]


def _gone(db: sqlite3.Connection, complete: bool, listed: set[str], query: str,
          domain: str, removed: Sequence[str]) -> list[str]:
    """Keys of a domain's rows to delete: a complete state removes every key it does not
    list (*query* reads the domain's keys); a delta only its listed tombstones."""
    if not complete:
        return list(removed)
    return [k for (k,) in db.execute(query, (domain,)) if k not in listed]


def sync_postfix_counted(db: sqlite3.Connection,
                         batch: Sequence[DomainRows]) -> tuple[int, bool]:
    """sync_postfix, also telling whether the list of domains Postfix serves changed
    (a served domain or an alias domain added, removed or moved)."""
    changed = 0
    domain_list = 0
    for r in batch:
        d = r.domain
        if not r.present:
            for table in ("mailboxes", "alias_targets", "alias_domains", "domains"):
                n = db.execute(f"DELETE FROM {table} WHERE domain = ?", (d,)).rowcount
                changed += n
                if table in ("alias_domains", "domains"):
                    domain_list += n
            # Nor is it served as an alias of another domain: its target's pass may
            # fail or wait, and the name could be connected again by another tenant.
            n = db.execute("DELETE FROM alias_domains WHERE alias = ?", (d,)).rowcount
            changed += n
            domain_list += n
            continue
        n = db.execute("INSERT OR IGNORE INTO domains VALUES (?)", (d,)).rowcount
        # Alias domains are whole in every state.
        have = {a for (a,) in db.execute(
            "SELECT alias FROM alias_domains WHERE domain = ?", (d,))}
        want = set(r.alias_domains)
        for a in have - want:
            n += db.execute("DELETE FROM alias_domains WHERE alias = ? AND domain = ?",
                            (a, d)).rowcount
        for a in sorted(want - have):
            n += db.execute("INSERT OR REPLACE INTO alias_domains VALUES (?, ?)",
                            (a, d)).rowcount
        changed += n
        domain_list += n
        # Mailboxes: a complete state removes what it does not list; a delta removes only
        # its listed tombstones.
        gone = _gone(db, r.complete, {m.address for m in r.mailboxes},
                     "SELECT address FROM mailboxes WHERE domain = ?", d,
                     r.removed_mailboxes)
        for address in gone:
            changed += db.execute("DELETE FROM mailboxes WHERE address = ? AND domain = ?",
                                  (address, d)).rowcount
        for m in r.mailboxes:
            changed += db.execute(
                "INSERT INTO mailboxes VALUES (?, ?, ?, ?) ON CONFLICT (address) DO UPDATE"
                " SET domain = excluded.domain, created_us = excluded.created_us,"
                " id = excluded.id WHERE mailboxes.domain <> excluded.domain"
                " OR mailboxes.created_us <> excluded.created_us OR mailboxes.id <> excluded.id",
                (m.address, d, m.created_us, m.mailbox_id)).rowcount
        # Aliases, the same way; an alias's rows are its (source, target) pairs.
        gone = _gone(db, r.complete, {a.source for a in r.aliases},
                     "SELECT DISTINCT source FROM alias_targets WHERE domain = ?", d,
                     r.removed_aliases)
        for source in gone:
            changed += db.execute("DELETE FROM alias_targets WHERE source = ? AND domain = ?",
                                  (source, d)).rowcount
        for a in r.aliases:
            have = {t for (t,) in db.execute(
                "SELECT target FROM alias_targets WHERE source = ?", (a.source,))}
            for t in have - set(a.targets):
                changed += db.execute(
                    "DELETE FROM alias_targets WHERE source = ? AND target = ?",
                    (a.source, t)).rowcount
            for t in a.targets:
                if t not in have:
                    changed += db.execute("INSERT INTO alias_targets VALUES (?, ?, ?)",
                                          (a.source, t, d)).rowcount
    return changed, domain_list > 0


def _auth_row(r: tuple[Any, ...]) -> tuple[AuthUser, object]:
    return (AuthUser(str(r[0]), str(r[1]), int(r[2]), bool(r[3]), str(r[4] or "")), r[5])


def upsert_auth(db: sqlite3.Connection, batch: Sequence[DomainRows],
                home: Callable[[str, str], str]) -> int:
    """Write the changed Dovecot rows of *batch* (never removes one)."""
    rows = []
    for r in batch:
        if not r.present or not r.users:
            continue
        if r.complete:
            current = {str(x[0]): _auth_row(x) for x in db.execute(
                "SELECT local_part, password, quota_mb, login_allowed, mailbox_id, home"
                " FROM users WHERE domain = ?", (r.domain,))}
        else:
            current = {}
            for u in r.users:
                x = db.execute("SELECT local_part, password, quota_mb, login_allowed,"
                               " mailbox_id, home FROM users WHERE domain = ? AND"
                               " local_part = ?", (r.domain, u.local_part)).fetchone()
                if x is not None:
                    current[u.local_part] = _auth_row(x)
        for u in r.users:
            h = home(r.domain, u.mailbox_id)
            if current.get(u.local_part) != (u, h):
                rows.append((r.domain, u.local_part, u.password, u.quota_mb,
                             int(u.login_allowed), u.mailbox_id, h))
    db.executemany("INSERT OR REPLACE INTO users (domain, local_part, password, quota_mb,"
                   " login_allowed, mailbox_id, home) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def delete_auth(db: sqlite3.Connection, batch: Sequence[DomainRows]) -> int:
    """Remove the Dovecot rows *batch* no longer wants: a delta's listed tombstones, what
    a complete state does not list, every row of a domain no longer served."""
    changed = 0
    for r in batch:
        if not r.present:
            changed += db.execute("DELETE FROM users WHERE domain = ?", (r.domain,)).rowcount
            continue
        if r.complete:
            live = {u.local_part for u in r.users}
            gone = [lp for (lp,) in db.execute(
                "SELECT local_part FROM users WHERE domain = ?", (r.domain,))
                if lp not in live]
        else:
            gone = list(r.removed_users)
        for lp in gone:
            changed += db.execute("DELETE FROM users WHERE domain = ? AND local_part = ?",
                                  (r.domain, lp)).rowcount
    return changed


def lookup(db: sqlite3.Connection, name: str, key: str) -> list[str]:
    """What Postfix's map *name* answers for *key*: its tables in order, the first that
    answers wins (the same SQL Postfix runs)."""
    local, at, domain = key.rpartition("@")
    for table in POSTFIX_MAP_TABLES[name]:
        query = POSTFIX_TABLE_QUERIES[table]
        if ("{u}" in query or "{d}" in query) and not (at and local):
            continue  # Postfix suppresses a query naming %u/%d for such a key
        found = [str(v) for (v,) in db.execute(postfix_query(table),
                                               {"s": key, "u": local, "d": domain})]
        if found:
            return found
    return []


def map_lines(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Every key Postfix's maps answer, as ``key value`` lines like a map source file
    (for tests and inspection; it reads every row)."""
    keys = {a for (a,) in db.execute("SELECT address FROM mailboxes")}
    keys |= {s for (s,) in db.execute("SELECT source FROM alias_targets")}
    keys |= {f"{r}@{d}" for (r, d) in db.execute(
        "SELECT r.local_part, d.domain FROM roles r, domains d")}
    keys |= {f"{m.split('@')[0]}@{a}" for (a, m) in db.execute(
        "SELECT ad.alias, m.address FROM alias_domains ad"
        " JOIN mailboxes m ON m.domain = ad.domain")}
    domains = sorted(d for (d,) in db.execute("SELECT domain FROM domains"))
    out: dict[str, list[str]] = {"virtual_domains": [f"{d} OK" for d in domains]}
    for name in POSTFIX_MAPS[1:]:
        out[name] = [f"{k} {','.join(v)}" for k in sorted(keys)
                     if (v := lookup(db, name, k))]
    return out
