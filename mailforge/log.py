"""Structured logging: JSON lines in production, readable console output on a terminal.

Context (request id, job id, domain) is bound with structlog's contextvars, so every
line a request or a reconcile pass writes carries its id without passing it around.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from .config import LoggingConfig

_SECRET_KEYS = frozenset({"password", "token", "secret", "private_key", "authorization",
                          "api_key", "master_key"})


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Belt and braces: a secret passed as a log field by mistake is never written.
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


def setup(cfg: LoggingConfig) -> None:
    stream: TextIO = open(cfg.file, "a", buffering=1) if cfg.file else sys.stderr
    fmt = cfg.format
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    level = getattr(logging, cfg.level.upper())
    renderer: Any = (structlog.dev.ConsoleRenderer() if fmt == "console"
                     else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries using stdlib logging (aiohttp access log, asyncpg) go to the same stream.
    logging.basicConfig(stream=stream, level=max(level, logging.WARNING), force=True)


def get(name: str = "mailforge") -> Any:
    return structlog.get_logger(name)
