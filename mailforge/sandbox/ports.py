"""Free loopback ports for the sandbox services, chosen once and then persisted.

Ports are drawn at random from 20000-32000, below Linux's ephemeral range
(32768-60999), so an outgoing connection of some other process cannot take a port
between the moment it is chosen and the moment its daemon binds it.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

LOW, HIGH = 20000, 32000


def port_is_free(port: int, host: str = "127.0.0.1", udp: bool = False) -> bool:
    kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp else [socket.SOCK_STREAM]
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def pick_ports(names: Iterable[str], udp: Iterable[str] = (), avoid: Iterable[int] = (),
               rng: random.Random | None = None, host: str = "127.0.0.1") -> dict[str, int]:
    """One free TCP port (TCP and UDP for names in *udp*) on *host* per name, all
    distinct (and distinct from *avoid*)."""
    rng = rng or random.SystemRandom()
    udp_names = set(udp)
    taken = set(avoid)
    out: dict[str, int] = {}
    for name in names:
        for _ in range(2000):
            port = rng.randrange(LOW, HIGH)
            if port in taken:
                continue
            if port_is_free(port, host, udp=name in udp_names):
                out[name] = port
                taken.add(port)
                break
        else:
            raise RuntimeError(f"no free loopback port found for {name}")
    return out
