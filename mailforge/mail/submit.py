"""Submitting a message to the local Postfix submission service as the mailbox itself:
SMTP AUTH with the Dovecot master user (``address*master``), so Postfix sees the
mailbox as the SASL user (sender login check, DKIM signing as originating mail, the
policy service counting its sends).

smtplib runs in a dedicated thread pool. Authenticated connections are kept per
mailbox and reused (connect, EHLO and AUTH cost more than a message); a reused
connection that the server closed meanwhile is replaced once, transparently.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage


@dataclass(frozen=True)
class SubmitResult:
    ok: bool
    # Set when the server refused: its SMTP code and text (no credentials in it).
    code: int = 0
    text: str = ""
    refused: tuple[str, ...] = ()


class Submitter:
    def __init__(self, host: str, port: int, secret: str, threads: int = 16,
                 per_mailbox: int = 2, idle_seconds: float = 30.0,
                 timeout: float = 30.0) -> None:
        self.host = host
        self.port = port
        self._secret = secret
        self.per_mailbox = per_mailbox
        self.idle_seconds = idle_seconds
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="smtp")
        self._idle: dict[str, list[tuple[smtplib.SMTP, float]]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            conns = [c for lst in self._idle.values() for c, _ in lst]
            self._idle.clear()
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
        self._pool.shutdown(wait=False)

    def _take(self, login: str) -> smtplib.SMTP | None:
        now = time.monotonic()
        with self._lock:
            lst = self._idle.get(login, [])
            while lst:
                conn, since = lst.pop()
                if now - since < self.idle_seconds:
                    return conn
                with contextlib.suppress(Exception):
                    conn.close()
        return None

    def _give(self, login: str, conn: smtplib.SMTP) -> None:
        with self._lock:
            lst = self._idle.setdefault(login, [])
            if len(lst) < self.per_mailbox:
                lst.append((conn, time.monotonic()))
                return
        with contextlib.suppress(Exception):
            conn.quit()

    def _open(self, login: str) -> smtplib.SMTP:
        s = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            s.ehlo("mailforge")
            s.login(login, self._secret)
        except BaseException:
            s.close()
            raise
        return s

    def _submit(self, login: str, sender: str, rcpts: list[str],
                msg: EmailMessage) -> SubmitResult:
        conn = self._take(login)
        reused = conn is not None
        try:
            if conn is None:
                conn = self._open(login)
            try:
                refused = conn.send_message(msg, from_addr=sender, to_addrs=rcpts)
            except smtplib.SMTPServerDisconnected:
                if not reused:
                    raise
                conn = self._open(login)  # the kept connection had timed out
                refused = conn.send_message(msg, from_addr=sender, to_addrs=rcpts)
            self._give(login, conn)
            if refused:
                code, text = next(iter(refused.values()))
                return SubmitResult(True, code, text.decode("utf-8", "replace"),
                                    tuple(refused))
            return SubmitResult(True)
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset(login, conn)
            code, text = next(iter(exc.recipients.values()))
            return SubmitResult(False, code, text.decode("utf-8", "replace"),
                                tuple(exc.recipients))
        except smtplib.SMTPResponseException as exc:
            self._reset(login, conn)
            err = exc.smtp_error
            return SubmitResult(False, exc.smtp_code,
                                err.decode("utf-8", "replace") if isinstance(err, bytes)
                                else str(err))
        except (OSError, smtplib.SMTPException):
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            raise

    def _reset(self, login: str, conn: smtplib.SMTP | None) -> None:
        """After a refusal the session may be mid-transaction: RSET, then keep it."""
        if conn is None:
            return
        try:
            conn.rset()
            self._give(login, conn)
        except (OSError, smtplib.SMTPException):
            with contextlib.suppress(Exception):
                conn.close()

    async def submit(self, login: str, sender: str, rcpts: list[str],
                     msg: EmailMessage) -> SubmitResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._submit, login, sender, rcpts, msg)
