"""Composing outgoing messages and reading incoming ones, with the stdlib ``email``
package: pure functions, unit-tested without a mail server."""

from __future__ import annotations

import base64
import binascii
import html
import re
import secrets
from dataclasses import dataclass, field
from email import errors, policy
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses
from html.parser import HTMLParser
from typing import Any

from .. import validation

MAX_RECIPIENTS = 100
MAX_ATTACHMENTS = 20
MAX_SUBJECT = 998
_MSGID = re.compile(r"<[^<>\s@]+@[^<>\s@]+>")
_CTYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class SendRequest:
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str = ""
    body: str = ""
    is_html: bool = False
    # Plain-text alternative given explicitly with an HTML body.
    text: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    # Display names the client gave for to/cc addresses: (canonical address, name).
    names: tuple[tuple[str, str], ...] = ()

    @property
    def recipients(self) -> list[str]:
        return [*self.to, *self.cc, *self.bcc]

    def header_addresses(self, addresses: tuple[str, ...]) -> tuple[Address, ...]:
        """*addresses* with their display names, for the To and Cc headers (the email
        package quotes or encodes each name; none holds a line break)."""
        names = dict(self.names)
        return tuple(Address(names.get(a, ""), addr_spec=a) for a in addresses)


# Matched in full (fullmatch): ``$`` would accept a final newline, a header injection.
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
# The RFC 5322 parser is pure Python (about 8 µs a character): a to/cc/bcc field (all
# its list items together) is parsed only up to this length, which 100 recipients with
# display names fit in, so one request cannot hold the event loop for long.
MAX_ADDRESS_TEXT = 12_000
# Comments nest (``(a (b (c)))``) and the parser recurses into each level.
MAX_COMMENT_DEPTH = 8
_HEADER_FACTORY = policy.default.header_factory


def recipient(value: str) -> str:
    """A recipient address (any dot-atom local part, IDN domain as ASCII)."""
    local, sep, dom = value.strip().rpartition("@")
    if not sep or not _LOCAL.fullmatch(local) or local.startswith(".") or local.endswith(".") \
            or ".." in local:
        raise ValueError("must be an address of the form local@domain")
    return f"{local}@{validation.domain_name(dom)}"


def _comment_depth(text: str) -> int:
    """How deep ``(...)`` comments nest in *text* (outside quoted strings; ``\\``
    escapes the next character in both)."""
    depth = deepest = 0
    quoted = escaped = False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == '"' and depth == 0:
            quoted = not quoted
        elif not quoted and c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif not quoted and c == ")" and depth:
            depth -= 1
    return deepest


def parse_addresses(text: str) -> list[tuple[str, str]]:
    """The (display name, canonical address) pairs of an RFC 5322 address list: bare
    addresses, ``Name <addr>``, quoted names with commas, encoded words, comments.

    Strict where it matters: line breaks and control characters anywhere (also inside
    an encoded word's decoded text) are refused, not folded away; so is anything the
    parser had to guess about (an unbalanced quote or bracket, a ``;`` separator, text
    after an address) and groups (``team: a@x, b@y;``: name the addresses instead).
    Obsolete but unambiguous forms (``J. Lee <j@x>``, an empty list element) pass, as
    mail clients write them. Every address is then checked as ``recipient`` does."""
    text = text.strip()
    if len(text) > MAX_ADDRESS_TEXT:
        raise ValueError(f"must be at most {MAX_ADDRESS_TEXT} characters")
    validation.refuse_line_breaks(text)
    if _comment_depth(text) > MAX_COMMENT_DEPTH:
        raise ValueError(f"must not nest comments more than {MAX_COMMENT_DEPTH} deep")
    try:
        header = _HEADER_FACTORY("To", text)
    except (ValueError, IndexError, TypeError, RecursionError):
        # The parser itself refuses, e.g., an encoded word that decodes to CR or LF.
        raise ValueError("must be an email address (local@domain or Name <local@domain>) "
                         "or a comma-separated list of them") from None
    if any(not isinstance(d, errors.ObsoleteHeaderDefect) for d in header.defects):
        raise ValueError("must be an email address (local@domain or Name <local@domain>) "
                         "or a comma-separated list of them")
    out = []
    for group in header.groups:
        if group.display_name is not None:
            raise ValueError("groups (name: address, ...;) are not accepted; list the "
                             "addresses")
        for addr in group.addresses:
            name = addr.display_name or ""
            try:
                validation.refuse_line_breaks(name)
            except ValueError as exc:
                raise ValueError(f"display name {exc}") from None
            out.append((name, recipient(addr.addr_spec)))
    if not out:
        raise ValueError("must name at least one address")
    return out


class AddressErrors(ValueError):
    """What is wrong with a to/cc/bcc value: (list index or None for the whole value,
    message) pairs, so that each error can name its item (``to[3]: ...``)."""

    def __init__(self, problems: list[tuple[int | None, str]]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


@dataclass(frozen=True)
class Recipients:
    """The canonical addresses of a to/cc/bcc value, and the display names given."""

    addresses: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()


def recipients(value: object) -> Recipients:
    """A to/cc/bcc value: a string is an address list (one or several addresses); a
    list holds one address per item. ``AddressErrors`` names each bad item."""
    if isinstance(value, str):
        try:
            found = parse_addresses(value)
        except ValueError as exc:
            raise AddressErrors([(None, str(exc))]) from None
    elif isinstance(value, list) and all(isinstance(i, str) for i in value):
        if len(value) > MAX_RECIPIENTS:
            # Refused whatever the items are: do not parse thousands of them.
            raise AddressErrors([(None, f"at most {MAX_RECIPIENTS} recipients in to, cc "
                                        "and bcc together")])
        if sum(len(i) for i in value) > MAX_ADDRESS_TEXT:
            raise AddressErrors([(None, f"must be at most {MAX_ADDRESS_TEXT} characters "
                                        "in all")])
        found = []
        problems: list[tuple[int | None, str]] = []
        for i, item in enumerate(value):
            try:
                one = parse_addresses(item)
            except ValueError as exc:
                problems.append((i, str(exc)))
                continue
            if len(one) != 1:
                problems.append((i, "must be one address (one list item per address)"))
                continue
            found += one
        if problems:
            raise AddressErrors(problems)
    else:
        raise AddressErrors([(None, "must be an email address, an address list or a list "
                                    "of addresses")])
    names: dict[str, str] = {}
    for display, addr in found:
        if display:
            names.setdefault(addr, display)
    return Recipients(tuple(a for _, a in found), tuple(sorted(names.items())))


def message_ids(value: object) -> tuple[str, ...]:
    """Message-IDs (``<id@host>``, the brackets optional) from a space-separated string
    or a list of them."""
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list) and all(isinstance(i, str) for i in value):
        items = list(value)
    else:
        raise ValueError("must be a Message-ID like <id@host> or a list of them")
    out = []
    for n, item in enumerate(items):
        v = item.strip()
        if v and not v.startswith("<"):
            v = f"<{v}>"
        # The value is not echoed: error details never repeat what the client sent.
        if not _MSGID.fullmatch(v) or len(v) > 500:
            raise ValueError(f"item {n + 1} is not a Message-ID like <id@host>")
        out.append(v)
    return tuple(out)


def one_line(value: str) -> str:
    """*value* if it fits on one header line (no line break, no control character)."""
    validation.refuse_line_breaks(value)
    return value


def attachment_filename(name: str) -> str:
    if not 1 <= len(name) <= 255 or any(c in name for c in "/\\") or _breaks_line(name):
        raise ValueError("must be 1-255 characters without / \\, control characters or "
                         "line breaks")
    return name


def attachment_type(ctype: str) -> str:
    if not _CTYPE.fullmatch(ctype.lower()):
        raise ValueError("must be a MIME type like application/pdf")
    return ctype.lower()


def attachment_data(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None


def _breaks_line(value: str) -> bool:
    try:
        validation.refuse_line_breaks(value)
    except ValueError:
        return True
    return False


class _TextExtractor(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
             "table", "ul", "ol", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head"):
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """A readable plain-text rendering of an HTML body (the text/plain alternative)."""
    p = _TextExtractor()
    p.feed(markup)
    p.close()
    lines = [re.sub(r"[ \t\r\f\v]+", " ", ln).strip() for ln in "".join(p.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def compose(req: SendRequest, sender: str, display_name: str, signature: str,
            domain: str, now: Any = None) -> EmailMessage:
    """The message to submit: From with the display name, a Message-ID in the sender's
    domain, threading headers, a text part (derived from HTML when only HTML is given),
    the signature, and the attachments. Bcc recipients are never written as a header."""
    from datetime import UTC, datetime

    msg = EmailMessage(policy=policy.SMTP)
    local, _, dom = sender.partition("@")
    msg["From"] = Address(display_name or "", local, dom) if display_name else sender
    if req.to:
        msg["To"] = req.header_addresses(req.to)
    if req.cc:
        msg["Cc"] = req.header_addresses(req.cc)
    msg["Subject"] = req.subject
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    # 128 random bits: a Message-ID is the evidence a bounce or complaint must name to
    # count against the domain, so nobody who has not received the message can know it.
    msg["Message-ID"] = f"<{secrets.token_urlsafe(16)}@{domain}>"
    if req.in_reply_to:
        msg["In-Reply-To"] = req.in_reply_to
    refs = list(req.references)
    if req.in_reply_to and req.in_reply_to not in refs:
        refs.append(req.in_reply_to)
    if refs:
        msg["References"] = " ".join(refs)
    msg["MIME-Version"] = "1.0"
    if req.is_html:
        html_body = req.body
        if signature:
            html_body += "<br>\n<br>\n-- <br>\n" + html.escape(signature).replace("\n", "<br>\n")
        text = req.text if req.text is not None else html_to_text(req.body)
        if signature:
            text = text.rstrip("\n") + "\n\n-- \n" + signature + "\n"
        msg.set_content(text)
        msg.add_alternative(html_body, subtype="html")
    else:
        text = req.body
        if signature:
            text = text.rstrip("\n") + "\n\n-- \n" + signature
        msg.set_content(text if text.endswith("\n") else text + "\n")
    for att in req.attachments:
        maintype, _, subtype = att.content_type.partition("/")
        msg.add_attachment(att.data, maintype=maintype, subtype=subtype,
                           filename=att.filename)
    return msg


# ----------------------------------------------------------------------- reading


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def _content(part: Message | None) -> str | None:
    if part is None:
        return None
    try:
        value = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        value = payload.decode("latin-1") if isinstance(payload, bytes) else None
    return value if isinstance(value, str) else None


def bodies(msg: EmailMessage) -> tuple[str | None, str | None]:
    """(text, html) of a message, decoded from any charset and transfer encoding."""
    text = _content(msg.get_body(preferencelist=("plain",)))
    markup = _content(msg.get_body(preferencelist=("html",)))
    # Stored messages have CRLF line ends; API clients get plain newlines.
    return (None if text is None else text.replace("\r\n", "\n"),
            None if markup is None else markup.replace("\r\n", "\n"))


def attachments(msg: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(filename, content type, decoded bytes) of every attachment, in order."""
    out = []
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            data = part.as_bytes()
        out.append((part.get_filename() or "attachment", part.get_content_type(), data))
    return out


def address_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [addr for _name, addr in getaddresses([value]) if addr]


def header_text(value: Any) -> str | None:
    return None if value is None else str(value)


def classify_report(msg: Message) -> str | None:
    """'bounce' for a delivery status notification, 'complaint' for an ARF feedback
    report, None for anything else (RFC 3464 / RFC 5965: multipart/report)."""
    if msg.get_content_type() != "multipart/report":
        return None
    report_type = (msg.get_param("report-type") or "")
    if not isinstance(report_type, str):
        return None
    if report_type.lower() == "delivery-status":
        for part in msg.walk():
            if part.get_content_type() in ("message/delivery-status",
                                           "message/global-delivery-status"):
                text = part.as_string().lower()
                # Only failures count: delays ("action: delayed") are no bounce.
                if "action: failed" in text or "action:failed" in text:
                    return "bounce"
        return None
    if report_type.lower() == "feedback-report":
        return "complaint"
    return None
