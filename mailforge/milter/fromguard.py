"""The From header guard: a milter on Postfix's submission service that refuses a
message whose From header address the authenticated login may not use.

``smtpd_sender_login_maps`` (``reject_sender_login_mismatch``) checks only the envelope
sender; the DKIM signer signs by the From header's domain. Without this guard any
mailbox could submit ``From: ceo@<another tenant's domain>`` with its own envelope
sender and the message would leave signed with the other tenant's keys.

The rule is the envelope rule applied to the header: the message must have exactly one
From header with exactly one address, and the sender_logins lookup (the one Postfix's
``smtpd_sender_login_maps`` runs, in the database the backend writes for Postfix,
``postfix/maps.sqlite``: an address -> its owners) must list the SASL login
(``{auth_authen}``) as an owner of that address (tried as written, then without a
``+extension``, then as ``@domain``, as Postfix looks it up).
Anything else is refused with ``553 5.7.1``: no From, several From headers or
addresses, an address the parsers do not all read the same way (the signer and the
receivers must not be able to see a different author than the one checked), no login.

mailforge's own sends log in with the Dovecot master user (``address*master``, see
``mail/submit.py``); Dovecot answers Postfix with the mailbox's own name, so that is
what ``{auth_authen}`` holds, but a ``*master`` suffix is removed if it ever shows up
(only a master login can carry one: ``*`` is not allowed in a mailbox name).

It reads only that local database (read-only), never PostgreSQL,
so it keeps working while mailforge and its database are down. It runs as its own
small process (``python -m mailforge.milter.fromguard``: in the sandbox a service, on a
server ``deploy/systemd/mailforge-fromguard.service``), not inside the daemon: the
submission service must keep working while the daemon is stopped, and while this
guard is down Postfix defers submissions (``default_action=tempfail``), as a security
check must; port 25 does not use it. ``FromGuard(on_accepted=...)`` is the hook for
recording accepted submissions (login, From address, Message-ID) when it is embedded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email.policy
import email.utils
import re
import signal
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..backends.postfix_dovecot.tables import lookup
from ..log import get
from ..mail.master import mailbox_of
from . import protocol
from .protocol import GO_ON, REPLYCODE, Session, Verdict

log = get(__name__)

OnAccepted = Callable[[str, str, "str | None"], Awaitable[None]]

NOT_OWNED = "553 5.7.1 From header not owned by the login"
BAD_FROM = "553 5.7.1 Exactly one From header with exactly one address is required"
NO_LOGIN = "553 5.7.1 Authentication required to submit"
MAP_DOWN = "451 4.3.0 Sender ownership map unavailable, try again later"

# The header bytes this guard keeps; more is refused (a From hidden after megabytes of
# headers is not worth parsing).
MAX_HEADER_BYTES = 256 * 1024
_ADDR = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]+@[a-z0-9.-]+")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# ------------------------------------------------------------------------ pure parts


def parse_sender_map(text: str) -> dict[str, frozenset[str]]:
    """``address owner1,owner2`` lines (the Postfix map source) -> address -> owners."""
    out: dict[str, frozenset[str]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or line.startswith("#"):
            continue
        key, owners = parts
        out[key.lower()] = frozenset(o.lower() for o in owners.split(",") if o)
    return out


def login_name(authen: str) -> str:
    """The mailbox a SASL login acts as (a master-user login ``user*master`` -> user)."""
    return mailbox_of(authen)


def from_address(values: list[bytes]) -> str | None:
    """The single From address of a message, lowercased, or None if there is not
    exactly one From header with exactly one address that every parser agrees on."""
    if len(values) != 1:
        return None
    try:
        text = values[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = _FOLD.sub("", text)
    if _CTL.search(text) or "\r" in text:
        return None
    try:
        header = email.policy.default.header_factory("From", text)
    except Exception:  # any parser failure means unparsable
        return None
    addrs: tuple[Any, ...] = tuple(getattr(header, "addresses", ()))
    if len(addrs) != 1 or header.defects:
        return None
    spec = str(addrs[0].addr_spec).lower()
    # The signer (dkimpy-milter) reads the author with its own parser (pymilter's
    # Milter.utils.parseaddr), receivers with theirs: the address must be written so
    # plainly that the standard library's parsers all read the same one.
    others = email.utils.getaddresses([text])
    if len(others) != 1 or others[0][1].lower() != spec:
        return None
    if email.utils.parseaddr(text)[1].lower() != spec:
        return None
    if not _ADDR.fullmatch(spec) or spec.count("@") != 1:
        return None
    return spec


def lookup_keys(address: str, delimiter: str = "+") -> list[str]:
    local, _, domain = address.rpartition("@")
    keys = [address]
    if delimiter and delimiter in local:
        keys.append(f"{local.split(delimiter, 1)[0]}@{domain}")
    keys.append(f"@{domain}")
    return keys


class Senders(Protocol):
    """address -> its owners, or None when the map has no such key."""

    def get(self, key: str, /) -> frozenset[str] | None: ...


def owns(senders: Senders, login: str, address: str) -> bool:
    """May *login* use *address* as its From? The first key found decides, as in Postfix."""
    for key in lookup_keys(address):
        owners = senders.get(key)
        if owners is not None:
            return login in owners
    return False


def decide(senders: Senders, authen: str,
           from_values: list[bytes]) -> tuple[str | None, str | None]:
    """(From address, None) when allowed, else (address or None, SMTP reply text)."""
    login = login_name(authen)
    if not login:
        return None, NO_LOGIN
    address = from_address(from_values)
    if address is None:
        return None, BAD_FROM
    if not owns(senders, login, address):
        return address, NOT_OWNED
    return address, None


# ------------------------------------------------------------------------ the milter


class SenderDb:
    """The sender_logins lookup, read-only, in the Postfix database the backend writes.
    One connection, opened on first use; each lookup sees the latest committed rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def get(self, key: str, /) -> frozenset[str] | None:
        with self._lock:
            if self._db is None:
                # mode=ro: the guard never writes, and its closing never removes the files
                # Postfix's readers need.
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                           check_same_thread=False, timeout=5)
            owners = lookup(self._db, "sender_logins", key)
        return frozenset(owners) if owners else None


async def _no_op(login: str, from_addr: str, message_id: str | None) -> None:
    return None


@dataclass(frozen=True)
class _Decision:
    login: str
    address: str


class FromGuard(protocol.Filter):
    def __init__(self, map_path: Path, on_accepted: OnAccepted | None = None) -> None:
        self.senders = SenderDb(map_path)
        self.on_accepted: OnAccepted = on_accepted or _no_op

    async def end_of_headers(self, session: Session) -> Verdict:
        session.note = None
        if session.header_bytes > MAX_HEADER_BYTES:
            return Verdict(REPLYCODE, BAD_FROM)
        authen = session.macros.get("auth_authen", "")
        froms = [v for n, v in session.headers if n.strip().lower() == "from"]
        try:
            address, refusal = await asyncio.to_thread(decide, self.senders, authen, froms)
        except (OSError, sqlite3.Error) as exc:
            log.error("from guard cannot read the sender map", path=str(self.senders.path),
                      error=str(exc))
            return Verdict(REPLYCODE, MAP_DOWN)
        if refusal is not None:
            log.info("submission refused: From header", login=login_name(authen),
                     from_addr=address, reply=refusal[:3], queue_id=session.macros.get("i"))
            return Verdict(REPLYCODE, refusal)
        assert address is not None
        session.note = _Decision(login_name(authen), address)
        return GO_ON

    async def end_of_message(self, session: Session) -> Verdict:
        decision = session.note
        if not isinstance(decision, _Decision):  # no EOH seen: never let it through
            return Verdict(REPLYCODE, BAD_FROM)
        ids = [v for n, v in session.headers if n.strip().lower() == "message-id"]
        message_id = None
        if len(ids) == 1:
            message_id = ids[0].decode("utf-8", "replace").strip() or None
        try:
            await self.on_accepted(decision.login, decision.address, message_id)
        except Exception as exc:  # recording must never stop mail
            log.warning("from guard on_accepted hook failed", error=str(exc))
        return GO_ON


async def start(map_path: Path, host: str, port: int,
                on_accepted: OnAccepted | None = None) -> asyncio.Server:
    """Start the guard on host:port (e.g. inside another asyncio program)."""
    return await protocol.serve(FromGuard(map_path, on_accepted), host, port)


class SubmissionRecorder:
    """Best-effort recording of accepted submissions' Message-IDs as reputation evidence
    (``reputation.record_submitted``: a DSN or ARF report counts only for a message we
    sent). It never delays or stops mail: the hook only queues (bounded; dropped when
    full), and a worker writes to PostgreSQL, dropping what it cannot write while the
    database is down. A message without a Message-ID gets one from Postfix's cleanup
    after the milters ran, so it is not recorded (mailforge's API sends always set one
    and record it themselves)."""

    def __init__(self, dsn: str, days: int, maxsize: int = 10_000) -> None:
        self.dsn = dsn
        self.days = days
        self.queue: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue(maxsize)
        self.dropped = 0

    async def __call__(self, login: str, from_addr: str, message_id: str | None) -> None:
        if not message_id:
            return
        try:
            self.queue.put_nowait((login, from_addr, message_id))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self, stop: asyncio.Event) -> None:
        # Imported here: the guard itself needs neither asyncpg nor the store.
        from .. import reputation
        from ..store.store import create_pool

        pool: Any = None
        while not stop.is_set():
            getter = asyncio.ensure_future(self.queue.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                break
            login, from_addr, message_id = getter.result()
            try:
                if pool is None:
                    pool = await create_pool(self.dsn, min_size=0, max_size=2)
                await reputation.record_submitted(pool, login, from_addr, message_id,
                                                  days=self.days)
            except Exception as exc:  # the database is down or refused: drop, go on
                self.dropped += 1
                log.warning("submission not recorded as reputation evidence",
                            error=type(exc).__name__)
        if pool is not None:
            await pool.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m mailforge.milter.fromguard --listen HOST:PORT --map MAPS.SQLITE
    [--config mailforge.yaml]``."""
    p = argparse.ArgumentParser(prog="mailforge.milter.fromguard", description=__doc__)
    p.add_argument("--listen", required=True, help="HOST:PORT, e.g. 127.0.0.1:8892")
    p.add_argument("--map", required=True, type=Path,
                   help="the Postfix database mailforge writes (postfix/maps.sqlite)")
    p.add_argument("--config", type=Path, default=None,
                   help="mailforge's configuration: when given, accepted submissions' "
                        "Message-IDs are recorded (best effort) as reputation evidence")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")

    async def run() -> None:
        recorder = None
        if args.config is not None:
            from ..config import load

            cfg = load(args.config)
            recorder = SubmissionRecorder(cfg.database.dsn, cfg.reputation.evidence_days)
        server = await start(args.map, host or "127.0.0.1", int(port), recorder)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("from guard listening", address=args.listen, map=str(args.map),
                 recording=recorder is not None)
        recording = (asyncio.create_task(recorder.run(stop), name="submission-recorder")
                     if recorder is not None else None)
        async with server:
            await stop.wait()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        if recording is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(recording, 5)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
