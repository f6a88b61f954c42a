"""Pure planning: desired records vs a zone's current records and the set mailforge
owns -> creates, deletes, rrset changes, conflicts, and whether it is safe to apply.

Ownership rule: mailforge deletes or changes only records it recorded as its own.
A record the operator already has with the value mailforge wants is left alone and
not claimed (so deleting the domain does not remove it). An SPF or DMARC record that
is not ours is a conflict: reported, not overwritten, unless the operator allows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .records import Record, is_dmarc, is_spf

Key = tuple[str, str, str]


@dataclass(frozen=True)
class RRsetChange:
    """The full new content of one (name, type) rrset: what providers that replace
    whole rrsets (PowerDNS, RFC 2136 delete+add) apply."""

    name: str
    rtype: str
    ttl: int
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    creates: tuple[Record, ...] = ()
    deletes: tuple[Record, ...] = ()
    conflicts: tuple[str, ...] = ()
    # The owned set once the plan is applied.
    owned_after: frozenset[Key] = frozenset()
    refused: str | None = None
    rrsets: tuple[RRsetChange, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not self.creates and not self.deletes

    def lines(self) -> list[str]:
        """Human-readable plan, one change per line."""
        out = [f"+ {r.name} {r.ttl} {r.rtype} {r.content}" for r in self.creates]
        out += [f"- {r.name} {r.rtype} {r.content}" for r in self.deletes]
        out += [f"! conflict: {c}" for c in self.conflicts]
        if self.refused:
            out.append(f"! refused: {self.refused}")
        return out


def plan(desired: Sequence[Record], current: Sequence[Record], owned: Iterable[Key],
         *, overwrite: bool = False, force: bool = False, max_change_ratio: float = 0.5,
         deleting: bool = False, min_records: int = 10) -> Plan:
    owned_set = set(owned)
    cur_keys = {r.key for r in current}
    want: list[Record] = [] if deleting else list(desired)
    conflicts: list[str] = []
    extra_deletes: list[Record] = []

    # SPF / DMARC: a record of that kind at the same name that is not ours conflicts.
    for kind, test in (("SPF", is_spf), ("DMARC", is_dmarc)):
        for w in [w for w in want if test(w)]:
            foreign = [c for c in current if c.name == w.name and test(c)
                       and c.key not in owned_set and c.key != w.key]
            if not foreign:
                continue
            if overwrite:
                extra_deletes += foreign
            else:
                want.remove(w)
                conflicts.append(f"{w.name} already has a {kind} record mailforge did not "
                                 f"create ({foreign[0].content}); not overwritten")
    # CNAME excludes every other type at its name.
    for w in [w for w in want if w.rtype == "CNAME"]:
        others = [c for c in current if c.name == w.name and c.key != w.key
                  and c.key not in owned_set]
        if others:
            want.remove(w)
            conflicts.append(f"{w.name} already has {others[0].rtype} records; "
                             f"CNAME not created")

    want_keys = {w.key for w in want}
    creates = [w for w in want if w.key not in cur_keys]
    deletes = [c for c in current if c.key in owned_set and c.key not in want_keys]
    deletes += [d for d in extra_deletes if d not in deletes]
    owned_after = frozenset((owned_set & want_keys & cur_keys) | {c.key for c in creates})

    refused = None
    # As octoDNS does: small zones are exempt (one change is already a large share).
    if not deleting and not force and len(current) >= min_records:
        share = len(deletes) / len(current)
        if share > max_change_ratio:
            refused = (f"plan would delete or change {len(deletes)} of {len(current)} "
                       f"records ({share:.0%} > {max_change_ratio:.0%}); needs force")

    rrsets: list[RRsetChange] = []
    keys = {(r.name, r.rtype) for r in (*creates, *deletes)}
    ttl_of = {(w.name, w.rtype): w.ttl for w in want}
    for name, rtype in sorted(keys):
        before = tuple(sorted(c.content for c in current if (c.name, c.rtype) == (name, rtype)))
        gone = {d.content for d in deletes if (d.name, d.rtype) == (name, rtype)}
        new = [c.content for c in creates if (c.name, c.rtype) == (name, rtype)]
        after = tuple(sorted({*(b for b in before if b not in gone), *new}))
        ttl = ttl_of.get((name, rtype)) or next(
            (c.ttl for c in current if (c.name, c.rtype) == (name, rtype)), 300)
        rrsets.append(RRsetChange(name, rtype, ttl, before, after))
    return Plan(tuple(creates), tuple(deletes), tuple(conflicts), owned_after, refused,
                tuple(rrsets))
