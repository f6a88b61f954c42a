"""Where the Postfix + Dovecot backend keeps the files the mail server reads.

This is the contract between mailforge and the mail server's configuration (the
sandbox and ``deploy/`` render Postfix and Dovecot settings from it):

- ``postfix/virtual_domains``   -> ``virtual_mailbox_domains``
- ``postfix/virtual_mailboxes`` -> ``virtual_mailbox_maps``
- ``postfix/virtual_aliases``   -> ``virtual_alias_maps``
- ``postfix/sender_logins``     -> ``smtpd_sender_login_maps``
- ``dovecot/auth.sqlite``       -> Dovecot passdb and userdb (``driver = sql``, SQLite),
  with the queries in ``dovecot/dovecot-sql.conf.ext`` (written here, from
  :data:`DOVECOT_SQL_CONF`).

Each Postfix map is a text source plus its compiled table; both are replaced by
rename, so a reader sees the old or the new table, never a half-written one. The
Dovecot database is changed in SQLite transactions, so a login sees the old or the
new row; Dovecot queries it on every login, so a change is effective at once (its
passwd-file driver re-reads a file at most once a second and can miss a same-size
change within that second, which is why it is not used).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...atomic import write_if_changed

POSTFIX_MAPS = ("virtual_domains", "virtual_mailboxes", "virtual_aliases", "sender_logins")

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

# File suffix postmap gives the compiled table, per Postfix map type.
COMPILED_SUFFIX = {"cdb": ".cdb", "hash": ".db", "lmdb": ".lmdb"}


@dataclass(frozen=True)
class Layout:
    state_dir: Path
    map_type: str = "cdb"

    @property
    def postfix_dir(self) -> Path:
        return self.state_dir / "postfix"

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

    def map_source(self, name: str) -> Path:
        return self.postfix_dir / name

    def map_compiled(self, name: str) -> Path:
        return self.postfix_dir / (name + COMPILED_SUFFIX[self.map_type])

    def postfix_ref(self, name: str) -> str:
        """The lookup table reference to put in main.cf, e.g. ``cdb:/x/postfix/virtual_domains``."""
        return f"{self.map_type}:{self.map_source(name)}"

    def initialize(self, postmap: str = "/usr/sbin/postmap",
                   postfix_config_dir: str | None = None) -> None:
        """Create the directories, the empty maps and the Dovecot database, so Postfix and
        Dovecot can start before mailforge first converges anything."""
        self.postfix_dir.mkdir(parents=True, exist_ok=True)
        self.dovecot_dir.mkdir(parents=True, exist_ok=True)
        # Password hashes: readable by root (Dovecot's auth worker) and the auth group only.
        os.chmod(self.dovecot_dir, 0o750)  # noqa: S103
        with sqlite3.connect(self.auth_db) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(AUTH_SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(users)")}
            for column, kind in AUTH_ADDED_COLUMNS:
                if column not in have:
                    db.execute(f"ALTER TABLE users ADD COLUMN {column} {kind}")
        db.close()
        os.chmod(self.auth_db, 0o640)
        write_if_changed(self.dovecot_sql_conf,
                         DOVECOT_SQL_CONF.format(db=self.auth_db).encode(), mode=0o640)
        for name in POSTFIX_MAPS:
            src = self.map_source(name)
            if not src.exists():
                src.write_text("")
            if not self.map_compiled(name).exists():
                cmd = [postmap]
                if postfix_config_dir:
                    cmd += ["-c", postfix_config_dir]
                subprocess.run([*cmd, f"{self.map_type}:{src}"], check=True,
                               capture_output=True)
