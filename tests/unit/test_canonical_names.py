"""Issue 9: one canonical form for every name and id. Property-based (hypothesis) over
usernames, alias targets, domain names, contact addresses and ids, with control
characters, Unicode line separators, surrogates, NUL, Unicode full stops and case:
every value is refused (ValueError) or its canonical form is a fixed point, matches the
Postfix backend's safe-key rule in full, and holds no whitespace or control character.
"""

from __future__ import annotations

import os
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailforge import ids, names, validation
from mailforge.backends.postfix_dovecot import render

# The backend's own rule for a map key, applied in full (its pattern uses ^...$, which
# re.match would let end in "\n"; fullmatch does not).
SAFE_KEY = re.compile(render._SAFE_KEY.pattern)

HOSTILE = ["\n", "\r", "\r\n", "\0", "\t", " ", "\x0b", "\x0c", "\x1b", "\x7f", "\x85",
           "\u2028", "\u2029", "\ud800", "\udfff", "\u00a0", "\u200b", "\u00ad", "\u202e",
           "\ufeff", "\u3000"]
ODD = ["\u3002", "\uff0e", "\uff61", ".", "..", "-", "_", "@", "+", "/", "[", "]", ":",
       "\u212a", "\u0130", "\u00fc", "\uff21", "xn--", "XN--", "\u200d", "%", "'", '"']
PIECES = st.sampled_from(HOSTILE + ODD) | st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.-", min_size=1, max_size=12)
NAMEISH = st.lists(PIECES, min_size=1, max_size=8).map("".join) | st.text(max_size=40)
SETTINGS = settings(max_examples=int(os.environ.get("HYPOTHESIS_EXAMPLES", "1500")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def clean(value: str) -> bool:
    """No whitespace, control, separator, surrogate or format character anywhere."""
    return all(not c.isspace() and unicodedata.category(c)[0] not in ("C", "Z")
               for c in value)


@SETTINGS
@given(NAMEISH)
@example("alice\n")
@example("Alice")
@example("\u212aelly")
@example("bob\r")
@example("bob\u2028")
@example("bo\ud800b")
def test_local_parts(value: str) -> None:
    try:
        canon = validation.local_part(value)
    except ValueError:
        return
    assert validation.local_part(canon) == canon
    assert SAFE_KEY.fullmatch(canon), canon
    assert clean(canon) and canon.isascii() and canon == value.lower()


@SETTINGS
@given(NAMEISH, st.sampled_from(["", ".", "\u3002", "\n", ".\n"]))
@example("example\u3002com", "")
@example("EXAMPLE.com", ".")
@example("example.com", "\n")
@example("xn--bcher-kva.example", "")
@example("b\u00fccher.example", "\uff0e")
@example("xn--zz.com", "")
def test_domain_names(value: str, tail: str) -> None:
    try:
        canon = validation.domain_name(value + tail)
    except ValueError:
        return
    assert validation.domain_name(canon) == canon
    assert SAFE_KEY.fullmatch(canon), canon
    assert clean(canon) and len(canon) <= 253
    # The Unicode form shown to users leads back to the same name.
    assert validation.domain_name(validation.unicode_domain(canon)) == canon


@SETTINGS
@given(NAMEISH, NAMEISH)
@example("carol\n", "example.com")
@example("carol", "example.com\n")
@example("Carol", "EXAMPLE\u3002com.")
def test_alias_targets(local: str, domain: str) -> None:
    try:
        lp, dom = validation.email_address(f"{local}@{domain}")
    except ValueError:
        return
    canon = f"{lp}@{dom}"
    assert validation.email_address(canon) == (lp, dom)
    assert SAFE_KEY.fullmatch(canon), canon
    assert clean(canon)


@SETTINGS
@given(NAMEISH, NAMEISH)
@example("a", "[127.0.0.1]")
@example("a", "127.0.0.1")
@example('"a b"', "example.com")
@example("a", "example.com\n")
def test_contact_addresses(local: str, domain: str) -> None:
    try:
        canon = validation.contact_address(f"{local}@{domain}")
    except ValueError:
        return
    assert validation.contact_address(canon) == canon
    assert clean(canon) and canon.count("@") == 1
    host = canon.split("@")[1]
    assert SAFE_KEY.fullmatch(host) and not host.split(".")[-1].isdigit()


@SETTINGS
@given(st.sampled_from(["usr", "dom", "tok", "acct"]), NAMEISH)
@example("usr", "abc\n")
@example("usr", "ABC")
@example("tok", "abc\x00")
def test_ids(prefix: str, body: str) -> None:
    value = f"{prefix}_{body}"
    if ids.has_prefix(value, prefix):
        assert clean(value) and value.isascii() and value == value.lower()
        assert SAFE_KEY.fullmatch(value.replace("_", "-"))
    assert ids.has_prefix(ids.new_id(prefix), prefix)


@pytest.mark.parametrize("value", ["alice\n", "alice\r", "al\0ice", "alice\u2028",
                                   "alice\ud800", "alice\u0085"])
def test_newline_and_friends_never_make_a_second_mailbox(value: str) -> None:
    with pytest.raises(ValueError):
        validation.local_part(value)
    assert validation.local_part("BOB") == validation.local_part("bob") == "bob"


@pytest.mark.parametrize("spelling", ["example\u3002com", "EXAMPLE.COM.", "example\uff0ecom",
                                      "example\uff61com", "Example.Com\u3002",
                                      "\uff45xample.com"])
def test_every_spelling_is_one_domain(spelling: str) -> None:
    assert validation.domain_name(spelling) == "example.com"


@pytest.mark.parametrize(("value", "rule"), [
    ("example.com\n", "control"), ("exa\0mple.com", "NUL"), ("a\u2028.com", "line sep"),
    ("\ud800.com", "surrogate"), ("a b.com", "whitespace"), ("ex\u200bample.com", "invisible"),
])
def test_refusals_name_the_rule(value: str, rule: str) -> None:
    with pytest.raises(ValueError, match=rule):
        validation.domain_name(value)


def test_generated_names_are_canonical() -> None:
    made = names.generate(200, "mixed", [("zo\u00eb", "o'brien"), ("\u212aelly", "x")],
                          [], 500, set())
    assert made and all(validation.local_part(u) == u for u in made)
