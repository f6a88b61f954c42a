"""A tiny supervisor for dkimpy-milter (used by the sandbox): runs the milter in the
foreground, restarts it on SIGHUP (dkimpy-milter reads keys only at start), stops it
on SIGTERM. Writes "<own pid>\\n<milter pid>\\n" to PIDFILE after each start, so a
reloader can see that the restart happened.

Usage: python -m mailforge.dkim.supervise CONF PIDFILE
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types


def main(argv: list[str]) -> int:
    conf, pidfile = argv[0], argv[1]
    child: subprocess.Popen[bytes] | None = None
    state = {"restart": False, "stop": False}

    def on_hup(_s: int, _f: types.FrameType | None) -> None:
        state["restart"] = True

    def on_term(_s: int, _f: types.FrameType | None) -> None:
        state["stop"] = True

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not state["stop"]:
        child = subprocess.Popen(["/usr/bin/dkimpy-milter", conf])
        tmp = pidfile + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{os.getpid()}\n{child.pid}\n")
        os.replace(tmp, pidfile)
        while child.poll() is None and not state["stop"] and not state["restart"]:
            time.sleep(0.05)
        if child.poll() is None:
            # dkimpy-milter takes seconds to leave its loop on SIGTERM; it keeps no
            # state, and Postfix's milter_default_action covers a message in flight.
            child.kill()
            child.wait()
        elif not state["restart"] and not state["stop"]:
            time.sleep(0.5)  # crashed: do not spin
        state["restart"] = False
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
