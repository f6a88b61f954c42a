"""Where the Postfix + Dovecot backend keeps the files the mail server reads.

This is the contract between mailforge and the mail server's configuration (the
sandbox and ``deploy/`` render Postfix and Dovecot settings from it):

- ``postfix/virtual_domains``   -> ``virtual_mailbox_domains``
- ``postfix/virtual_mailboxes`` -> ``virtual_mailbox_maps``
- ``postfix/virtual_aliases``   -> ``virtual_alias_maps``
- ``postfix/sender_logins``     -> ``smtpd_sender_login_maps``
- ``dovecot/passwd.d/<domain>`` -> one passwd-file per domain, used as Dovecot passdb
  and userdb with ``username_format=%Ln`` and the path ``.../passwd.d/%Ld``.

Each Postfix map is a text source plus its compiled table; both are replaced by
rename, so a reader sees the old or the new table, never a half-written one.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

POSTFIX_MAPS = ("virtual_domains", "virtual_mailboxes", "virtual_aliases", "sender_logins")

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
    def passwd_dir(self) -> Path:
        return self.state_dir / "dovecot" / "passwd.d"

    def map_source(self, name: str) -> Path:
        return self.postfix_dir / name

    def map_compiled(self, name: str) -> Path:
        return self.postfix_dir / (name + COMPILED_SUFFIX[self.map_type])

    def postfix_ref(self, name: str) -> str:
        """The lookup table reference to put in main.cf, e.g. ``cdb:/x/postfix/virtual_domains``."""
        return f"{self.map_type}:{self.map_source(name)}"

    def passwd_file(self, domain: str) -> Path:
        return self.passwd_dir / domain

    @property
    def dovecot_passwd_args(self) -> str:
        """The ``args`` path for Dovecot's passwd-file passdb/userdb."""
        return f"username_format=%Ln {self.passwd_dir}/%Ld"

    def initialize(self, postmap: str = "/usr/sbin/postmap",
                   postfix_config_dir: str | None = None) -> None:
        """Create the directories and empty maps so Postfix can start before any sync."""
        self.postfix_dir.mkdir(parents=True, exist_ok=True)
        self.passwd_dir.mkdir(parents=True, exist_ok=True)
        # Password files: readable by root and the auth group only.
        os.chmod(self.passwd_dir.parent, 0o750)  # noqa: S103
        os.chmod(self.passwd_dir, 0o750)  # noqa: S103
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
