"""Validation of everything that reaches a map file, a path or a header."""

from __future__ import annotations

import pytest

from mailforge import validation


@pytest.mark.parametrize("value", ["alice", "a", "first.last", "x_y-z", "A.B", "a1"])
def test_good_local_parts(value: str) -> None:
    assert validation.local_part(value) == value.lower()


@pytest.mark.parametrize("value", [
    "", "bad\nname", "with space", "../etc", "a/b", "a..b", ".lead", "trail.", "a:b",
    "a@b", "tab\tx", "x" * 65, "plus+tag", "ünï", "a\r\nRCPT TO:<x>", 5, None,
])
def test_bad_local_parts(value: object) -> None:
    with pytest.raises(ValueError):
        validation.local_part(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("Example.COM", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("a-b.c.example.", "a-b.c.example"),
])
def test_good_domains(value: str, expected: str) -> None:
    assert validation.domain_name(value) == expected


@pytest.mark.parametrize("value", [
    "localhost", "-a.example", "a_b.example", "exa mple.com", "a..b", "../x.com",
    "a/b.com", "1.2.3.4", " example.com", "example.com\n", "x" * 64 + ".com", "", 7,
    "user@example.com",
])
def test_bad_domains(value: object) -> None:
    with pytest.raises(ValueError):
        validation.domain_name(value)


def test_display_name_refuses_crlf() -> None:
    with pytest.raises(ValueError, match="control"):
        validation.display_name("Alice\r\nBcc: victim@example.com")
    assert validation.display_name("  Zoë O'Brien ") == "Zoë O'Brien"
    assert validation.display_name(None) == ""


def test_password_rules() -> None:
    with pytest.raises(ValueError):
        validation.password("short", 10)
    with pytest.raises(ValueError):
        validation.password("longenough\n", 10)
    assert validation.password("long enough pass", 10) == "long enough pass"
