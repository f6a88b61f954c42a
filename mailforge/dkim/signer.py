"""The DKIM signer's files: private key files (clear, mode 0600, owned by the signer's
user), KeyTable / KeyTableEd25519 / SigningTable in dkimpy-milter's format, written
atomically; the signer is reloaded only when a file changed.

dkimpy-milter (Debian) signs with RSA and Ed25519 together (OpenDKIM 2.11 could not
sign with Ed25519 here). It reads its tables and keys once at start, so "reload" is a
restart, asked for through the configured command; it crashes on empty tables, so a
placeholder entry for an unused domain is always present.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import atomic
from ..config import DkimConfig
from ..errors import TemporaryError
from .keys import generate

PLACEHOLDER_DOMAIN = "mailforge.invalid"


@dataclass(frozen=True)
class SigningKey:
    domain: str
    algorithm: str
    selector: str
    private_key: bytes


def render_conf(socket_spec: str, signer_dir: str, user: str = "") -> str:
    d = Path(signer_dir)
    lines = [
        "# mailforge: dkimpy-milter signs outgoing mail with the keys mailforge writes.",
        "# Only Postfix's submission service passes mail to it (smtpd_milters there, none",
        "# global), after mailforge's From guard refused any From header the SASL login",
        "# does not own: in mode s, dkimpy-milter 1.2.3 signs every message it is given",
        "# whose From domain has a key, whatever InternalHosts says (that and MacroList",
        "# only decide what it would verify), so which mail reaches it is the control.",
        "# MacroListVerify makes mail not from submission (Postfix main.cf sets",
        "# milter_macro_daemon_name = INBOUND, submission ORIGINATING) external, and",
        "# dkimpy-milter never signs external mail: unsigned even if it reaches the signer.",
        "# MacroList marks submission as internal; InternalHosts is loopback only (it was",
        "# 0.0.0.0/0: every client internal).",
        "Mode s",
        f"Socket {socket_spec}",
        f"KeyTable file:{d / 'KeyTable'}",
        f"KeyTableEd25519 file:{d / 'KeyTableEd25519'}",
        f"SigningTable refile:{d / 'SigningTable'}",
        "Canonicalization relaxed/simple",
        "InternalHosts 127.0.0.1",
        "MacroList daemon_name|ORIGINATING",
        "MacroListVerify daemon_name|INBOUND",
    ]
    if user:
        lines.append(f"UserID {user}")
    return "\n".join(lines) + "\n"


def _key_name(domain: str) -> str:
    return f"mf-{domain}"


def render_tables(keys: Sequence[SigningKey], signer_dir: str) -> dict[str, bytes]:
    """File name -> content for the signer dir (tables and key files). A domain is
    listed only when it has a key of each algorithm: dkimpy-milter looks the same key
    name up in both tables."""
    d = Path(signer_dir)
    by_domain: dict[str, dict[str, SigningKey]] = {}
    for k in keys:
        by_domain.setdefault(k.domain, {})[k.algorithm] = k
    files: dict[str, bytes] = {}
    rsa_t: list[str] = []
    ed_t: list[str] = []
    sig_t: list[str] = []
    for domain in sorted(by_domain):
        pair = by_domain[domain]
        if set(pair) != {"rsa", "ed25519"}:
            continue
        name = _key_name(domain)
        for alg, table in (("rsa", rsa_t), ("ed25519", ed_t)):
            k = pair[alg]
            fname = f"keys/{domain}.{k.selector}.key"
            files[fname] = k.private_key
            table.append(f"{name} {domain}:{k.selector}:{d / fname}")
        sig_t.append(f"*@{domain} {name}")
    # Placeholder so no table is ever empty (dkimpy-milter cannot parse an empty one).
    ph = _key_name(PLACEHOLDER_DOMAIN)
    rsa_t.append(f"{ph} {PLACEHOLDER_DOMAIN}:none:{d / 'keys/placeholder-rsa.key'}")
    ed_t.append(f"{ph} {PLACEHOLDER_DOMAIN}:none:{d / 'keys/placeholder-ed25519.key'}")
    sig_t.append(f"*@{PLACEHOLDER_DOMAIN} {ph}")
    files["KeyTable"] = ("\n".join(rsa_t) + "\n").encode()
    files["KeyTableEd25519"] = ("\n".join(ed_t) + "\n").encode()
    files["SigningTable"] = ("\n".join(sig_t) + "\n").encode()
    return files


def _owner(user: str) -> tuple[int | None, int | None]:
    if not user:
        return None, None
    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


def ensure_placeholders(signer_dir: str, user: str = "") -> None:
    keys = Path(signer_dir) / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    os.chmod(keys, 0o700)
    uid, gid = _owner(user)
    if uid is not None:
        os.chown(keys, uid, gid if gid is not None else -1)
    for alg in ("rsa", "ed25519"):
        p = keys / f"placeholder-{alg}.key"
        if not p.exists():
            atomic.write_bytes(p, generate(alg, "none", 1024 if alg == "rsa" else 0)
                               .private_key, mode=0o600, owner=uid, group=gid)


def ensure_tables(cfg: DkimConfig) -> bool:
    """Make the signer startable before mailforge first writes its tables: placeholder
    keys, and tables listing only the placeholder, but only for a table that does not
    exist. Tables already there are mailforge's (write_tables) and stay as they are:
    rewriting them empty here (as ``sandbox up`` once did on every run) dropped every
    domain's signing until the next domain change. Returns whether anything was written."""
    ensure_placeholders(cfg.signer_dir, cfg.signer_user)
    uid, gid = _owner(cfg.signer_user)
    d = Path(cfg.signer_dir)
    files = render_tables([], cfg.signer_dir)
    written = False
    for name in ("KeyTable", "KeyTableEd25519", "SigningTable"):
        if not (d / name).exists():
            atomic.write_bytes(d / name, files[name], mode=0o644, owner=uid, group=gid)
            written = True
    return written


def write_tables(keys: Sequence[SigningKey], cfg: DkimConfig) -> bool:
    """Write key files and tables; remove stale key files. Returns whether anything
    changed (and so whether the signer must reload)."""
    ensure_placeholders(cfg.signer_dir, cfg.signer_user)
    uid, gid = _owner(cfg.signer_user)
    d = Path(cfg.signer_dir)
    files = render_tables(keys, cfg.signer_dir)
    changed = False
    # Key files first, tables last: a table never names a key file not yet written.
    for name in sorted(files, key=lambda n: (not n.startswith("keys/"), n)):
        mode = 0o600 if name.startswith("keys/") else 0o644
        changed |= atomic.write_if_changed(d / name, files[name], mode=mode, owner=uid,
                                           group=gid)
    for p in (d / "keys").glob("*.key"):
        if p.name.startswith("placeholder-"):
            continue
        if f"keys/{p.name}" not in files:
            p.unlink(missing_ok=True)
            changed = True
    return changed


def _pid_marker(path: str) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


async def reload(cfg: DkimConfig, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Ask the signer to load the new tables and wait until it serves again."""
    await await_reload(cfg, await request_reload(cfg), timeout)


async def request_reload(cfg: DkimConfig) -> str:
    """Ask the signer to load the new tables (its restart takes a few hundred ms);
    returns the marker ``await_reload`` compares to see the restart happened."""
    if not cfg.reload_command:
        return ""
    before = _pid_marker(cfg.signer_pid_file)
    proc = await asyncio.create_subprocess_exec(*cfg.reload_command,
                                                stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode:
        raise TemporaryError(f"dkim signer reload failed (exit {proc.returncode}): "
                             f"{err.decode(errors='replace').strip()[:200]}")
    return before


async def await_reload(cfg: DkimConfig, before: str,
                       timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """Wait until the signer asked by ``request_reload`` restarted and serves again."""
    if not cfg.reload_command:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        restarted = not cfg.signer_pid_file or _pid_marker(cfg.signer_pid_file) not in (
            before, "")
        if restarted and (not cfg.signer_address
                          or await asyncio.to_thread(_accepts, cfg.signer_address)):
            return
        await asyncio.sleep(0.02)
    raise TemporaryError("dkim signer did not come back after reload")
