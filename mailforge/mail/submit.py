"""Submitting a message to the local Postfix submission service as the mailbox itself:
SMTP AUTH with the Dovecot master user (``address*master``), so Postfix sees the
mailbox as the SASL user (sender login check, DKIM signing as originating mail, the
policy service counting its sends). smtplib runs in a worker thread."""

from __future__ import annotations

import asyncio
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage


@dataclass(frozen=True)
class SubmitResult:
    ok: bool
    # Set when the server refused: its SMTP code and text (no credentials in it).
    code: int = 0
    text: str = ""
    refused: tuple[str, ...] = ()


def _submit(host: str, port: int, login: str, secret: str, sender: str,
            rcpts: list[str], msg: EmailMessage, timeout: float) -> SubmitResult:
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as s:
            s.ehlo("mailforge")
            s.login(login, secret)
            refused = s.send_message(msg, from_addr=sender, to_addrs=rcpts)
            if refused:
                code, text = next(iter(refused.values()))
                return SubmitResult(True, code, text.decode("utf-8", "replace"),
                                    tuple(refused))
            return SubmitResult(True)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return SubmitResult(False, code, text.decode("utf-8", "replace"),
                            tuple(exc.recipients))
    except smtplib.SMTPResponseException as exc:
        err = exc.smtp_error
        return SubmitResult(False, exc.smtp_code,
                            err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err))


async def submit(host: str, port: int, login: str, secret: str, sender: str,
                 rcpts: list[str], msg: EmailMessage, smtp_timeout: float = 30.0
                 ) -> SubmitResult:
    return await asyncio.to_thread(_submit, host, port, login, secret, sender, rcpts, msg,
                                   smtp_timeout)
