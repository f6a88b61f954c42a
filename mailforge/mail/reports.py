"""What a DSN (RFC 3464) or an ARF feedback report (RFC 5965) says, as evidence.

Anyone can send a report to port 25, so a report is only a claim about a message;
the reputation code counts it only when the message it names is one mailforge sent
(its Message-ID was recorded at sending). This module extracts the claim: the kind,
the Message-ID of the original message (from the attached original,
``message/rfc822`` or ``text/rfc822-headers``, else an ``Original-Message-ID``
field of the report) and, for a DSN, the recipients that failed. Pure functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser

from . import compose

# A Message-ID as sent (``<left@right>``), its inside kept as the key; bounded so that
# a hostile report cannot make us store or look up anything large.
_MSGID = re.compile(r"\s*<([\x21-\x3b\x3d\x3f-\x7e]{1,250})>\s*")
_ADDR = re.compile(r"[\x21-\x7e]{1,320}")
_ORIGINALS = ("message/rfc822", "message/global")
_HEADERS = ("text/rfc822-headers", "message/global-headers")
_STATUS = ("message/delivery-status", "message/global-delivery-status")
MAX_RECIPIENTS = 50


@dataclass(frozen=True)
class Report:
    kind: str  # 'bounce' or 'complaint'
    message_id: str | None  # the original's Message-ID without <>, None when absent
    recipients: tuple[str, ...] = ()  # failed recipients of a DSN, lower case


def normal_msgid(value: object) -> str | None:
    """The inside of one ``<...>`` Message-ID, or None for anything else."""
    if value is None:
        return None
    m = _MSGID.fullmatch(str(value))
    return m.group(1) if m else None


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError, AttributeError):
        return None
    return None if value is None else str(value)


def _original_msgid(part: Message) -> str | None:
    ctype = part.get_content_type()
    if ctype in _ORIGINALS:
        payload = part.get_payload()
        if isinstance(payload, list) and payload and isinstance(payload[0], Message):
            return normal_msgid(_header(payload[0], "Message-ID"))
        return None
    if ctype in _HEADERS:
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            return None
        headers = BytesParser(policy=policy.default).parsebytes(data[:65536],
                                                                headersonly=True)
        return normal_msgid(_header(headers, "Message-ID"))
    return None


def _fields(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    return []


def _address(value: str | None) -> str | None:
    """``rfc822; bob@example.org`` -> ``bob@example.org``."""
    if not value:
        return None
    kind, sep, addr = value.partition(";")
    if not sep or kind.strip().lower() not in ("rfc822", "utf-8"):
        return None
    addr = addr.strip().strip("<>").lower()
    return addr if _ADDR.fullmatch(addr) and "@" in addr else None


def parse(msg: Message) -> Report | None:
    """The report *msg* is (None for anything that is no failure DSN or ARF report)."""
    kind = compose.classify_report(msg)
    if kind is None:
        return None
    parts = [p for p in (msg.get_payload() if msg.is_multipart() else [])
             if isinstance(p, Message)]
    message_id: str | None = None
    field_msgid: str | None = None
    failed: list[str] = []
    for part in parts:
        ctype = part.get_content_type()
        if ctype in _ORIGINALS or ctype in _HEADERS:
            message_id = message_id or _original_msgid(part)
        elif ctype in _STATUS or ctype == "message/feedback-report":
            for group in _fields(part):
                field_msgid = field_msgid or normal_msgid(
                    _header(group, "Original-Message-ID"))
                if ctype in _STATUS and (_header(group, "Action") or "").strip().lower() \
                        == "failed":
                    for name in ("Final-Recipient", "Original-Recipient"):
                        addr = _address(_header(group, name))
                        if addr and addr not in failed and len(failed) < MAX_RECIPIENTS:
                            failed.append(addr)
    return Report(kind, message_id or field_msgid, tuple(failed))
