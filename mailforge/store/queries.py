"""Loads the named SQL queries of ``queries.sql`` (procrastinate keeps SQL in files too:
it stays readable, greppable and reviewable as SQL)."""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _load() -> dict[str, str]:
    text = (resources.files("mailforge.store") / "queries.sql").read_text(encoding="utf-8")
    parts = _NAME.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise RuntimeError(f"query {name} defined twice in queries.sql")
        out[name] = body.strip()
    return out


class _Queries:
    def __init__(self) -> None:
        self._q = _load()

    def __getattr__(self, name: str) -> str:
        try:
            return self._q[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in queries.sql") from None


Q = _Queries()
