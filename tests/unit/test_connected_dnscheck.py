"""The DNS check of a connected mailbox's domain: the pure judgement of each answer."""

from __future__ import annotations

from mailforge.connected import dnscheck as dc


def test_mx() -> None:
    assert dc.judge_mx([])["status"] == "missing"
    assert dc.judge_mx(["."])["status"] == "mismatch"
    ok = dc.judge_mx(["MX2.Example.net.", "mx1.example.net."])
    assert ok["status"] == "ok" and ok["records"] == ["mx1.example.net", "mx2.example.net"]


def test_spf() -> None:
    assert dc.judge_spf(["google-site-verification=x"])["status"] == "missing"
    assert dc.judge_spf(["v=spf1 include:_spf.google.com ~all"])["status"] == "ok"
    assert dc.judge_spf(["V=SPF1 -all"])["status"] == "ok"
    # Two policies are a permanent error for receivers (RFC 7208 4.5).
    two = dc.judge_spf(["v=spf1 -all", "v=spf1 mx -all"])
    assert two["status"] == "mismatch" and "More than one" in two["detail"]
    assert dc.judge_spf(["v=spf1 a +all"])["status"] == "mismatch"
    assert dc.judge_spf(["v=spf1 all"])["status"] == "mismatch"
    # Not an SPF record at all: v=spf10 is another word.
    assert dc.judge_spf(["v=spf10 -all"])["status"] == "missing"


def test_dmarc() -> None:
    assert dc.judge_dmarc([])["status"] == "missing"
    ok = dc.judge_dmarc(["v=DMARC1; p=quarantine; rua=mailto:d@example.com"])
    assert ok["status"] == "ok" and ok["policy"] == "quarantine"
    assert dc.judge_dmarc(["v=DMARC1; rua=mailto:d@example.com"])["status"] == "mismatch"
    assert dc.judge_dmarc(["v=DMARC1; p=bogus"])["status"] == "mismatch"
    assert dc.judge_dmarc(["v=DMARC1; p=none", "v=DMARC1; p=reject"])["status"] == "mismatch"


def test_dkim() -> None:
    assert dc.judge_dkim("s1", [])["status"] == "missing"
    ok = dc.judge_dkim("s1", ["v=DKIM1; k=rsa; p=MIIBIjANBgkq"])
    assert ok["status"] == "ok" and ok["selector"] == "s1"
    # A key split across several strings of one record is one key.
    assert dc.judge_dkim("s1", ["v=DKIM1; k=rsa; p=MIIB", "IjANBgkq"])["status"] == "ok"
    assert dc.judge_dkim("s1", ["v=DKIM1; p="])["status"] == "mismatch"
    assert dc.judge_dkim("s1", ["v=spf1 -all"])["status"] == "mismatch"


def test_selector_names() -> None:
    assert dc.valid_selector("google") and dc.valid_selector("s1.mail-2026")
    for bad in ("", "a b", "x/y", "-a", "a..b", "é"):
        assert not dc.valid_selector(bad)
