"""Postfix + Dovecot on the same host, converged through files.

Map mechanism (see README, "Why files"): for each domain mailforge writes a Dovecot
passwd-file and one fragment per Postfix map; the Postfix maps are the
concatenation of the fragments, compiled by ``postmap`` into a temporary table and
renamed into place. Postfix notices a replaced table and its processes restart
themselves; Dovecot re-reads a passwd-file whose mtime changed. Nothing is
restarted, and the files stay valid while mailforge or PostgreSQL are down, so mail
keeps flowing to existing mailboxes.

Idempotent and crash-safe: every apply re-derives the files from the desired state
and compares them with what is on disk; only what differs is written, and the
Postfix maps are rebuilt only when their content differs. A crash between two
writes is repaired by the next apply.
"""

from __future__ import annotations

import asyncio
import grp
import math
import os
import shutil
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
from .render import DomainFiles, Routing, render

log = get(__name__)

# Fragment kind -> Postfix map it is concatenated into.
_FRAGMENT_MAPS = {"domains": "virtual_domains", "mailboxes": "virtual_mailboxes",
                  "aliases": "virtual_aliases", "senders": "sender_logins"}


def _ensure_new_mtime(path: Path, old_mtime: int) -> None:
    """Dovecot re-reads a passwd-file only when its mtime (whole seconds) or size
    differs from what it read; a password change in the same second as the previous
    write has the same size, so it would go unnoticed for good. Move the mtime on."""
    if int(path.stat().st_mtime) <= old_mtime:
        t = old_mtime + 1
        os.utime(path, (t, t))


async def _after_dovecot_gate(written_at: float) -> None:
    """Return once Dovecot is sure to see a passwd-file written at *written_at*.

    Dovecot stats a passwd-file at most once per second of its clock (a lookup in the
    same whole second as the previous one is served from memory, db-passwd-file.c), so
    a file replaced in second S may be seen only from second S+1 on. Waiting for S+1
    before the change is recorded as converged makes "job completed" mean "logins see
    it", at a cost of half a second on average. The wait happens outside the apply lock.
    """
    delay = math.floor(written_at) + 1.0 + 0.005 - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


class PostfixDovecotBackend:
    name = "postfix_dovecot"

    def __init__(self, cfg: PostfixDovecotConfig,
                 mailboxes: MailboxesConfig = MailboxesConfig()) -> None:  # noqa: B008
        self.cfg = cfg
        self.routing = Routing(mailboxes.role_addresses, mailboxes.role_target)
        self.mail_root = Path(cfg.mail_root)
        # Deleted mailboxes' homes wait here: <retention>/<domain>/<local part>.<id>.
        self.retention_dir = Path(mailboxes.retention_dir or self.mail_root / ".retention")
        self.layout = Layout(Path(cfg.state_dir), cfg.map_type)
        self.fragments = self.layout.state_dir / "fragments"
        self._auth_gid: int | None = None
        # One apply at a time per process: the global maps are shared.
        self._lock = asyncio.Lock()
        self.map_rebuilds = 0
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False

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
            os.chown(self.layout.passwd_dir, 0, self._auth_gid)
            os.chown(self.layout.passwd_dir.parent, 0, self._auth_gid)

    async def health(self) -> dict[str, Any]:
        src = self.layout.map_compiled("virtual_mailboxes")
        return {"backend": self.name, "maps_present": src.exists(),
                "map_rebuilds": self.map_rebuilds}

    async def apply(self, states: Sequence[DomainState]) -> ApplyResult:
        errors: dict[str, Any] = {}
        rendered: list[tuple[DomainState, DomainFiles]] = []
        for st in states:
            try:
                rendered.append((st, render(st, self.cfg.default_quota_mb, self.routing)))
            except PermanentError as exc:
                errors[st.domain.id] = exc
        written_at: float | None = None
        async with self._lock:
            try:
                # Restored mail goes back before Dovecot may create a fresh home.
                await asyncio.to_thread(self._restore_homes, [st for st, _ in rendered])
                wrote = await asyncio.to_thread(self._write_domains, rendered)
                await self._rebuild_maps()
                # Deleted homes move only once neither Postfix nor Dovecot serve them.
                await asyncio.to_thread(self._retire_homes, [st for st, _ in rendered])
            except (OSError, TemporaryError) as exc:
                err = (exc if isinstance(exc, TemporaryError) else
                       TemporaryError(f"writing mail server maps failed: {exc.strerror}"))
                for st, _ in rendered:
                    errors[st.domain.id] = err
            else:
                written_at = wrote
        if written_at is not None:
            await _after_dovecot_gate(written_at)
        return ApplyResult(domain_errors=errors)

    # ------------------------------------------------------- deleted mail, retention

    def home(self, domain: str, local_part: str) -> Path:
        """A mailbox's home (Dovecot's ``home=<mail_root>/%Ld/%Ln``; Maildir inside)."""
        return self.mail_root / domain / local_part

    def retained_home(self, domain: str, local_part: str, mailbox_id: str) -> Path:
        return self.retention_dir / domain / f"{local_part}.{mailbox_id}"

    def _retire_homes(self, states: Sequence[DomainState]) -> None:
        for st in states:
            for m in st.mailboxes:
                if not (m.deleted and m.observed_generation < m.generation):
                    continue
                home = self.home(st.domain.name, m.local_part)
                kept = self.retained_home(st.domain.name, m.local_part, m.id)
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
                kept = self.retained_home(st.domain.name, m.local_part, m.id)
                home = self.home(st.domain.name, m.local_part)
                if not kept.exists() or home.exists():
                    continue
                home.parent.mkdir(parents=True, exist_ok=True)
                os.rename(kept, home)
                log.info("mailbox mail restored from retention", mailbox_id=m.id,
                         domain=st.domain.name)

    async def purge_retained(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Destroy the retained mail of (domain, local part, mailbox id) tombstones."""
        await asyncio.to_thread(self._purge_retained, list(items))

    def _purge_retained(self, items: list[tuple[str, str, str]]) -> None:
        for domain, local, mailbox_id in items:
            kept = self.retained_home(domain, local, mailbox_id)
            if not kept.parent.exists():
                continue
            for path in [kept, *kept.parent.glob(f"{kept.name}.*")]:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()

    # ---------------------------------------------------------------- file handling

    def _write_domains(self, rendered: Sequence[tuple[DomainState, DomainFiles]]
                       ) -> float | None:
        """Write every domain's files; returns when a passwd-file last changed."""
        written_at: float | None = None
        for st, files in rendered:
            name = st.domain.name
            passwd = self.layout.passwd_file(name)
            if files.passwd or st.present:
                try:
                    old_mtime: int | None = int(passwd.stat().st_mtime)
                except FileNotFoundError:
                    old_mtime = None
                if atomic.write_if_changed(passwd, files.passwd.encode(), mode=0o640,
                                           group=self._auth_gid):
                    written_at = time.time()
                    if old_mtime is not None:
                        _ensure_new_mtime(passwd, old_mtime)
            else:
                atomic.remove(passwd)
            for kind in _FRAGMENT_MAPS:
                frag = self.fragments / kind / name
                content: str = getattr(files, kind)
                if content:
                    atomic.write_if_changed(frag, content.encode())
                else:
                    atomic.remove(frag)
        return written_at

    def _concat(self, kind: str) -> bytes:
        d = self.fragments / kind
        parts = []
        for name in sorted(os.listdir(d)):
            if name.startswith("."):
                continue
            parts.append((d / name).read_bytes())
        return b"".join(parts)

    async def _rebuild_maps(self) -> None:
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
            if map_name == "virtual_domains" and current is not None:
                self._request_reload()

    def _request_reload(self) -> None:
        """Reload Postfix in the background (it takes about a second, and the pass need
        not wait: the maps are already in place). Requests during a reload coalesce
        into one more reload after it."""
        self._reload_again = True
        if self._reload_task is None or self._reload_task.done():
            self._reload_task = asyncio.create_task(self._reload_loop())

    async def _reload_loop(self) -> None:
        while self._reload_again:
            self._reload_again = False
            try:
                await self._reload_postfix()
            except OSError as exc:
                log.warning("postfix reload failed", error=str(exc))

    async def _reload_postfix(self) -> None:
        """Postfix's trivial-rewrite decides "local domain or relay" and re-opens a
        replaced table only when it next accepts a client; smtpd processes keep their
        connection to it, so a new domain could be refused as relay for a long time.
        Domains change rarely: a reload (graceful, no mail lost) makes them live now."""
        postfix = str(Path(self.cfg.postmap).with_name("postfix"))
        proc = await asyncio.create_subprocess_exec(
            postfix, "-c", self.cfg.postfix_config_dir, "reload",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        if proc.returncode != 0:
            # Not fatal: the maps are in place and Postfix picks them up eventually.
            log.warning("postfix reload failed", error=err.decode(errors="replace")[:300])

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
