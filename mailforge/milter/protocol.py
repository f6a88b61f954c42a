"""The Sendmail milter protocol (versions 2 to 6), the part a filter that only looks and
decides needs, on asyncio.

Written here rather than taken from PyPI: the maintained pure-Python libraries
(``purepythonmilter``, ``kilter-protocol``) are not packaged for Debian and are not
available to this project's installs, and ``python3-milter`` (libmilter bindings, what
dkimpy-milter uses) runs a thread per connection with process-wide callbacks. A
checking filter needs only the commands below, and no modification actions.

Wire format: every packet is a 4-byte big-endian length, a command byte and its data.
The MTA sends OPTNEG first; we answer with the version and the steps we want (the
protocol flags below tell the MTA to skip CONNECT, HELO, RCPT, DATA, unknown commands
and the body). Macros arrive in ``D`` packets before the command they belong to and
need no reply; every other command gets one reply (continue, or a final verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable
from dataclasses import dataclass, field

# Commands (MTA -> filter).
OPTNEG = b"O"
MACRO = b"D"
CONNECT = b"C"
HELO = b"H"
MAIL = b"M"
RCPT = b"R"
DATA = b"T"
HEADER = b"L"
EOH = b"N"
BODY = b"B"
EOM = b"E"
ABORT = b"A"
QUIT = b"Q"
QUIT_NC = b"K"
UNKNOWN = b"U"

# Replies (filter -> MTA).
CONTINUE = b"c"
ACCEPT = b"a"
TEMPFAIL = b"t"
REPLYCODE = b"y"

# Protocol flags: steps the MTA may skip.
P_NOCONNECT = 0x1
P_NOHELO = 0x2
P_NORCPT = 0x8
P_NOBODY = 0x10
P_NOUNKNOWN = 0x100
P_NODATA = 0x200
WANTED_SKIPS = P_NOCONNECT | P_NOHELO | P_NORCPT | P_NOBODY | P_NOUNKNOWN | P_NODATA

MAX_PACKET = 1 << 20  # Postfix sends headers and body in chunks of at most 64 KiB


class ProtocolError(Exception):
    """The peer broke the protocol; the connection is closed."""


@dataclass(frozen=True)
class Verdict:
    """A reply: CONTINUE/ACCEPT/TEMPFAIL, or REPLYCODE with an SMTP reply text."""

    code: bytes
    text: str = ""

    def packet(self) -> bytes:
        data = self.text.encode() + b"\0" if self.code == REPLYCODE else b""
        return struct.pack(">I", 1 + len(data)) + self.code + data


GO_ON = Verdict(CONTINUE)


@dataclass
class Session:
    """What the filter has seen of the current message on one connection."""

    macros: dict[str, str] = field(default_factory=dict)
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    header_bytes: int = 0
    # The filter's own note about the current message (e.g. what it decided at EOH).
    note: object = None

    def reset_message(self) -> None:
        self.headers.clear()
        self.header_bytes = 0
        self.note = None


class Filter:
    """Override the hooks; each returns a verdict for its step."""

    async def end_of_headers(self, session: Session) -> Verdict:
        return GO_ON

    async def end_of_message(self, session: Session) -> Verdict:
        return Verdict(ACCEPT)


def _split_nul(data: bytes) -> list[bytes]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def _macro_name(raw: bytes) -> str:
    name = raw.decode("ascii", "replace")
    if name.startswith("{") and name.endswith("}"):
        name = name[1:-1]
    return name


async def _read_packet(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readexactly(4)
    (length,) = struct.unpack(">I", head)
    if length < 1 or length > MAX_PACKET:
        raise ProtocolError(f"bad packet length {length}")
    body = await reader.readexactly(length)
    return body[:1], body[1:]


async def handle(flt: Filter, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_header_bytes: int = 1 << 20) -> None:
    """Serve one MTA connection until QUIT or EOF."""
    session = Session()

    async def send(v: Verdict) -> None:
        writer.write(v.packet())
        await writer.drain()

    try:
        while True:
            try:
                cmd, data = await _read_packet(reader)
            except asyncio.IncompleteReadError:
                return
            if cmd == OPTNEG:
                if len(data) < 12:
                    raise ProtocolError("short OPTNEG")
                version, _actions, offered = struct.unpack(">III", data[:12])
                reply = struct.pack(">III", min(version, 6), 0, WANTED_SKIPS & offered)
                writer.write(struct.pack(">I", 1 + len(reply)) + OPTNEG + reply)
                await writer.drain()
            elif cmd == MACRO:
                parts = _split_nul(data[1:])
                for i in range(0, len(parts) - 1, 2):
                    session.macros[_macro_name(parts[i])] = parts[i + 1].decode(
                        "utf-8", "replace")
            elif cmd == MAIL:
                session.reset_message()
                await send(GO_ON)
            elif cmd == HEADER:
                parts = data.split(b"\0")
                if len(parts) < 2:
                    raise ProtocolError("malformed HEADER")
                session.header_bytes += len(data)
                if session.header_bytes <= max_header_bytes:
                    session.headers.append((parts[0].decode("ascii", "replace"), parts[1]))
                await send(GO_ON)
            elif cmd == EOH:
                await send(await flt.end_of_headers(session))
            elif cmd == EOM:
                verdict = await flt.end_of_message(session)
                session.reset_message()
                await send(verdict)
            elif cmd == ABORT:
                session.reset_message()
            elif cmd in (QUIT, QUIT_NC):
                if cmd == QUIT:
                    return
                session = Session()
            elif cmd in (CONNECT, HELO, RCPT, DATA, BODY, UNKNOWN):
                await send(GO_ON)
            else:
                raise ProtocolError(f"unknown command {cmd!r}")
    except (ProtocolError, ConnectionError):
        return
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(flt: Filter, host: str, port: int) -> asyncio.Server:
    """Listen on host:port; every connection is served by *flt*."""
    def factory(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Awaitable[None]:
        return handle(flt, r, w)

    return await asyncio.start_server(factory, host, port, reuse_address=True)
