"""Loads the named SQL queries of ``sql/*.sql`` (procrastinate keeps SQL in files too:
it stays readable, greppable and reviewable as SQL). One file per concept; a query
name is unique across all files."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load() -> dict[str, str]:
    out: dict[str, str] = {}
    folder = resources.files("mailforge.store") / "sql"
    for f in sorted(folder.iterdir(), key=lambda p: p.name):
        if not f.name.endswith(".sql"):
            continue
        parts = _NAME.split(f.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in out:
                raise RuntimeError(f"query {name} defined twice (again in {f.name})")
            out[name] = body.strip()
    return out


class _Queries:
    def __init__(self) -> None:
        self._q = _load()

    def __getattr__(self, name: str) -> str:
        try:
            return self._q[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in store/sql/") from None


Q = _Queries()
