"""Recipients of ``POST /v1/email-users/{id}/inbox/send`` as RFC 5322 address lists
(issue 10, item 6): the Winnr reply loop sends ``to: msg["from"]``, which the inbox gives
as ``"Jordan Lee <jordan@company.test>"``. Name-addr forms and lists are accepted;
header injection, groups, guessed-at syntax and too many recipients are refused, every
error naming its field."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailforge.config import Config
from mailforge.errors import ValidationFailed
from mailforge.mail import compose
from mailforge.schema.base import validate
from mailforge.schema.mail import SendMessage


def parse_send(data: dict[str, Any]) -> tuple[compose.SendRequest | None, list[str]]:
    """A send request body as the API validates it (``schema.mail.SendMessage``): the
    request, or the error details."""
    try:
        return validate(SendMessage, data, Config()).to_request(), []
    except ValidationFailed as exc:
        return None, exc.details


def _send(**fields: object) -> tuple[compose.SendRequest | None, list[str]]:
    return parse_send({"subject": "s", "body": "b", **fields})


def test_the_winnr_reply_loop_sends_to_the_inbox_from() -> None:
    # The inbox answer's ``from`` for a reply, as the seed's loop passes it on.
    raw = (b"From: Jordan Lee <jordan@company.test>\r\nTo: me@my.test\r\n"
           b"Subject: Re: Q2\r\nMessage-ID: <reply-xyz@company.test>\r\n\r\nSure.\r\n")
    msg_from = compose.header_text(compose.parse(raw).get("From"))
    assert msg_from == "Jordan Lee <jordan@company.test>"
    req, errs = _send(to=msg_from, in_reply_to="<reply-xyz@company.test>",
                      references="<abc123@my.test> <reply-xyz@company.test>", html=True)
    assert not errs and req is not None
    assert req.to == ("jordan@company.test",) and req.recipients == ["jordan@company.test"]
    msg = compose.compose(req, "me@my.test", "Me", "", "my.test")
    assert msg["To"] == "Jordan Lee <jordan@company.test>"
    assert msg["In-Reply-To"] == "<reply-xyz@company.test>"


@pytest.mark.parametrize(("value", "addresses", "names"), [
    ("a@example.com", ["a@example.com"], {}),
    ("  Bob@Example.COM ", ["Bob@example.com"], {}),
    ("Jordan Lee <jordan@company.test>", ["jordan@company.test"],
     {"jordan@company.test": "Jordan Lee"}),
    # A quoted comma is part of the name, not a list separator.
    ('"Lee, Jordan" <j@x.test>, k@y.test', ["j@x.test", "k@y.test"],
     {"j@x.test": "Lee, Jordan"}),
    ('"Lee, Jordan" <j@x.test>,"Doe, Jane" <jd@x.test>', ["j@x.test", "jd@x.test"],
     {"j@x.test": "Lee, Jordan", "jd@x.test": "Doe, Jane"}),
    # Encoded words are decoded (and encoded again in the header written).
    ("=?utf-8?q?J=C3=B6rg_M=C3=BCller?= <j@x.test>", ["j@x.test"],
     {"j@x.test": "J\u00f6rg M\u00fcller"}),
    ("=?iso-8859-1?q?Lee=2C_J=F6rg?= <j@x.test>", ["j@x.test"], {"j@x.test": "Lee, J\u00f6rg"}),
    # Obsolete but unambiguous, as mail clients write them.
    ("J. Lee <j@x.test>", ["j@x.test"], {"j@x.test": "J. Lee"}),
    ("a@x.test,", ["a@x.test"], {}),
    ("j@x.test (Jordan Lee)", ["j@x.test"], {}),
    # An IDN domain becomes its ASCII form.
    ("Jos\u00e9 <j@b\u00fccher.test>", ["j@xn--bcher-kva.test"],
     {"j@xn--bcher-kva.test": "Jos\u00e9"}),
    ("a@x.test, b@y.test , c@z.test", ["a@x.test", "b@y.test", "c@z.test"], {}),
])
def test_address_lists_accepted(value: str, addresses: list[str],
                                names: dict[str, str]) -> None:
    req, errs = _send(to=value)
    assert not errs and req is not None, errs
    assert list(req.to) == addresses
    assert dict(req.names) == names


def test_list_items_may_be_name_addr_and_cc_bcc_too() -> None:
    req, errs = _send(to=["Jordan Lee <jordan@company.test>", "b@x.test"],
                      cc="Carol <c@x.test>, d@x.test", bcc=["Hidden One <h@x.test>"])
    assert not errs and req is not None, errs
    assert req.recipients == ["jordan@company.test", "b@x.test", "c@x.test", "d@x.test",
                              "h@x.test"]
    msg = compose.compose(req, "me@my.test", "", "", "my.test")
    assert msg["To"] == "Jordan Lee <jordan@company.test>, b@x.test"
    assert msg["Cc"] == "Carol <c@x.test>, d@x.test"
    # Bcc never becomes a header, nor its display name.
    assert "Hidden" not in msg.as_string() and "h@x.test" not in msg.as_string()


@pytest.mark.parametrize(("value", "field", "why"), [
    # Header injection, raw and through every way to smuggle a line break in.
    ("a@b.test\r\nBcc: evil@x.test", "to:", "control characters"),
    ("a@b.test\nBcc: evil@x.test", "to:", "control characters"),
    ("Name\r\n <a@b.test>", "to:", "control characters"),
    ("a@b.test\u2028Bcc: evil@x.test", "to:", "line separators"),
    ("a@b.test\x00", "to:", "NUL"),
    ("=?utf-8?q?Evil=0D=0ABcc:_x@evil.test?= <a@b.test>", "to:", "email address"),
    ("=?utf-8?q?Evil=0ABcc:_x@evil.test?= <a@b.test>", "to:", "email address"),
    ("=?utf-8?b?RXZpbA0KQmNjOiB4QGV2aWwudGVzdA==?= <a@b.test>", "to:", "email address"),
    ("=?utf-8?q?Evil=E2=80=A8x?= <a@b.test>", "to:", "display name"),
    ("=?utf-8?q?Evil=00x?= <a@b.test>", "to:", ""),
    ('"Evil\\\r\nBcc: x@evil.test" <a@b.test>', "to:", "control characters"),
    # Groups: name the addresses instead.
    ("Team: a@x.test, b@y.test;", "to:", "groups"),
    ("undisclosed-recipients:;", "to:", "groups"),
    # Syntax the parser would have to guess about.
    ("a@b.test; c@d.test", "to:", "email address"),
    ("<a@b.test> junk", "to:", "email address"),
    ("Jordan Lee <jordan@company.test", "to:", "email address"),
    ('"unterminated <a@b.test>', "to:", "email address"),
    ("@route,@x:a@b.test", "to:", "email address"),
    ("<>", "to:", "email address"),
    ("not an address", "to:", "email address"),
    ("", "to:", "at least one"),
    ("   ", "to:", "at least one"),
    # Quoted local parts and encoded words in the address are no plain address.
    ('"a@b"@c.test', "to:", "local@domain"),
    ('"a b"@c.test', "to:", "local@domain"),
    ("<=?utf-8?q?a?=@b.test>", "to:", "local@domain"),
    ("a@-bad-.test", "to:", ""),
    ("(" * 9 + "a" + ")" * 9 + " a@b.test", "to:", "nest comments"),
    ("(" * 5000 + "a@b.test", "to:", "nest comments"),
])
def test_hostile_address_lists_refused(value: str, field: str, why: str) -> None:
    req, errs = _send(to=value)
    assert req is None
    assert errs and all(e.startswith(field) for e in errs), errs
    assert why in " ".join(errs), errs


def test_errors_name_the_list_item_and_the_field() -> None:
    req, errs = _send(to=["ok@x.test", "Name <bad>", "a@x.test, b@x.test"],
                      cc="Team: c@x.test;", bcc=["x@x.test\nBcc: y@y.test"])
    assert req is None
    text = "\n".join(errs)
    for prefix in ("to[1]:", "to[2]: must be one address", "cc: groups", "bcc[0]:"):
        assert prefix in text, (prefix, errs)
    assert not any(e.startswith("to[0]") for e in errs)
    _, errs = _send(to=5)
    assert errs == ["to: must be an email address, an address list or a list of addresses"]
    _, errs = _send(to=["a@x.test", 5])
    assert errs == ["to: must be an email address, an address list or a list of addresses"]


def test_more_recipients_than_allowed() -> None:
    many = [f"u{i}@x.test" for i in range(compose.MAX_RECIPIENTS + 1)]
    # In one list, in one address-list string, and spread over to, cc and bcc.
    for fields in ({"to": many}, {"to": ", ".join(many)},
                   {"to": many[:40], "cc": ", ".join(many[40:80]), "bcc": many[80:]}):
        req, errs = _send(**fields)
        assert req is None and any("at most 100 recipients" in e for e in errs), errs
    req, errs = _send(to=many[:compose.MAX_RECIPIENTS])
    assert not errs and req is not None and len(req.recipients) == compose.MAX_RECIPIENTS
    # A huge list is refused without parsing every item (each would be an error).
    _, errs = _send(to=["bad"] * 100_000)
    assert errs == ["to: at most 100 recipients in to, cc and bcc together"]


def test_address_text_is_bounded() -> None:
    long_name = "N" * compose.MAX_ADDRESS_TEXT
    _, errs = _send(to=f"{long_name} <a@x.test>")
    assert errs == [f"to: must be at most {compose.MAX_ADDRESS_TEXT} characters"]
    _, errs = _send(to=[f"{'N' * 7000} <a@x.test>", f"{'M' * 7000} <b@x.test>"])
    assert errs == [f"to: must be at most {compose.MAX_ADDRESS_TEXT} characters in all"]


_NAME_CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
                            blacklist_characters="\x85\x0b\x0c\x1c\x1d\x1e\x1f")
_LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}[a-z0-9]", fullmatch=True).filter(
    lambda s: ".." not in s)


@settings(max_examples=300, deadline=None)
@given(name=st.text(_NAME_CHARS, max_size=40), local=_LOCAL)
def test_the_inbox_from_round_trips(name: str, local: str) -> None:
    """Whatever display name a message came with, the ``from`` the inbox shows for it
    is accepted as ``to`` and names the same address."""
    sent = compose.compose(compose.SendRequest(to=("me@my.test",)), f"{local}@x.test",
                           name.strip(), "", "x.test")
    shown = compose.header_text(compose.parse(sent.as_bytes()).get("From"))
    assert shown is not None
    req, errs = _send(to=shown)
    assert not errs and req is not None, (shown, errs)
    assert req.to == (f"{local}@x.test",)
    # The header written for it names that address only and adds no other header,
    # whatever the name was.
    out = compose.parse(compose.compose(req, "me@my.test", "", "", "my.test").as_bytes())
    assert compose.address_list(compose.header_text(out["To"])) == [f"{local}@x.test"]
    assert sorted(out.keys()) == sorted(["From", "To", "Subject", "Date", "Message-ID",
                                         "MIME-Version", "Content-Type",
                                         "Content-Transfer-Encoding"])
