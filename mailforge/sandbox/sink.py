"""Outbound SMTP sink for the sandbox: accepts any message and stores it on disk.

``python -m mailforge.sandbox.sink --host 127.0.0.1 --port P --dir OUTBOX``

Each message is stored as ``<time>-<seq>.eml`` holding the raw bytes exactly as
received (after the DATA dot-unstuffing, nothing added), plus ``<same>.json`` with
``{mail_from, rcpt_tos, peer, received_at}``. Both are written to a temporary name
and renamed, the ``.json`` last, so a reader that waits for the sidecar always finds
a complete message.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


class SinkHandler:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self._seq = itertools.count(1)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.time()
        stem = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}" \
               f"{int(now * 1e6) % 1_000_000:06d}-{os.getpid()}-{next(self._seq):06d}"
        raw = envelope.original_content
        if raw is None:
            content: Any = envelope.content
            raw = content.encode("utf-8") if isinstance(content, str) else bytes(content or b"")
        peer = session.peer
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": list(peer) if isinstance(peer, tuple) else str(peer),
            "received_at": now,
            "helo": session.host_name,
        }
        _write_atomic(self.outbox / f"{stem}.eml", raw)
        _write_atomic(self.outbox / f"{stem}.json",
                      json.dumps(meta, indent=1).encode("utf-8"))
        return "250 2.0.0 Stored in sink as " + stem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mailforge.sandbox.sink", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, type=Path)
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(SinkHandler(args.dir), hostname=args.host, port=args.port,
                            decode_data=False, data_size_limit=64 * 1024 * 1024,
                            server_hostname="sink.sandbox.test",
                            ident="mailforge sandbox sink")
    controller.start()
    print(f"sink listening on {args.host}:{args.port}, storing in {args.dir}", flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def _stop(*_: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        controller.stop()
        loop.close()
    print("sink stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
