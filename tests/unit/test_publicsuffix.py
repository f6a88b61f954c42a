"""Public suffixes (issue 9): connecting one would claim every name under it."""

from __future__ import annotations

import pytest

from mailforge import publicsuffix


@pytest.mark.parametrize(("name", "public"), [
    ("com", True), ("co.uk", True), ("example.co.uk", False), ("github.io", True),
    ("me.github.io", False), ("foo.ck", True), ("www.ck", False), ("a.foo.ck", False),
    ("xn--55qx5d.cn", True), ("example.com", False), ("example.test", False),
    ("test", True), ("h1234.test", False),
])
def test_rules(name: str, public: bool) -> None:
    assert publicsuffix.is_public_suffix(name) is public
