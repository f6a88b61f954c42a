"""Postfix + Dovecot on the same host, converged through files.

Map mechanism (see README, "How mail keeps flowing"): for each domain mailforge
writes one fragment per Postfix map; the Postfix maps are the concatenation of the
fragments, compiled by ``postmap`` into a temporary table and renamed into place.
Postfix's short-lived processes notice a replaced table and restart themselves; its
long-lived address resolver (trivial-rewrite) and cleanup do not reliably, so when the
domain or alias tables change (rare: a domain or alias added or removed) Postfix is
reloaded, gracefully, once per batch; new mailboxes need no reload. Dovecot's
passdb/userdb is a local SQLite database changed in transactions and queried on every
login. Nothing is restarted, and all of it stays valid while mailforge or PostgreSQL
are down, so mail keeps flowing to existing mailboxes.

Idempotent and crash-safe: every apply re-derives the files and rows from the desired
state and compares them with what is on disk; only what differs is written, and the
Postfix maps are rebuilt only when their content differs. A crash between two writes
is repaired by the next apply.
"""

from __future__ import annotations

import asyncio
import grp
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ... import atomic
from ...config import Config, MailboxesConfig, PostfixDovecotConfig
from ...errors import PermanentError, TemporaryError
from ...log import get
from ...models import DomainState
from ..base import ApplyResult
from .layout import Layout
from .render import AuthUser, DomainFiles, Routing, render

log = get(__name__)

# Maps read by Postfix's long-lived processes: a change needs `postfix reload`.
_RELOAD_MAPS = frozenset({"virtual_domains", "virtual_aliases"})

# A domain name used as a directory under mail_root (validated long before; checked
# again here because it is about to be removed recursively).
_SAFE_DIR = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")

# Fragment kind -> Postfix map it is concatenated into.
_FRAGMENT_MAPS = {"domains": "virtual_domains", "mailboxes": "virtual_mailboxes",
                  "aliases": "virtual_aliases", "senders": "sender_logins"}


def _mkdir_owned_like(path: Path, ref: Path) -> None:
    """mkdir -p *path*; the directories between *ref* and it owned like *ref* (Dovecot's
    mail user must be able to write in them)."""
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True)
    if ref not in path.parents:
        return
    try:
        st = ref.stat()
    except FileNotFoundError:
        return
    for d in [path, *path.parents]:
        if d == ref:
            break
        os.chown(d, st.st_uid, st.st_gid)


class PostfixDovecotBackend:
    name = "postfix_dovecot"

    def __init__(self, cfg: PostfixDovecotConfig,
                 mailboxes: MailboxesConfig | None = None) -> None:
        self.cfg = cfg
        mailboxes = mailboxes or MailboxesConfig()
        self.routing = Routing(mailboxes.role_addresses, mailboxes.role_target)
        self.mail_root = Path(cfg.mail_root)
        # Deleted mailboxes' homes wait here: <retention>/<domain>/<mailbox id>.
        self.retention_dir = Path(mailboxes.retention_dir or self.mail_root / ".retention")
        self.layout = Layout(Path(cfg.state_dir), cfg.map_type)
        self.fragments = self.layout.state_dir / "fragments"
        self._auth_gid: int | None = None
        # Could auth.sqlite still hold rows without a home (written before homes were
        # stored)? Rows written now always have one, so once none is left this stays
        # False and the legacy migration costs nothing more.
        self._legacy_rows = True
        # One apply at a time per process: the global maps are shared.
        self._lock = asyncio.Lock()
        self.map_rebuilds = 0
        self.reloads = 0

    @classmethod
    def from_config(cls, cfg: Config) -> PostfixDovecotBackend:
        return cls(cfg.backend.postfix_dovecot, cfg.mailboxes)

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        self.layout.initialize(self.cfg.postmap, self.cfg.postfix_config_dir)
        for kind in _FRAGMENT_MAPS:
            (self.fragments / kind).mkdir(parents=True, exist_ok=True)
        try:
            self._auth_gid = grp.getgrnam(self.cfg.auth_group).gr_gid
        except KeyError:
            raise PermanentError(f"group {self.cfg.auth_group!r} "
                                 "(backend.postfix_dovecot.auth_group) does not exist") from None
        if os.geteuid() == 0:
            for p in (self.layout.dovecot_dir, self.layout.auth_db,
                      self.layout.dovecot_sql_conf):
                os.chown(p, 0, self._auth_gid)

    async def health(self) -> dict[str, Any]:
        src = self.layout.map_compiled("virtual_mailboxes")
        return {"backend": self.name,
                "maps_present": src.exists() and self.layout.auth_db.exists(),
                "map_rebuilds": self.map_rebuilds, "postfix_reloads": self.reloads}

    async def apply(self, states: Sequence[DomainState]) -> ApplyResult:
        errors: dict[str, Any] = {}
        rendered: list[tuple[DomainState, DomainFiles]] = []
        for st in states:
            try:
                rendered.append((st, render(st, self.cfg.default_quota_mb, self.routing)))
            except PermanentError as exc:
                errors[st.domain.id] = exc
        async with self._lock:
            try:
                applied = [st for st, _ in rendered]
                # Restored mail goes back before Dovecot may create a fresh home.
                await asyncio.to_thread(self._restore_homes, applied)
                # Homes of a database written before homes were stored move to the id path
                # before their rows name it.
                legacy = await asyncio.to_thread(self._migrate_legacy_homes, applied)
                await asyncio.to_thread(self._write_domains, rendered)
                await asyncio.to_thread(self._merge_legacy_leftovers, legacy)
                await self._rebuild_maps()
                # Deleted homes move only once neither Postfix nor Dovecot serve them.
                await asyncio.to_thread(self._retire_homes, applied)
                # A deleted domain's mail, live and retained, is destroyed here, before
                # the engine purges the domain row and its name can be connected again.
                await asyncio.to_thread(self._destroy_deleted_domains, applied)
            except (OSError, sqlite3.Error, TemporaryError) as exc:
                err = (exc if isinstance(exc, TemporaryError) else
                       TemporaryError(f"writing mail server maps failed: {exc}"))
                for st, _ in rendered:
                    errors[st.domain.id] = err
        return ApplyResult(domain_errors=errors)

    # ------------------------------------------------------- deleted mail, retention

    def home(self, domain: str, mailbox_id: str) -> Path:
        """A mailbox's home (its auth row's ``home``; Maildir inside). Keyed by the mailbox
        id, never by the address: a later mailbox of the same name (or the same name in a
        domain deleted and connected again) never finds this one's mail."""
        return self.mail_root / domain / mailbox_id

    def legacy_home(self, domain: str, local_part: str) -> Path:
        """Where a row without a home is served (Dovecot's default ``%Ld/%Ln``)."""
        return self.mail_root / domain / local_part

    def retained_home(self, domain: str, mailbox_id: str) -> Path:
        return self.retention_dir / domain / mailbox_id

    def _legacy_retained(self, domain: str, local_part: str, mailbox_id: str) -> Path:
        # Retention layout before homes were keyed by id: <domain>/<local part>.<id>.
        return self.retention_dir / domain / f"{local_part}.{mailbox_id}"

    def _retire_homes(self, states: Sequence[DomainState]) -> None:
        for st in states:
            if st.domain.deleted:
                continue  # the whole domain's mail goes in _destroy_deleted_domains
            for m in st.mailboxes:
                if not (m.deleted and m.observed_generation < m.generation):
                    continue
                home = self.home(st.domain.name, m.id)
                kept = self.retained_home(st.domain.name, m.id)
                if not home.exists():
                    continue  # never received mail, or moved by an earlier pass
                kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if kept.exists():
                    # An earlier copy of the same mailbox: keep both, never overwrite mail.
                    kept = kept.with_name(f"{kept.name}.{time.time_ns()}")
                os.rename(home, kept)
                log.info("mailbox mail moved to retention", mailbox_id=m.id,
                         domain=st.domain.name)

    def _restore_homes(self, states: Sequence[DomainState]) -> None:
        for st in states:
            if not st.present:
                continue
            for m in st.mailboxes:
                if m.deleted or m.observed_generation >= m.generation:
                    continue
                home = self.home(st.domain.name, m.id)
                if home.exists():
                    continue
                for kept in (self.retained_home(st.domain.name, m.id),
                             self._legacy_retained(st.domain.name, m.local_part, m.id)):
                    if kept.exists():
                        # Owned like mail_root: Dovecot's mail user creates homes there.
                        _mkdir_owned_like(home.parent, self.mail_root)
                        os.rename(kept, home)
                        log.info("mailbox mail restored from retention", mailbox_id=m.id,
                                 domain=st.domain.name)
                        break

    def _destroy_deleted_domains(self, states: Sequence[DomainState]) -> None:
        """Remove every home and retained home under a deleted domain's name. Its rows are
        gone from Dovecot's database and its name from Postfix's maps by now, so nothing
        delivers there any more; a session still open writes into an id-keyed directory
        that no later mailbox can reach."""
        for st in states:
            if not st.domain.deleted:
                continue
            name = st.domain.name
            if not _SAFE_DIR.fullmatch(name):
                # Never rmtree a path built from a name that could leave mail_root.
                raise TemporaryError(f"refusing to remove the mail of domain {name!r}")
            for root in (self.mail_root, self.retention_dir):
                path = root / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    log.info("deleted domain's mail destroyed", domain=name,
                             domain_id=st.domain.id, area=str(root))
                elif path.exists() or path.is_symlink():
                    path.unlink()

    def _migrate_legacy_homes(self, states: Sequence[DomainState]
                              ) -> list[tuple[Path, Path]]:
        """Move the Maildirs of rows written before homes were stored (home NULL, served
        at <domain>/<local part>) to their mailbox's id path. A legacy directory is given
        only to the mailbox its row served: the one mailbox of that name in the state that
        the backend had converged before (observed_generation >= 1). Without such a row
        or such a mailbox the directory stays where it is, reachable by nobody (every row
        written now has a home), until its domain is deleted. Returns the (legacy, id)
        pairs moved, for _merge_legacy_leftovers."""
        present = [st for st in states if st.present]
        if not present or not self._legacy_rows or not self.layout.auth_db.exists():
            return []
        moved: list[tuple[Path, Path]] = []
        db = sqlite3.connect(self.layout.auth_db, timeout=10)
        try:
            if db.execute("SELECT 1 FROM users WHERE home IS NULL LIMIT 1").fetchone() is None:
                self._legacy_rows = False
                return []
            for st in present:
                domain = st.domain.name
                legacy = {r[0] for r in db.execute(
                    "SELECT local_part FROM users WHERE domain = ? AND home IS NULL",
                    (domain,))}
                if not legacy:
                    continue
                for local in legacy:
                    owners = [m for m in st.mailboxes
                              if m.local_part == local and m.observed_generation >= 1]
                    src = self.legacy_home(domain, local)
                    if len(owners) != 1 or not src.is_dir():
                        continue
                    dst = self.home(domain, owners[0].id)
                    if dst.exists():
                        self._merge_maildirs(src, dst)
                    else:
                        os.rename(src, dst)
                    moved.append((src, dst))
                    log.info("legacy mailbox home moved to its id path",
                             mailbox_id=owners[0].id, domain=domain)
        finally:
            db.close()
        return moved

    def _merge_legacy_leftovers(self, moved: Sequence[tuple[Path, Path]]) -> None:
        # A delivery between the move and the row update went to the legacy path again.
        for src, dst in moved:
            if src.is_dir():
                self._merge_maildirs(src, dst)

    @staticmethod
    def _merge_maildirs(src: Path, dst: Path) -> None:
        """Move the message files of home *src* into home *dst* (Maildir file names are
        unique, so nothing is overwritten; Dovecot rebuilds its indexes), then drop src."""
        for path in sorted(src.rglob("*")):
            if not path.is_file() or path.parent.name not in ("new", "cur"):
                continue
            target = dst / path.relative_to(src)
            if target.exists():
                continue
            _mkdir_owned_like(target.parent, dst)
            os.rename(path, target)
        shutil.rmtree(src)

    async def purge_retained(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Destroy the retained mail of (domain, local part, mailbox id) tombstones."""
        await asyncio.to_thread(self._purge_retained, list(items))

    def _purge_retained(self, items: list[tuple[str, str, str]]) -> None:
        for domain, local, mailbox_id in items:
            for kept in (self.retained_home(domain, mailbox_id),
                         self._legacy_retained(domain, local, mailbox_id)):
                if not kept.parent.exists():
                    continue
                for path in [kept, *kept.parent.glob(f"{kept.name}.*")]:
                    if path.is_dir():
                        shutil.rmtree(path)
                    elif path.exists():
                        path.unlink()

    # ---------------------------------------------------------------- file handling

    def _write_domains(self, rendered: Sequence[tuple[DomainState, DomainFiles]]) -> None:
        self._sync_auth(rendered)
        for st, files in rendered:
            name = st.domain.name
            for kind in _FRAGMENT_MAPS:
                frag = self.fragments / kind / name
                content: str = getattr(files, kind)
                if content:
                    atomic.write_if_changed(frag, content.encode())
                else:
                    atomic.remove(frag)

    def _sync_auth(self, rendered: Sequence[tuple[DomainState, DomainFiles]]) -> None:
        """Make Dovecot's rows for these domains equal the desired ones, in one transaction,
        touching only rows that differ (a domain of 100,000 mailboxes costs one read)."""
        db = sqlite3.connect(self.layout.auth_db, timeout=10, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            for st, files in rendered:
                domain = st.domain.name
                current = {r[0]: (AuthUser(r[0], r[1], r[2], bool(r[3]), r[4] or ""), r[5])
                           for r in db.execute(
                               "SELECT local_part, password, quota_mb, login_allowed,"
                               " mailbox_id, home FROM users WHERE domain = ?", (domain,))}
                desired = {u.local_part: (u, str(self.home(domain, u.mailbox_id)))
                           for u in files.users}
                gone = [(domain, lp) for lp in current.keys() - desired.keys()]
                changed = [(domain, u.local_part, u.password, u.quota_mb, int(u.login_allowed),
                            u.mailbox_id, home)
                           for lp, (u, home) in desired.items()
                           if current.get(lp) != (u, home)]
                if gone:
                    db.executemany("DELETE FROM users WHERE domain = ? AND local_part = ?",
                                   gone)
                if changed:
                    db.executemany("INSERT OR REPLACE INTO users (domain, local_part, password,"
                                   " quota_mb, login_allowed, mailbox_id, home)"
                                   " VALUES (?, ?, ?, ?, ?, ?, ?)", changed)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def _concat(self, kind: str) -> bytes:
        d = self.fragments / kind
        parts = []
        for name in sorted(os.listdir(d)):
            if name.startswith("."):
                continue
            parts.append((d / name).read_bytes())
        return b"".join(parts)

    async def _rebuild_maps(self) -> None:
        rebuilt: set[str] = set()
        for kind, map_name in _FRAGMENT_MAPS.items():
            content = await asyncio.to_thread(self._concat, kind)
            source = self.layout.map_source(map_name)
            try:
                current = await asyncio.to_thread(source.read_bytes)
            except FileNotFoundError:
                current = None
            if current == content and self.layout.map_compiled(map_name).exists():
                continue
            await self._postmap_replace(map_name, content)
            rebuilt.add(map_name)
        if rebuilt & _RELOAD_MAPS:
            await self._reload_postfix()

    async def _reload_postfix(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.cfg.postfix, "-c", self.cfg.postfix_config_dir, "reload",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        text = (out + err).decode(errors="replace").strip()
        if proc.returncode != 0:
            # Not running is fine: it reads the new tables when it starts.
            if "not running" in text:
                log.warning("postfix not running; reload skipped")
                return
            raise TemporaryError(f"postfix reload failed: {text[:300]}")
        self.reloads += 1
        log.info("postfix reloaded (domain or alias tables changed)")

    async def _postmap_replace(self, map_name: str, content: bytes) -> None:
        started = time.monotonic()
        layout = self.layout
        tmp_source = layout.postfix_dir / f".{map_name}.new"
        tmp_compiled = Path(str(tmp_source) + layout.map_compiled(map_name).suffix)
        await asyncio.to_thread(atomic.write_bytes, tmp_source, content)
        cmd = [self.cfg.postmap, "-c", self.cfg.postfix_config_dir,
               f"{layout.map_type}:{tmp_source}"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise TemporaryError(f"postmap failed for {map_name}: "
                                 f"{err.decode(errors='replace').strip()[:300]}")
        # Compiled table first: it is what Postfix reads; the source follows so the next
        # comparison sees the new content.
        os.replace(tmp_compiled, layout.map_compiled(map_name))
        os.replace(tmp_source, layout.map_source(map_name))
        self.map_rebuilds += 1
        log.info("postfix map rebuilt", map=map_name, bytes=len(content),
                 ms=round((time.monotonic() - started) * 1000, 1))
