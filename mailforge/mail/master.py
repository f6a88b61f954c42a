"""The Dovecot master-user passdb mailforge writes, so it can act as any mailbox (IMAP
``user*master`` login, SMTP AUTH through Dovecot SASL) without knowing its password.

Only a SHA512-CRYPT hash of the secret is written; the file is replaced atomically and
readable by Dovecot's auth group only. The secret itself never reaches a log.
"""

from __future__ import annotations

import grp
from pathlib import Path

from .. import password
from ..atomic import write_bytes
from ..config import Config


def passdb_path(cfg: Config) -> Path:
    if cfg.mail.master_passdb_file:
        return Path(cfg.mail.master_passdb_file)
    return Path(cfg.backend.postfix_dovecot.state_dir) / "dovecot" / "master-users"


def login_name(address: str, cfg: Config) -> str:
    """The IMAP/SMTP login that makes Dovecot authenticate the master user as *address*."""
    return f"{address}*{cfg.mail.master_user}"


def mailbox_of(login: str) -> str:
    """The mailbox a SASL/IMAP login acts as, lowercased: *login* itself, or the user
    part of a master-user login (``user*master`` -> user). ``*`` cannot occur in a
    mailbox name, so only a master login carries one."""
    return login.strip().partition("*")[0].strip().lower()


def write_passdb(cfg: Config) -> Path | None:
    """Write the master passdb unless it already holds a hash of the current secret."""
    secret = cfg.mail.master_password
    path = passdb_path(cfg)
    if not secret:
        # Dovecot fails every login while a configured passdb file is missing: keep an
        # empty one (no master user) rather than none.
        if not path.exists() and path.parent.is_dir():
            write_bytes(path, b"", mode=0o640, group=_auth_gid(cfg))
        return None
    try:
        current = path.read_text().strip()
        user, _, hashed = current.partition(":")
        if user == cfg.mail.master_user and password.verify(secret, hashed.split(":")[0]):
            return path
    except (OSError, ValueError):
        pass
    line = f"{cfg.mail.master_user}:{password.hash_password(secret, 'sha512-crypt')}\n"
    write_bytes(path, line.encode(), mode=0o640, group=_auth_gid(cfg))
    return path


def _auth_gid(cfg: Config) -> int | None:
    try:
        return grp.getgrnam(cfg.backend.postfix_dovecot.auth_group).gr_gid
    except KeyError:
        return None
