"""Atomic file replacement: write a temporary file beside the target, fsync, rename.

A reader (Postfix, Dovecot, OpenDKIM) sees the old file or the new one, never a
partial one, and a crash leaves at worst a stray temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_bytes(path: Path, data: bytes, mode: int = 0o644, group: int | None = None,
                owner: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if group is not None or owner is not None:
            os.chown(tmp, -1 if owner is None else owner, -1 if group is None else group)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_if_changed(path: Path, data: bytes, mode: int = 0o644, group: int | None = None,
                     owner: int | None = None) -> bool:
    """Replace *path* only if its content differs; return whether it was written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    write_bytes(path, data, mode=mode, group=group, owner=owner)
    return True


def remove(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
