"""Realistic mailbox usernames: from given people's names or a built-in list, in the
patterns people use (``first.last``, ``first``, ``f.last``, ``firstl``...), never one
that is taken, spread round-robin over several domains with a per-domain cap.

Pure (no I/O): the caller passes the taken addresses, so it is unit-tested directly.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence

from . import validation

FIRST_NAMES = (
    "james mary john patricia robert jennifer michael linda david elizabeth william "
    "barbara richard susan joseph jessica thomas sarah charles karen daniel lisa matthew "
    "nancy anthony betty mark sandra donald ashley steven emily paul kimberly andrew "
    "donna joshua michelle kenneth carol kevin amanda brian melissa george deborah "
    "timothy stephanie ronald rebecca jason laura edward sharon jeffrey cynthia ryan "
    "kathleen jacob amy gary angela nicholas anna eric brenda jonathan emma stephen "
    "olivia larry nicole justin helen scott samantha brandon katherine benjamin christine "
    "samuel rachel gregory carolyn alexander janet frank maria patrick olga raymond "
    "heather jack diane dennis julie jerry joyce tyler victoria aaron kelly henry lauren "
    "adam christina noah joan ethan evelyn liam sofia lucas chloe mateo mia leo zoe "
    "wei mei hiroshi yuki arjun priya omar fatima luca giulia"
).split()
LAST_NAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez "
    "lopez gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson "
    "white harris sanchez clark ramirez lewis robinson walker young allen king wright "
    "scott torres nguyen hill flores green adams nelson baker hall rivera campbell "
    "mitchell carter roberts gomez phillips evans turner diaz parker cruz edwards collins "
    "reyes stewart morris morales murphy cook rogers gutierrez ortiz morgan cooper "
    "peterson bailey reed kelly howard ramos kim cox ward richardson watson brooks chavez "
    "wood james bennett gray mendoza ruiz hughes price alvarez castillo sanders patel "
    "myers long ross foster jimenez chen wang zhang li liu singh kumar sato suzuki "
    "tanaka muller schmidt rossi bianchi dubois laurent novak kowalski silva santos"
).split()

Pattern = Callable[[str, str], str]

PATTERNS: dict[str, Pattern] = {
    "first.last": lambda f, la: f"{f}.{la}",
    "first": lambda f, la: f,
    "f.last": lambda f, la: f"{f[0]}.{la}",
    "firstl": lambda f, la: f"{f}{la[0]}",
    "first.l": lambda f, la: f"{f}.{la[0]}",
    "flast": lambda f, la: f"{f[0]}{la}",
    "first_last": lambda f, la: f"{f}_{la}",
    "firstlast": lambda f, la: f"{f}{la}",
}
# "mixed" cycles through the common patterns, as a real team's addresses look;
# "dotted" through the dotted ones only (a company directory's look).
MIXED = ("first.last", "first", "f.last", "firstl", "first.l", "flast")
ROTATIONS: dict[str, tuple[str, ...]] = {
    **{p: (p,) for p in PATTERNS},
    "mixed": MIXED,
    "dotted": ("first.last", "first.l", "f.last"),
}
STYLES = tuple(ROTATIONS)
# Style names of the hosted products integrators come from, mapped to ours: Winnr's
# guide asks for {"count": 5, "style": "professional"} and shows ["sarah.chen",
# "james.r", "m.santos", ...], which is our "dotted".
STYLE_ALIASES: dict[str, str] = {"professional": "dotted"}
ACCEPTED_STYLES = (*STYLES, *STYLE_ALIASES)


def style(name: object) -> str:
    """Our style for *name* (ours, or a hosted product's name for one of ours)."""
    if isinstance(name, str):
        if name in ROTATIONS:
            return name
        if name in STYLE_ALIASES:
            return STYLE_ALIASES[name]
    raise ValueError(f"must be one of {', '.join(ACCEPTED_STYLES)}")

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _ascii(word: str) -> str:
    folded = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode()
    return _NON_ALNUM.sub("", folded.lower())


def parse_person(item: object) -> tuple[str, str]:
    """``"Sarah Chen"`` or ``{"first": "Sarah", "last": "Chen"}`` -> ("sarah", "chen")."""
    if isinstance(item, str):
        parts = item.split()
        if not 1 <= len(parts) <= 6 or len(item) > 128:
            raise ValueError("must be a name like \"Sarah Chen\"")
        first, last = parts[0], (parts[-1] if len(parts) > 1 else "")
    elif isinstance(item, dict) and set(item) <= {"first", "last"} and "first" in item:
        first, last = item["first"], item.get("last", "")
        if not isinstance(first, str) or not isinstance(last, str) or \
                len(first) > 64 or len(last) > 64:
            raise ValueError("first and last must be strings of at most 64 characters")
    else:
        raise ValueError("must be a string \"First Last\" or {first, last}")
    f, la = _ascii(first), _ascii(last)
    if not f:
        raise ValueError("has no letters usable in an address (a-z, 0-9)")
    return f[:30], la[:30]


def _canonical(user: str) -> bool:
    """Only names the mailbox endpoints accept as they are (no second spelling)."""
    try:
        return validation.local_part(user) == user
    except ValueError:
        return False


def _candidates(first: str, last: str, style: str, n: int) -> list[str]:
    """Usernames for one person, preferred first: the chosen pattern, then the others,
    then the preferred one with a number."""
    rotation = ROTATIONS[style]
    order = [rotation[n % len(rotation)]]
    order += [p for p in (*MIXED, *PATTERNS) if p not in order]
    out: list[str] = []
    for p in order:
        if not last and p != "first":
            continue
        u = PATTERNS[p](first, last)
        if u not in out:
            out.append(u)
    base = out[0]
    out += [f"{base}{k}" for k in range(2, 100)]
    return out


def generate(count: int, style: str, given: Sequence[tuple[str, str]],
             domains: Sequence[str], per_domain_max: int, taken: set[str],
             rng: random.Random | None = None) -> list[str]:
    """Up to *count* names; usernames, or addresses (round-robin) when *domains* given."""
    rng = rng or random.Random()  # names, not secrets
    people = list(given)
    pairs = [(f, la) for f in FIRST_NAMES for la in LAST_NAMES]
    rng.shuffle(pairs)
    people += pairs[: max(0, count * 2 - len(people))]
    used: set[str] = set(taken)
    per_domain = dict.fromkeys(domains, 0)
    out: list[str] = []
    slot = 0
    for n, (first, last) in enumerate(people):
        if len(out) >= count:
            break
        domain = None
        if domains:
            # Round-robin, skipping domains that reached their cap.
            for k in range(len(domains)):
                d = domains[(slot + k) % len(domains)]
                if per_domain[d] < per_domain_max:
                    domain = d
                    slot = (slot + k + 1) % len(domains)
                    break
            if domain is None:
                break
        for user in _candidates(first, last, style, n):
            if not _canonical(user):
                continue
            key = f"{user}@{domain}" if domain else user
            if key in used:
                continue
            used.add(key)
            out.append(key)
            if domain:
                per_domain[domain] += 1
            break
    return out
