"""Validation of names that end up in mail server maps and file paths.

Pure functions, no I/O. Everything that reaches a Postfix map, a Dovecot passwd
file or a path passes through here first: a newline in a local part would inject a
map line, a ``/`` or ``..`` would escape the Maildir root, a CR LF in a display
name would inject a header. Each function returns the normalised value or raises
``ValueError`` with a sentence that the API prefixes with the field name.
"""

from __future__ import annotations

import re

import idna

# Local parts mailforge creates: conservative on purpose (no quoting, no '+', which
# Postfix uses as the recipient delimiter, no leading/trailing/double dots).
_LOCAL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
_LABEL_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
LOCAL_PART_RULE = ("must be 1-64 characters of a-z 0-9 . _ -, starting and ending with a letter "
                   "or digit")

RESERVED_LOCAL_PARTS = frozenset({"postmaster", "abuse"})


def local_part(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    v = value.lower()
    if not _LOCAL_RE.match(v) or ".." in v:
        raise ValueError(LOCAL_PART_RULE)
    return v


def domain_name(value: object) -> str:
    """Return the ASCII (A-label) lowercase form of a host name, IDN accepted."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    v = value.strip().rstrip(".") if value == value.strip() else None
    if v is None:
        raise ValueError("must not contain surrounding whitespace")
    if not v or len(v) > 253:
        raise ValueError("must be a host name of at most 253 characters")
    if any(c.isspace() or c in "/\\@:" or ord(c) < 32 for c in v):
        raise ValueError("is not a valid host name")
    try:
        ascii_name = idna.encode(v, uts46=True).decode("ascii").lower()
    except idna.IDNAError as exc:
        raise ValueError(f"is not a valid host name ({exc})") from None
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValueError("must have at least two labels (e.g. example.com)")
    for label in labels:
        if not _LABEL_RE.match(label):
            raise ValueError("is not a valid host name")
    if labels[-1].isdigit():
        raise ValueError("must not be an IP address")
    return ascii_name


def unicode_domain(ascii_name: str) -> str:
    try:
        return str(idna.decode(ascii_name))
    except idna.IDNAError:
        return ascii_name


def display_name(value: object, max_len: int = 128) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters (CR, LF, tab...)")
    if len(value) > max_len:
        raise ValueError(f"must be at most {max_len} characters")
    return value.strip()


def password(value: object, min_length: int) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if len(value) < min_length:
        raise ValueError(f"must be at least {min_length} characters")
    if len(value) > 256:
        raise ValueError("must be at most 256 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("must not contain control characters")
    return value


def email_address(value: object) -> tuple[str, str]:
    """Split and validate ``local@domain``; returns (local part, ASCII domain)."""
    if not isinstance(value, str) or value.count("@") != 1:
        raise ValueError("must be an address of the form local@domain")
    local, domain = value.split("@")
    return local_part(local), domain_name(domain)
