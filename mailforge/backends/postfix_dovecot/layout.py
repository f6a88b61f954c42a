"""Where the Postfix + Dovecot backend keeps the files the mail server reads.

This is the contract between mailforge and the mail server's configuration (the
sandbox and ``deploy/`` render Postfix and Dovecot settings from it):

- ``postfix/maps.sqlite``: Postfix's tables, a SQLite database without passwords
  (readable by the ``postfix`` user), queried through the ``sqlite:`` query files
  ``postfix/<table>.cf`` (written here, from :data:`POSTFIX_TABLE_QUERIES`); each map
  is a list of them (:data:`POSTFIX_MAP_TABLES`):

  - ``virtual_domains``   -> ``virtual_mailbox_domains``
  - ``virtual_mailboxes`` -> ``virtual_mailbox_maps``
  - ``virtual_aliases``   -> ``virtual_alias_maps``
  - ``sender_logins``     -> ``smtpd_sender_login_maps``

  main.cf names them as ``proxy:sqlite:<file>`` (:meth:`Layout.postfix_ref`), so the
  lookups run in Postfix's proxymap, outside the chroot Debian gives smtpd.
- ``dovecot/auth.sqlite``: Dovecot passdb and userdb (``driver = sql``, SQLite), with the
  queries in ``dovecot/dovecot-sql.conf.ext`` (written here, from
  :data:`DOVECOT_SQL_CONF`). Password hashes live only here (mode 0640, auth group).

Both databases are changed in SQLite transactions that touch only the rows of the
objects that changed, so a reader sees the old or the new content, never a mix, and the
cost of a change does not grow with the server (README, "How mail keeps flowing").

The Postfix database is in WAL mode: a crashed writer leaves uncommitted frames that
readers ignore (in rollback-journal mode a crashed writer leaves a hot journal that a
read-only reader cannot roll back, so every lookup failed until mailforge ran again). A
read-only WAL reader (the ``postfix`` user may not write here) needs the ``-wal`` and
``-shm`` files to exist; SQLite deletes them when the last connection closes, so
:func:`ensure_wal_files` puts empty ones back after mailforge closes its connection.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...atomic import write_if_changed

POSTFIX_MAPS = ("virtual_domains", "virtual_mailboxes", "virtual_aliases", "sender_logins")

# Bumped when the Postfix database's rows change meaning: a database of an older format
# (or none: a server upgraded from the cdb tables) is filled by a complete pass of every
# domain (``PostfixDovecotBackend.needs_full_resync``).
POSTFIX_FORMAT = "1"

# What the rows hold is the desired state reduced to what Postfix needs; everything
# derived (role addresses, catch-all identities, alias domains, sender logins of
# aliases) is computed by the queries below, so a change of one mailbox or alias is a
# change of its own rows only. Addresses are lower-case ASCII (validated on the way in).
POSTFIX_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
-- Served domains (present: enabled, not deleted, name proven).
CREATE TABLE IF NOT EXISTS domains (
    domain TEXT PRIMARY KEY
) WITHOUT ROWID;
-- alias: a domain whose mail goes to the same names at domain.
CREATE TABLE IF NOT EXISTS alias_domains (
    alias  TEXT PRIMARY KEY,
    domain TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alias_domains_domain ON alias_domains (domain);
-- Live mailboxes (suspended ones too: they still receive). created_us and id order the
-- domain's oldest mailbox, the default target of its role addresses.
CREATE TABLE IF NOT EXISTS mailboxes (
    address    TEXT PRIMARY KEY,
    domain     TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    id         TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS mailboxes_oldest ON mailboxes (domain, created_us, id);
-- One row per (alias, target); source '@domain' is a catch-all.
CREATE TABLE IF NOT EXISTS alias_targets (
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    domain TEXT NOT NULL,
    PRIMARY KEY (source, target)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alias_targets_domain ON alias_targets (domain);
-- RFC 2142 role local parts (config mailboxes.role_addresses) and their configured
-- target (NULL: the domain's oldest mailbox).
CREATE TABLE IF NOT EXISTS roles (
    local_part TEXT PRIMARY KEY,
    target     TEXT
) WITHOUT ROWID;
"""

# Each Postfix map is a list of small tables, tried in order, the first that answers
# wins (Postfix's rule for a list of tables, tried for each form of the key: user@domain,
# then @domain). Small queries matter: Postfix prepares the query at every lookup, and
# one compound query of all the cases cost ~1 ms to prepare against ~25-110 us each for
# these. {s} is the whole key, {u} its local part, {d} its domain (Postfix: '%s', '%u',
# '%d', quoted by Postfix's SQLite client; a query naming {u} or {d} is skipped for a
# key without a local part, e.g. @domain, as Postfix does).
POSTFIX_TABLE_QUERIES = {
    "domains": "SELECT 'OK' FROM domains WHERE domain = {s}",
    "mailboxes": "SELECT 'OK' FROM mailboxes WHERE address = {s}",
    # Explicit aliases (a catch-all too, looked up as @domain).
    "aliases": "SELECT target FROM alias_targets WHERE source = {s}",
    # A catch-all would swallow mail for real mailboxes too: identity answers make the
    # mailbox win, as Postfix's documentation advises.
    "catchall_identities": (
        "SELECT m.address FROM mailboxes m WHERE m.address = {s} AND EXISTS"
        " (SELECT 1 FROM alias_targets c WHERE c.source = '@' || m.domain)"),
    # Same name at an alias domain: local@alias -> local@domain, when that mailbox exists
    # (delivered there, and the mailbox may send as it).
    "alias_domain_names": (
        "SELECT m.address FROM alias_domains ad, mailboxes m WHERE ad.alias = {d}"
        " AND m.address = {u} || '@' || ad.domain"),
    # RFC 2142 role addresses reach someone when no mailbox has the name and the domain
    # has no catch-all (an alias of that name answered before): the configured target or
    # the domain's oldest mailbox.
    "role_addresses": (
        "SELECT addr FROM (SELECT coalesce(r.target, (SELECT o.address FROM mailboxes o"
        " WHERE o.domain = d.domain ORDER BY o.created_us, o.id LIMIT 1)) AS addr"
        " FROM roles r, domains d WHERE r.local_part = {u} AND d.domain = {d}"
        " AND NOT EXISTS (SELECT 1 FROM alias_targets c WHERE c.source = '@' || d.domain)"
        " AND NOT EXISTS (SELECT 1 FROM mailboxes x WHERE x.address = {s}))"
        " WHERE addr IS NOT NULL"),
    # A mailbox sends as itself...
    "sender_self": "SELECT address FROM mailboxes WHERE address = {s}",
    # ... and as the aliases of its domain that deliver to it (a catch-all is no sender
    # address).
    "alias_senders": (
        "SELECT t.target FROM alias_targets t, mailboxes m WHERE t.source = {s}"
        " AND substr(t.source, 1, 1) <> '@' AND m.address = t.target"
        " AND m.domain = t.domain"),
}

# Postfix map -> its tables, in lookup order.
POSTFIX_MAP_TABLES = {
    "virtual_domains": ("domains",),
    "virtual_mailboxes": ("mailboxes",),
    "virtual_aliases": ("aliases", "catchall_identities", "alias_domain_names",
                        "role_addresses"),
    "sender_logins": ("sender_self", "alias_domain_names", "alias_senders"),
}


def postfix_query(table: str, postfix: bool = False) -> str:
    """The SQL of one table: for Postfix ('%s' etc.), or with named parameters :s, :u, :d
    for mailforge's own readers (tables.lookup)."""
    q = POSTFIX_TABLE_QUERIES[table]
    if postfix:
        return q.format(s="'%s'", u="'%u'", d="'%d'")
    return q.format(s=":s", u=":u", d=":d")


def postfix_query_file(table: str, db: Path) -> str:
    """A Postfix ``sqlite_table(5)`` file for one table."""
    return ("# Written by mailforge: one of the tables behind a Postfix map (README, \"How\n"
            "# mail keeps flowing\"). Postfix quotes what it puts in place of %s, %u, %d.\n"
            f"dbpath = {db}\nquery = {postfix_query(table, postfix=True)}\n")


@contextlib.contextmanager
def keep_wal_files(db: Path) -> Iterator[None]:
    """Around a read-write connection that is about to close: hold a read-only one open
    meanwhile, so the read-write one is never the last to close and SQLite leaves the
    -wal and -shm files in place (a read-only connection never removes them). Without
    this, a lookup by Postfix in the instant between SQLite's removal and
    :func:`ensure_wal_files` failed."""
    if not db.exists():
        yield
        ensure_wal_files(db)
        return
    ensure_wal_files(db)
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as guard:
        guard.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        yield
    ensure_wal_files(db)


def ensure_wal_files(db: Path) -> None:
    """Make sure the -wal and -shm files of the WAL-mode database *db* exist (empty is
    valid), so a read-only reader can open it; SQLite deletes them when its last
    connection closes. Their mode follows the database's, as SQLite's own do."""
    mode = db.stat().st_mode & 0o777
    for suffix in ("-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            os.close(fd)
            os.chmod(path, mode)


AUTH_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    domain        TEXT NOT NULL,
    local_part    TEXT NOT NULL,
    password      TEXT NOT NULL,
    quota_mb      INTEGER NOT NULL,
    login_allowed INTEGER NOT NULL,
    mailbox_id    TEXT,
    home          TEXT,
    PRIMARY KEY (domain, local_part)
) WITHOUT ROWID;
"""

# Columns added after the first release: an existing database gains them (NULL in the
# rows already there; see DOVECOT_SQL_CONF for how such a row is served).
AUTH_ADDED_COLUMNS = (("mailbox_id", "TEXT"), ("home", "TEXT"))

# Dovecot's view of auth.sqlite. A mailbox's home comes from its row: it is keyed by the
# mailbox id (<mail_root>/<domain>/<mailbox id>), never by the address, so a name that
# is deleted and created again (by the same tenant or, after the domain was deleted and
# connected again, by another) never finds the earlier mailbox's mail. A row written
# before homes were stored has home NULL; Dovecot's SQL driver skips NULL fields, so such
# a row keeps the legacy default home of userdb default_fields (<mail_root>/%Ld/%Ln)
# until the backend next converges its domain, which moves the Maildir to the id path
# and writes the home. Every row written since has a home, so a leftover legacy
# directory is never attached to a new mailbox. %Ld/%Ln are escaped by Dovecot's SQL
# driver (and limited by auth_username_chars). A suspended mailbox gets "nologin",
# which stops IMAP logins but which Dovecot's SASL answer to Postfix ignores
# (submission said "235 OK" in a real-stack test): so its password is also replaced by
# a random one per lookup, and SMTP AUTH fails too. LMTP delivery, which uses only the
# userdb, goes on.
DOVECOT_SQL_CONF = """\
# Written by mailforge; the database is mailforge's projection of its desired state.
driver = sqlite
connect = {db}
default_pass_scheme = SHA512-CRYPT
password_query = SELECT local_part || '@' || domain AS user, \\
  CASE WHEN login_allowed = 1 THEN password \\
       ELSE '{{PLAIN}}' || hex(randomblob(32)) END AS password, \\
  CASE WHEN login_allowed = 1 THEN NULL ELSE 'y' END AS nologin, \\
  CASE WHEN login_allowed = 1 THEN NULL ELSE 'mailbox suspended' END AS reason \\
  FROM users WHERE domain = '%Ld' AND local_part = '%Ln'
user_query = SELECT '*:storage=' || quota_mb || 'M' AS quota_rule, home \\
  FROM users WHERE domain = '%Ld' AND local_part = '%Ln'
iterate_query = SELECT local_part || '@' || domain AS user FROM users
"""


@dataclass(frozen=True)
class Layout:
    state_dir: Path

    @property
    def postfix_dir(self) -> Path:
        return self.state_dir / "postfix"

    @property
    def postfix_db(self) -> Path:
        """Postfix's tables (no passwords: readable by the postfix user)."""
        return self.postfix_dir / "maps.sqlite"

    @property
    def dovecot_dir(self) -> Path:
        return self.state_dir / "dovecot"

    @property
    def auth_db(self) -> Path:
        return self.dovecot_dir / "auth.sqlite"

    @property
    def dovecot_sql_conf(self) -> Path:
        """The file to name in Dovecot's ``passdb``/``userdb`` ``args`` (driver = sql)."""
        return self.dovecot_dir / "dovecot-sql.conf.ext"

    def query_file(self, table: str) -> Path:
        return self.postfix_dir / f"{table}.cf"

    def postfix_ref(self, name: str) -> str:
        """The lookup tables to put in main.cf for Postfix map *name*, e.g.
        ``proxy:sqlite:/x/postfix/domains.cf``: through proxymap, which runs outside
        smtpd's chroot and keeps one connection per table open."""
        return ", ".join(f"proxy:sqlite:{self.query_file(t)}"
                         for t in POSTFIX_MAP_TABLES[name])

    def initialize(self, role_addresses: tuple[str, ...] = ("postmaster", "abuse"),
                   role_target: str = "") -> bool:
        """Create the directories, the databases and the query files, so Postfix and
        Dovecot can start before mailforge first converges anything. Returns whether the
        Postfix database is of the current format (False: new, or from an older release;
        it must be filled by a complete pass of every domain)."""
        self.postfix_dir.mkdir(parents=True, exist_ok=True)
        self.dovecot_dir.mkdir(parents=True, exist_ok=True)
        # Password hashes: readable by root (Dovecot's auth worker) and the auth group only.
        os.chmod(self.dovecot_dir, 0o750)  # noqa: S103
        # Postfix's tables: the postfix user reads them (no secret in them).
        os.chmod(self.postfix_dir, 0o755)  # noqa: S103
        with contextlib.closing(sqlite3.connect(self.auth_db)) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(AUTH_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(users)")}
            for column, kind in AUTH_ADDED_COLUMNS:
                if column not in have:
                    db.execute(f"ALTER TABLE users ADD COLUMN {column} {kind}")
        os.chmod(self.auth_db, 0o640)
        write_if_changed(self.dovecot_sql_conf,
                         DOVECOT_SQL_CONF.format(db=self.auth_db).encode(), mode=0o640)
        current = self._initialize_postfix_db(role_addresses, role_target)
        for table in POSTFIX_TABLE_QUERIES:
            write_if_changed(self.query_file(table),
                             postfix_query_file(table, self.postfix_db).encode(), mode=0o644)
        return current

    def _initialize_postfix_db(self, role_addresses: tuple[str, ...],
                               role_target: str) -> bool:
        with keep_wal_files(self.postfix_db), contextlib.closing(
                sqlite3.connect(self.postfix_db, isolation_level=None)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(POSTFIX_SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            # The roles follow the configuration (a handful of rows).
            roles = {(r, role_target or None) for r in role_addresses}
            if set(db.execute("SELECT local_part, target FROM roles")) != roles:
                db.execute("DELETE FROM roles")
                db.executemany("INSERT INTO roles VALUES (?, ?)", list(roles))
            db.execute("COMMIT")
        os.chmod(self.postfix_db, 0o644)
        return row is not None and row[0] == POSTFIX_FORMAT

    def mark_postfix_db_current(self, db: sqlite3.Connection) -> None:
        """Record that the Postfix database holds every domain in the current format."""
        db.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (POSTFIX_FORMAT,))
