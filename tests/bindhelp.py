"""A private BIND9 (``named``) for RFC 2136 tests: loopback, a high port, TSIG keys,
its own log file (shown when a test fails), stopped at fixture teardown."""

from __future__ import annotations

import base64
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailforge.sandbox.ports import pick_ports


@dataclass
class Bind:
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    keys: dict[str, str] = field(default_factory=dict)  # name -> base64 secret
    zones: list[str] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.dir / "named.log"

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no named log: {exc})"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _zone_file(zone: str) -> str:
    return (f"$TTL 300\n@ IN SOA ns1.sandbox.test. hostmaster.{zone}. 1 3600 600 86400 300\n"
            "@ IN NS ns1.sandbox.test.\n")


def start_named(base: Path, zones: Sequence[str], key_names: Sequence[str],
                prefill: dict[str, str] | None = None, port: int | None = None,
                keys: dict[str, str] | None = None) -> Bind:
    """Start named serving *zones*, each updatable and transferable with any of the
    keys; *prefill* adds zone-file lines per zone (the operator's own records). A
    restart passes the same *port* (and zone files are kept when they exist)."""
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    port = port or pick_ports(["bind"], udp=("bind",))["bind"]
    keys = keys or {k: base64.b64encode(secrets.token_bytes(32)).decode()
                    for k in key_names}
    allow = " ".join(f'key "{k}";' for k in keys)
    conf = [
        "options {", f'  directory "{base}";', f"  listen-on port {port} {{ 127.0.0.1; }};",
        "  listen-on-v6 { none; };", f'  pid-file "{base}/named.pid";',
        f'  session-keyfile "{base}/session.key";', "  recursion no;",
        "  allow-query { any; };", "  dnssec-validation no;", "};",
        "controls { };",
        "logging {",
        f'  channel f {{ file "{base}/named.log"; severity info; print-time yes; '
        'print-category yes; };',
        "  category default { f; }; category update { f; }; category security { f; };",
        "  category xfer-out { f; }; category update-security { f; };", "};",
    ]
    for k, secret in keys.items():
        conf.append(f'key "{k}" {{ algorithm hmac-sha256; secret "{secret}"; }};')
    for z in zones:
        zf = base / f"{z}.zone"
        if not zf.exists():
            zf.write_text(_zone_file(z) + (prefill or {}).get(z, ""))
        conf.append(f'zone "{z}" {{ type primary; file "{zf}"; '
                    f"allow-update {{ {allow} }}; allow-transfer {{ {allow} }}; }};")
    (base / "named.conf").write_text("\n".join(conf) + "\n")
    bind_uid = pwd.getpwnam("bind")
    for p in [base, *base.iterdir()]:
        shutil.chown(p, bind_uid.pw_uid, bind_uid.pw_gid)
    proc = subprocess.Popen(["/usr/sbin/named", "-c", str(base / "named.conf"), "-u", "bind",
                             "-f", "-4"], stdout=open(base / "named.stdout", "wb"),
                            stderr=subprocess.STDOUT)
    b = Bind(base, port, proc, keys, list(zones))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"named exited {proc.returncode}:\n"
                               f"{(base / 'named.stdout').read_text(errors='replace')}\n"
                               f"{b.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if "running" in b.log.read_text(errors="replace"):
                    return b
        except OSError:
            pass
        time.sleep(0.05)
    b.stop()
    raise RuntimeError(f"named did not start:\n{b.log_tail()}")
