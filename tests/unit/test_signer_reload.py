"""The DKIM signer's restart off the setup's critical path (issue 11): a sync for a
domain without mailboxes returns before the signer serves again; ``settled`` (what a
pass serving mailboxes awaits) waits for it; a restart that never comes back is
logged and redone by the next sync even though the tables did not change."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mailforge.config import Config, DkimConfig
from mailforge.dns.step import DnsService
from mailforge.errors import TemporaryError


class _Keys:
    async def signing_keys(self) -> list[Any]:
        return []


class _Store:
    """What DnsService reads of the store for a sync: no signing keys."""

    dns = _Keys()


def _service(tmp_path: Path, delay: float, writes: bool = True) -> tuple[DnsService, Path]:
    pidfile = tmp_path / "signer.pid"
    pidfile.write_text("old\n")
    calls = tmp_path / "calls"
    # A restart that completes *delay* seconds after it was asked for (or never).
    change = f"echo new$$ > {pidfile}" if writes else "true"
    cmd = ("/bin/sh", "-c", f"echo x >> {calls}; (sleep {delay}; {change}) >/dev/null 2>&1 &")
    cfg = Config(dkim=DkimConfig(signer_dir=str(tmp_path / "dkim"), reload_command=cmd,
                                 signer_pid_file=str(pidfile)))
    svc = DnsService(_Store(), cfg, None)  # type: ignore[arg-type]
    return svc, calls


async def test_a_sync_without_waiting_returns_before_the_restart(tmp_path: Path) -> None:
    svc, calls = _service(tmp_path, delay=0.6)
    t = time.monotonic()
    assert await svc.sync_signer(wait=False) is True
    assert time.monotonic() - t < 0.5
    await svc.settled()
    assert time.monotonic() - t >= 0.6
    assert calls.read_text() == "x\n"


async def test_a_sync_that_waits_returns_once_the_signer_serves(tmp_path: Path) -> None:
    svc, _ = _service(tmp_path, delay=0.3)
    t = time.monotonic()
    await svc.sync_signer(wait=True)
    assert time.monotonic() - t >= 0.3


async def test_a_failed_restart_is_redone_by_the_next_sync(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    from mailforge.dkim import signer

    real = signer.await_reload

    async def quick(cfg: DkimConfig, before: str, timeout: float = 15.0) -> None:
        await real(cfg, before, timeout=0.3)

    monkeypatch.setattr(signer, "await_reload", quick)
    svc, calls = _service(tmp_path, delay=0.05, writes=False)
    await svc.sync_signer(wait=False)
    with pytest.raises(TemporaryError):
        await svc.settled(raise_errors=True)
    # The tables did not change since, yet the signer is restarted again.
    await svc.sync_signer(wait=False)
    assert calls.read_text() == "x\nx\n"
