"""Postfix + Dovecot on the same host, converged through two local SQLite databases.

Map mechanism (README, "How mail keeps flowing"): Postfix's domain, mailbox, alias and
sender-login tables are ``sqlite:`` lookups (``layout.POSTFIX_TABLE_QUERIES``) in
``postfix/maps.sqlite``; Dovecot's passdb/userdb is ``dovecot/auth.sqlite``. Both are
queried on every lookup, so a change is effective at once: no ``postmap``, no file
rebuilt; Postfix is reloaded only when the list of served domains changes (its
long-lived processes keep an address's class once resolved). A change of one mailbox or
alias changes its own rows in one transaction per database, whatever the size of the
server. Nothing here
talks to PostgreSQL, so mail keeps flowing while mailforge or the database is down.

States may be complete (the domain's rows are made equal to them) or deltas (only the
listed objects change; ``DomainState.complete``).

Crash safety: each database changes in transactions (a reader sees the old or the new
rows), ordered so that every moment between them is safe: Dovecot's new and changed rows
first (a mailbox Postfix accepts mail for can always be delivered), then Postfix's rows,
then Dovecot's removals (Postfix stops accepting mail for a mailbox before Dovecot
forgets it). A crash between them leaves the objects unconverged in the store, and the
next apply of the same state writes what is still missing.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import grp
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import Config, MailboxesConfig, PostfixDovecotConfig
from ...errors import PermanentError, TemporaryError
from ...log import get
from ...models import DomainState
from ..base import ApplyResult
from . import tables
from .layout import Layout, keep_wal_files
from .render import DomainRows, Routing, render

log = get(__name__)

# A domain name used as a directory under mail_root (validated long before; checked
# again here because it is about to be removed recursively).
_SAFE_DIR = re.compile(r"[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?")


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


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Any:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


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
        self.layout = Layout(Path(cfg.state_dir))
        self._auth_gid: int | None = None
        # Could auth.sqlite still hold rows without a home (written before homes were
        # stored)? Rows written now always have one, so once none is left this stays
        # False and the legacy migration costs nothing more.
        self._legacy_rows = True
        # One apply at a time per process.
        self._lock = asyncio.Lock()
        # mailforge's connection to Postfix's database, open while the process lives:
        # SQLite deletes the -wal/-shm files Postfix's read-only readers need when the
        # last connection closes (layout.ensure_wal_files).
        self._maps: sqlite3.Connection | None = None
        # Is Postfix's database not known to hold every domain (new, or of an older
        # format, e.g. right after an upgrade from the cdb tables)? Then the engine
        # queues a complete pass of every domain (full_resync_pending/queued), hands
        # only complete states meanwhile (needs_complete), and calls full_resync_done()
        # once none is left.
        self.needs_full_resync = False
        self._resync_queued = False
        self.rows_written = 0
        self.reloads = 0

    @classmethod
    def from_config(cls, cfg: Config) -> PostfixDovecotBackend:
        return cls(cfg.backend.postfix_dovecot, cfg.mailboxes)

    async def prepare(self) -> None:
        await asyncio.to_thread(self._prepare)

    def _prepare(self) -> None:
        if self.cfg.map_type != "sqlite":
            log.warning("backend.postfix_dovecot.map_type is no longer used: Postfix reads "
                        "the sqlite tables (README: Upgrading from the cdb tables)",
                        map_type=self.cfg.map_type)
        if self.layout.postfix_db.exists():
            self._maps_db()  # open first: no later close is then the last one
        current = self.layout.initialize(self.routing.role_addresses,
                                         self.routing.role_target)
        if not current and not self._serves_anything():
            # A new server: nothing to fill the tables from.
            self._mark_current()
            current = True
        self.needs_full_resync = not current
        if not current:
            log.warning("postfix tables need a complete pass of every domain "
                        "(new, or upgraded from an older format)")
        try:
            self._auth_gid = grp.getgrnam(self.cfg.auth_group).gr_gid
        except KeyError:
            raise PermanentError(f"group {self.cfg.auth_group!r} "
                                 "(backend.postfix_dovecot.auth_group) does not exist") from None
        if os.geteuid() == 0:
            for p in (self.layout.dovecot_dir, self.layout.auth_db,
                      self.layout.dovecot_sql_conf):
                os.chown(p, 0, self._auth_gid)
        self._maps_db()

    def close(self) -> None:
        """Close the Postfix database, leaving the files its readers need."""
        if self._maps is not None:
            with keep_wal_files(self.layout.postfix_db):
                self._maps.close()
            self._maps = None

    def _serves_anything(self) -> bool:
        # The old cdb mechanism's domain list counts too: a host whose domains only
        # forward (aliases, no mailbox) has no Dovecot row but must be resynced.
        old_domains = self.layout.postfix_dir / "virtual_domains"
        if old_domains.is_file() and old_domains.stat().st_size > 0:
            return True
        with contextlib.closing(sqlite3.connect(self.layout.auth_db)) as db:
            return db.execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    # The engine's side of the resync and delta contract (backends/base.py).

    def needs_complete(self, domain_names: Sequence[str]) -> bool:
        # Deltas only once the tables are known to hold every domain: until then a
        # domain's rows may be missing, and only a complete state writes them all.
        return self.needs_full_resync

    def full_resync_pending(self) -> bool:
        return self.needs_full_resync and not self._resync_queued

    def full_resync_queued(self) -> None:
        # In memory only: a restart before full_resync_done() queues it again (harmless).
        self._resync_queued = True

    async def full_resync_done(self) -> None:
        """The engine has applied a complete state of every domain of this host since
        prepare(): Postfix's database holds them all in the current format."""
        await asyncio.to_thread(self._mark_current)

    def _mark_current(self) -> None:
        db = self._maps_db()
        with _transaction(db):
            self.layout.mark_postfix_db_current(db)
        if self.needs_full_resync:
            log.info("postfix tables hold every domain")
        self.needs_full_resync = False

    def _maps_db(self) -> sqlite3.Connection:
        if self._maps is None:
            if not self.layout.postfix_db.exists():
                raise TemporaryError("the mail backend is not prepared")
            self._maps = sqlite3.connect(self.layout.postfix_db, timeout=10,
                                         isolation_level=None, check_same_thread=False)
            atexit.register(self.close)
        return self._maps

    async def health(self) -> dict[str, Any]:
        return {"backend": self.name,
                "maps_present": (self.layout.postfix_db.exists()
                                 and self.layout.auth_db.exists()),
                "tables_current": not self.needs_full_resync,
                "rows_written": self.rows_written, "postfix_reloads": self.reloads}

    async def apply(self, states: Sequence[DomainState]) -> ApplyResult:
        errors: dict[str, Any] = {}
        rendered: list[tuple[DomainState, DomainRows]] = []
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
                # before their rows name it. It needs the whole domain: complete states only.
                legacy = await asyncio.to_thread(self._migrate_legacy_homes,
                                                 [st for st in applied if st.complete])
                domains_changed = await asyncio.to_thread(self._write_tables,
                                                          [r for _, r in rendered])
                if domains_changed:
                    await self._reload_postfix()
                await asyncio.to_thread(self._merge_legacy_leftovers, legacy)
                # Deleted homes move only once neither Postfix nor Dovecot serve them.
                await asyncio.to_thread(self._retire_homes, applied)
                # A deleted domain's mail, live and retained, is destroyed here, before
                # the engine purges the domain row and its name can be connected again.
                await asyncio.to_thread(self._destroy_deleted_domains, applied)
            except (OSError, sqlite3.Error, TemporaryError) as exc:
                err = (exc if isinstance(exc, TemporaryError) else
                       TemporaryError(f"writing mail server tables failed: {exc}"))
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

    # ---------------------------------------------------------------- the tables

    def _home_of(self, domain: str, mailbox_id: str) -> str:
        return str(self.home(domain, mailbox_id))

    def _write_tables(self, batch: Sequence[DomainRows]) -> bool:
        """Dovecot's additions, Postfix's rows, Dovecot's removals: three transactions in
        the order that keeps every moment between them deliverable (module docstring).
        Returns whether the list of served domains changed."""
        started = time.monotonic()
        auth = sqlite3.connect(self.layout.auth_db, timeout=10, isolation_level=None)
        try:
            with _transaction(auth):
                n = tables.upsert_auth(auth, batch, self._home_of)
            maps = self._maps_db()
            with _transaction(maps):
                written, domains_changed = tables.sync_postfix_counted(maps, batch)
                n += written
            with _transaction(auth):
                n += tables.delete_auth(auth, batch)
        finally:
            auth.close()
        self.rows_written += n
        if n:
            log.info("mail server tables written", domains=len(batch), rows=n,
                     ms=round((time.monotonic() - started) * 1000, 1))
        return domains_changed

    async def _reload_postfix(self) -> None:
        """`postfix reload`, gracefully, when the list of served domains changed. Every
        lookup reads the tables afresh, but Postfix's long-lived processes keep an
        address's class (local, virtual, relay) once resolved: in a real-stack test, mail
        submitted to a domain just proven was still relayed out, as before it was served,
        until a reload. New mailboxes and aliases need none (their lookups are live)."""
        proc = await asyncio.create_subprocess_exec(
            self.cfg.postfix, "-c", self.cfg.postfix_config_dir, "reload",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        text = (out + err).decode(errors="replace").strip()
        if proc.returncode != 0:
            # Not running is fine: it reads the tables when it starts.
            if "not running" in text:
                log.warning("postfix not running; reload skipped")
                return
            raise TemporaryError(f"postfix reload failed: {text[:300]}")
        self.reloads += 1
        log.info("postfix reloaded (the list of served domains changed)")
