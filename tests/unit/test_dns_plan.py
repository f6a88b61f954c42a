"""Pure DNS planning and record computation: no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from mailforge.config import Config, DnsConfig
from mailforge.dkim import keys as dk
from mailforge.dkim.signer import SigningKey, render_tables
from mailforge.dns.plan import plan
from mailforge.dns.records import (
    DkimKeyInfo,
    canonical,
    desired_records,
    record,
    txt_content,
    txt_text,
)

CFG = Config(dns=DnsConfig(mx_hostname="mail.example.net", mx_ipv4=("192.0.2.1",)))
RSA = dk.generate("rsa", "s1")
ED = dk.generate("ed25519", "s2")
KEYS = [DkimKeyInfo("s1", "rsa", RSA.public_key, "active"),
        DkimKeyInfo("s2", "ed25519", ED.public_key, "pending")]


def want(domain: str = "example.com") -> list:
    return [e.record for e in desired_records(domain, KEYS, CFG)]


def test_records_cover_mail_and_are_labelled() -> None:
    exp = {e.purpose: e for e in desired_records("example.com", KEYS, CFG)}
    assert exp["mx"].record.content == "10 mail.example.net."
    assert exp["mx"].required and exp["spf"].required and exp["dmarc"].required
    assert exp["dkim:s1"].required and exp["dkim:s2"].required
    assert not exp["tls-rpt"].required and not exp["srv-imap"].required
    assert txt_text(exp["spf"].record.content) == "v=spf1 mx ~all"
    assert exp["dkim:s1"].record.name == "s1._domainkey.example.com."
    # MX host outside the zone: no A record published for it.
    assert "mx-address" not in exp


def test_long_dkim_txt_is_split_in_255_byte_strings_and_round_trips() -> None:
    value = f"v=DKIM1; k=rsa; p={RSA.public_key}"
    content = txt_content(value)
    parts = content.split('" "')
    assert len(parts) == 2 and all(len(p.strip('"')) <= 255 for p in parts)
    assert txt_text(content) == value
    # Another provider's different split is the same record once canonical.
    other = '"' + '" "'.join((value[:100], value[100:300], value[300:])) + '"'
    assert canonical("TXT", other) == content


def test_revoked_key_publishes_empty_p_and_is_not_required() -> None:
    k = DkimKeyInfo("old", "rsa", RSA.public_key, "revoked")
    (e,) = [e for e in desired_records("example.com", [k], CFG) if e.purpose == "dkim:old"]
    assert txt_text(e.record.content) == "v=DKIM1; k=rsa; p=" and not e.required


def test_plan_on_empty_zone_creates_everything_and_claims_it() -> None:
    p = plan(want(), [], set())
    assert len(p.creates) == len(want()) and not p.deletes and not p.conflicts
    assert p.owned_after == {r.key for r in want()}


def test_plan_is_idempotent() -> None:
    p = plan(want(), want(), {r.key for r in want()})
    assert p.empty and p.rrsets == ()


def test_foreign_records_are_never_touched_and_not_claimed() -> None:
    foreign = [record("www.example.com", "A", "192.0.2.7"),
               record("example.com", "TXT", '"site-verification=1"')]
    mx_already = record("example.com", "MX", "10 mail.example.net.")
    p = plan(want(), [*foreign, mx_already], set())
    assert not p.deletes
    assert mx_already.key not in p.owned_after  # the operator's, though identical
    assert mx_already.key not in {r.key for r in p.creates}
    apex_txt = [c for c in p.rrsets if c.name == "example.com." and c.rtype == "TXT"]
    assert '"site-verification=1"' in apex_txt[0].after  # kept in the replaced rrset


def test_foreign_spf_and_dmarc_are_conflicts_unless_overwrite() -> None:
    spf = record("example.com", "TXT", '"v=spf1 include:other.example -all"')
    dmarc = record("_dmarc.example.com", "TXT", '"v=DMARC1; p=reject"')
    p = plan(want(), [spf, dmarc], set())
    assert len(p.conflicts) == 2 and not p.deletes
    assert not any(txt_text(r.content).startswith(("v=spf1", "v=DMARC1")) for r in p.creates)
    p2 = plan(want(), [spf, dmarc], set(), overwrite=True)
    assert not p2.conflicts and {d.key for d in p2.deletes} == {spf.key, dmarc.key}


def test_only_owned_records_are_deleted() -> None:
    stale = record("old._domainkey.example.com", "TXT", '"v=DKIM1; k=rsa; p="')
    theirs = record("other._domainkey.example.com", "TXT", '"v=DKIM1; p=abc"')
    p = plan(want(), [*want(), stale, theirs], {*(r.key for r in want()), stale.key})
    assert [d.key for d in p.deletes] == [stale.key]


def test_large_change_is_refused_without_force() -> None:
    ours = [record(f"h{n}.example.com", "A", "192.0.2.1") for n in range(12)]
    owned = {r.key for r in ours}
    p = plan(want(), ours, owned)  # would delete 12 of 12 records
    assert p.refused and "force" in p.refused
    assert plan(want(), ours, owned, force=True).refused is None
    # Deleting the domain is the explicit request to remove what we own.
    assert plan([], ours, owned, deleting=True).refused is None
    # Small zones are exempt.
    assert plan(want(), ours[:3], {r.key for r in ours[:3]}).refused is None


def test_delete_plan_removes_only_owned() -> None:
    foreign = record("www.example.com", "A", "192.0.2.7")
    p = plan([], [*want(), foreign], {r.key for r in want()}, deleting=True)
    assert {d.key for d in p.deletes} == {r.key for r in want()}
    assert p.owned_after == frozenset()


def _view(alg: str, sel: str, state: str, age_days: float, changed_days: float = 0
          ) -> dk.KeyView:
    now = datetime.now(UTC)
    return dk.KeyView(sel, alg, sel, state, now - timedelta(days=age_days),
                      now - timedelta(days=changed_days))


def test_lifecycle_rules() -> None:
    now = datetime.now(UTC)
    rot, ret, rev = timedelta(days=90), timedelta(days=7), timedelta(days=7)
    assert dk.needs_new_key([], "rsa", now, rot)
    young = [_view("rsa", "a", "active", 10)]
    assert not dk.needs_new_key(young, "rsa", now, rot)
    old = [_view("rsa", "a", "active", 91)]
    assert dk.needs_new_key(old, "rsa", now, rot)
    assert not dk.needs_new_key([*old, _view("rsa", "b", "pending", 0)], "rsa", now, rot)
    # A pending key is published only once its record verified; it becomes active
    # (and the old one retires) once the signer loaded it.
    keys = [*old, _view("rsa", "b", "pending", 0)]
    assert dk.promotions(keys, set()) == []
    assert [(m.key_id, m.to) for m in dk.promotions(keys, {"b"})] == [("b", "published")]
    assert dk.activations(keys) == []
    published = [*old, _view("rsa", "b", "published", 0)]
    assert dk.activations(published) == []  # no Ed25519 key yet: not in the signer
    published.append(_view("ed25519", "e", "published", 0))
    moves = {(m.key_id, m.to) for m in dk.activations(published)}
    assert moves == {("b", "active"), ("a", "retiring"), ("e", "active")}
    due = dk.due_transitions([_view("rsa", "a", "retiring", 30, 8),
                              _view("rsa", "c", "revoked", 40, 8),
                              _view("rsa", "d", "retiring", 30, 1)], now, ret, rev)
    assert {(m.key_id, m.to) for m in due} == {("a", "revoked"), ("c", "deleted")}
    assert dk.next_due([_view("rsa", "d", "retiring", 30, 1)], rot, ret, rev) is not None


def test_signer_tables_list_a_domain_only_with_both_algorithms() -> None:
    files = render_tables([SigningKey("a.test", "rsa", "s1", b"PEM"),
                           SigningKey("a.test", "ed25519", "s2", b"SEED"),
                           SigningKey("b.test", "rsa", "s3", b"PEM")], "/d")
    assert "*@a.test mf-a.test" in files["SigningTable"].decode()
    assert "b.test" not in files["SigningTable"].decode()
    assert "mf-a.test a.test:s1:/d/keys/a.test.s1.key" in files["KeyTable"].decode()
    assert "mf-a.test a.test:s2:/d/keys/a.test.s2.key" in files["KeyTableEd25519"].decode()
    # Never empty: dkimpy-milter cannot parse an empty table.
    assert files["KeyTable"].strip() and files["SigningTable"].strip()


def test_selectors_are_dated_and_unique() -> None:
    now = datetime(2026, 11, 21, tzinfo=UTC)
    s1 = dk.selector_for("rsa", now, set())
    s2 = dk.selector_for("rsa", now, {s1})
    assert s1 == "mf20261121a-rsa" and s2 == "mf20261121b-rsa"


def test_ed25519_public_key_is_raw_32_bytes() -> None:
    import base64

    assert len(base64.b64decode(ED.public_key)) == 32
    assert len(base64.b64decode(ED.private_key)) == 32
    assert dataclasses.is_dataclass(ED)
