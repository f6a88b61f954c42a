"""Who holds a lease or a claim in the store, and whether that holder still runs.

Engine leases (``node:pid:worker``) and Idempotency-Key claims (``node:pid:start``)
name the process holding them, so that a restart after a crash can release what a
dead process held at once instead of waiting for the lease to expire. Only processes
of this node can be checked from here; another node's holder is judged by its lease.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

NODE = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Does a process with this pid run on this node?"""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str | None:
    """The start time of *pid* (clock ticks since boot), None when it does not run."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Field 22, counted after the ")" that ends the command name, which may itself hold
    # spaces or parentheses.
    return stat[stat.rindex(b")") + 2:].split()[19].decode()


@cache
def _identity(pid: int) -> str:
    return f"{NODE}:{pid}:{process_start(pid) or '0'}"


def claimant_id() -> str:
    """This process: ``node:pid:process start``. The start time tells a restarted
    daemon that got the same pid (e.g. pid 1 in a container) from the one that died.
    Computed once per process (keyed by pid, so a forked child gets its own)."""
    return _identity(os.getpid())


def claimant_alive(claimant: str | None) -> bool | None:
    """True/False for a claimant of this node; None when it cannot be told from here
    (another node: its lease decides). No claimant: released on purpose, so not alive."""
    if claimant is None:
        return False
    node, _, rest = claimant.partition(":")
    pid_s, _, start = rest.partition(":")
    if node != NODE or not pid_s.isdigit():
        return None
    return process_start(int(pid_s)) == start
