"""Validation of names that end up in mail server maps and file paths.

Pure functions, no I/O. Everything that reaches a Postfix map, a Dovecot passwd
file or a path passes through here first: a newline in a local part would inject a
map line, a ``/`` or ``..`` would escape the Maildir root, a CR LF in a display
name would inject a header. Each function returns the normalised value or raises
``ValueError`` with a sentence that the API prefixes with the field name.
"""

from __future__ import annotations

import re
import unicodedata

import idna

# Every pattern here is applied with ``fullmatch``: ``re``'s ``$`` also matches before a
# final newline, so ``match(r"^...$")`` would let ``"alice\n"`` through.
# Local parts mailforge creates: conservative on purpose (no quoting, no '+', which
# Postfix uses as the recipient delimiter, no leading/trailing/double dots).
_LOCAL_RE = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A contact address (reseller sub-account ``email``): an RFC 5322 dot-atom local part,
# unquoted, and a real host name (no IP literal, no brackets).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_CONTACT_LOCAL_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
LOCAL_PART_RULE = ("must be 1-64 characters of a-z 0-9 . _ -, starting and ending with a letter "
                   "or digit")

RESERVED_LOCAL_PARTS = frozenset({"postmaster", "abuse"})

# Unicode full stops that IDNA (UTS #46) treats as label separators. Mapped to "." first,
# so that every spelling of a name has one canonical form ("example\u3002com" is
# example.com), whatever code path sees it.
_FULL_STOPS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_LINE_SEPARATORS = frozenset("\u2028\u2029\u0085")
# Zero-width joiners are part of some scripts' spelling (IDNA CONTEXTJ decides on them);
# every other invisible formatting character (bidi overrides, soft hyphen, zero-width
# space...) is refused rather than silently dropped by the IDNA mapping.
_JOINERS = frozenset("\u200c\u200d")


def refuse_unsafe_chars(value: str) -> None:
    """Raise ValueError naming the rule if *value* holds a character that must never
    reach a map, a path or a log line: NUL, surrogates, line separators, control
    characters, whitespace, invisible formatting characters."""
    refuse_line_breaks(value)
    for c in value:
        cat = unicodedata.category(c)
        if c.isspace() or cat == "Zs":
            raise ValueError("must not contain whitespace")
        if cat == "Cf" and c not in _JOINERS:
            raise ValueError("must not contain invisible formatting characters")


def local_part(value: object) -> str:
    """The canonical (lowercase ASCII) form of a local part mailforge creates."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    refuse_unsafe_chars(value)
    # ASCII before lowercasing: str.lower() maps e.g. the Kelvin sign to "k", which
    # would make two spellings of one mailbox.
    if not value.isascii():
        raise ValueError(LOCAL_PART_RULE)
    v = value.lower()
    if not _LOCAL_RE.fullmatch(v) or ".." in v:
        raise ValueError(LOCAL_PART_RULE)
    return v


def domain_name(value: object) -> str:
    """The canonical form of a host name: ASCII (A-labels), lowercase, no trailing dot.

    The one function every path uses (connect, setup, lookups by name, list filters,
    alias domains and targets, token restrictions, contact addresses), so that case, a
    trailing dot, IDNA spellings and Unicode full stops all name the same domain.
    """
    if not isinstance(value, str):
        raise ValueError("must be a string")
    refuse_unsafe_chars(value)
    v = value.translate(_FULL_STOPS)
    if v.endswith("."):
        v = v[:-1]  # the root label; one only
    if not v or len(v) > 253:
        raise ValueError("must be a host name of at most 253 characters")
    if any(c in "/\\@:[]\"'%_" for c in v):
        raise ValueError("is not a valid host name")
    if v.isascii():
        ascii_name = v.lower()
    else:
        try:
            ascii_name = idna.encode(v, uts46=True).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"is not a valid host name ({exc})") from None
    if len(ascii_name) > 253:
        raise ValueError("must be a host name of at most 253 characters")
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValueError("must have at least two labels (e.g. example.com)")
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise ValueError("is not a valid host name")
    if labels[-1].isdigit():
        raise ValueError("must not be an IP address")
    if any(label.startswith("xn--") for label in labels):
        # An A-label must be valid punycode of a valid U-label, or two spellings (or
        # none) would decode to it.
        try:
            if idna.encode(idna.decode(ascii_name)).decode("ascii") != ascii_name:
                raise ValueError("is not a valid host name (A-label not canonical)")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"is not a valid host name ({exc})") from None
    return ascii_name


def unicode_domain(ascii_name: str) -> str:
    try:
        return str(idna.decode(ascii_name))
    except idna.IDNAError:
        return ascii_name


def refuse_line_breaks(value: str) -> None:
    """Raise ValueError naming the rule if *value*, text for one header line (a display
    name, a subject, a file name), holds what would break or refuse the header: NUL,
    surrogates, control characters, or any Unicode line break (U+2028, U+2029, U+0085,
    vertical tab, form feed and the file/group/record separators included, which
    ``str.splitlines`` and the email package treat as line ends)."""
    for c in value:
        cat = unicodedata.category(c)
        if c == "\0":
            raise ValueError("must not contain NUL")
        if cat == "Cs":
            raise ValueError("must not contain surrogates (lone \\ud800-\\udfff)")
        if c in _LINE_SEPARATORS or cat in ("Zl", "Zp"):
            raise ValueError("must not contain line separators (U+2028, U+2029, U+0085)")
        if cat == "Cc":
            raise ValueError("must not contain control characters (CR, LF, tab...)")


def display_name(value: object, max_len: int = 128) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    refuse_line_breaks(value)
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


def contact_address(value: object) -> str:
    """A person's address (e.g. a sub-account's contact ``email``), canonical: the
    local part as given (an unquoted dot-atom), the domain in canonical form. No quoted
    local parts, no IP literals, no control characters."""
    if not isinstance(value, str) or value.count("@") != 1 or len(value) > 254:
        raise ValueError("must be an address of the form local@domain, at most 254 "
                         "characters")
    refuse_unsafe_chars(value)
    local, domain = value.split("@")
    if not 1 <= len(local) <= 64 or not _CONTACT_LOCAL_RE.fullmatch(local):
        raise ValueError("must have a local part of 1-64 unquoted characters "
                         "(letters, digits, . and !#$%&'*+/=?^_`{|}~-)")
    try:
        host = domain_name(domain)
    except ValueError as exc:
        raise ValueError(f"must have a host name after @ ({exc})") from None
    out = f"{local}@{host}"
    if len(out) > 254:
        raise ValueError("must be at most 254 characters")
    return out
