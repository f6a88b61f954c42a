"""Passwords, tokens and the secret box."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag

from mailforge import password, secretbox
from mailforge.store.store import split_token


def test_generated_passwords_are_long_and_distinct() -> None:
    a, b = password.generate(24), password.generate(24)
    assert len(a) == 24 and a != b and a.isalnum()


@pytest.mark.parametrize("scheme", ["sha512-crypt", "argon2id"])
def test_hash_verifies(scheme: str) -> None:
    h = password.hash_password("correct horse battery", scheme)
    assert h.startswith("{SHA512-CRYPT}$6$" if scheme == "sha512-crypt"
                        else "{ARGON2ID}$argon2id$")
    assert password.verify("correct horse battery", h)
    assert not password.verify("wrong", h)
    if scheme == "argon2id":
        assert ",p=1$" in h  # libsodium (Dovecot) accepts one lane only


def test_secretbox_binds_context() -> None:
    box = secretbox.SecretBox(b"k" * 32)
    sealed = box.seal(b"private key", "dkim:dom_1")
    assert b"private key" not in sealed
    assert box.open(sealed, "dkim:dom_1") == b"private key"
    with pytest.raises(InvalidTag):
        box.open(sealed, "dkim:dom_2")
    assert "k" * 8 not in repr(box)


def test_token_format() -> None:
    assert split_token("mf_tok_abc.secret") == ("tok_abc", "secret")
    assert split_token("Bearer x") is None
    assert split_token("mf_usr_abc.secret") is None
    assert split_token("mf_tok_abc.") is None
