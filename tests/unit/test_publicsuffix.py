"""Public suffixes (issue 9): connecting one would claim every name under it."""

from __future__ import annotations

import pytest

from mailforge import publicsuffix

RULES = publicsuffix.parse("""
// comment
com
co.uk
*.ck
!www.ck
github.io
\u516c\u53f8.cn
""")


@pytest.mark.parametrize(("name", "public"), [
    ("com", True), ("co.uk", True), ("example.co.uk", False), ("github.io", True),
    ("me.github.io", False), ("foo.ck", True), ("www.ck", False), ("a.foo.ck", False),
    ("xn--55qx5d.cn", True), ("example.com", False), ("example.test", False),
])
def test_rules(name: str, public: bool) -> None:
    assert publicsuffix.is_public_suffix(name, RULES) is public


def test_system_list_when_present() -> None:
    if not any(p.exists() for p in publicsuffix.PSL_PATHS):
        pytest.skip("no public suffix list installed")
    assert publicsuffix.is_public_suffix("co.uk")
    assert publicsuffix.is_public_suffix("github.io")
    assert not publicsuffix.is_public_suffix("example.co.uk")
    assert not publicsuffix.is_public_suffix("h1234.test")
