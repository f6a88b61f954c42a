"""Configuration: the operator's YAML file, typed, validated, with environment overrides.

Every option has a default here and a commented line in ``config/mailforge.yaml``.
A bad file fails at start with the file, the dotted key and what is wrong, never
with a traceback deep inside the daemon.

Environment overrides exist so secrets need not live in the file:
``MAILFORGE__SECTION__KEY=value`` overrides ``section.key`` (nested with more ``__``),
and two short names are kept for the secrets operators set most often:
``MAILFORGE_DATABASE_DSN`` and ``MAILFORGE_MASTER_KEY``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml


class ConfigError(Exception):
    """A configuration problem, phrased for the operator."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}")


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str = "postgresql:///mailforge"
    pool_min: int = 2
    pool_max: int = 10


@dataclass(frozen=True)
class ApiConfig:
    listen: str = "127.0.0.1"
    port: int = 8080
    # Requests with a larger body are refused with 413 before they are parsed.
    max_body_bytes: int = 1_048_576


@dataclass(frozen=True)
class Endpoint:
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class HostConfig:
    # Identity of the mail host this agent converges; several agents can share one
    # PostgreSQL, each converging the domains assigned to its own host name.
    name: str = "default"
    mx_hostname: str = "mail.localhost"
    imap: Endpoint = field(default_factory=lambda: Endpoint(port=993))
    submission: Endpoint = field(default_factory=lambda: Endpoint(port=587))
    smtp: Endpoint = field(default_factory=lambda: Endpoint(port=25))


@dataclass(frozen=True)
class PostfixDovecotConfig:
    # Where mailforge writes the maps Postfix and Dovecot read; see README "Map mechanism".
    state_dir: str = "/var/lib/mailforge/backend"
    # Postfix lookup table type for the generated maps: cdb (needs postfix-cdb), hash, lmdb.
    map_type: str = "cdb"
    postmap: str = "/usr/sbin/postmap"
    # Postfix config dir passed to postmap -c (a private instance needs its own).
    postfix_config_dir: str = "/etc/postfix"
    # Root of the Maildirs: <mail_root>/<domain>/<local part>/Maildir
    mail_root: str = "/var/vmail"
    # Owner of the Maildirs (the Dovecot mail user).
    mail_user: str = "vmail"
    # Group that may read the generated password files (Dovecot's auth process).
    auth_group: str = "dovecot"
    default_quota_mb: int = 1024


@dataclass(frozen=True)
class BackendConfig:
    type: str = "postfix_dovecot"
    postfix_dovecot: PostfixDovecotConfig = field(default_factory=PostfixDovecotConfig)


@dataclass(frozen=True)
class WorkerConfig:
    # Concurrent reconcile loops in this daemon; 0 runs the API only (no converging).
    concurrency: int = 2
    # Most domains claimed in one pass; their changes reach the backend in one apply.
    batch_domains: int = 50
    # Seconds between polls; LISTEN/NOTIFY wakes workers sooner, polling is the guarantee.
    poll_interval: float = 2.0
    # A claimed domain is released if its worker has not finished after this many seconds.
    lease_seconds: float = 120.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    # After this many failed attempts a temporary failure is recorded as permanent.
    max_attempts: int = 20


@dataclass(frozen=True)
class PasswordConfig:
    # Hash scheme Dovecot verifies: sha512-crypt or argon2id.
    scheme: str = "sha512-crypt"
    generated_length: int = 24
    min_length: int = 10


@dataclass(frozen=True)
class SecretsConfig:
    # Master key for secrets at rest (DKIM keys, external credentials).
    master_key_file: str = ""
    master_key: str = ""


@dataclass(frozen=True)
class LimitsConfig:
    default_domains: int = 100
    default_email_users: int = 10_000
    bulk_max_items: int = 500


@dataclass(frozen=True)
class MailboxesConfig:
    # Seconds a job keeps the generated passwords of the users it created readable
    # (GET /v1/jobs/{id}); then they are erased.
    secrets_ttl_seconds: float = 900.0
    # Where a deleted mailbox's mail waits until it is purged; empty means
    # <mail_root>/.retention (same file system, so moving it is a rename).
    retention_dir: str = ""
    # Days a deleted mailbox can be restored with its mail; then the mail is destroyed.
    retention_days: float = 30.0
    # Local parts every domain must accept (RFC 2142); unless a mailbox or alias of
    # that name exists, they are routed to role_target.
    role_addresses: tuple[str, ...] = ("postmaster", "abuse")
    # Where role addresses go; empty means the domain's oldest mailbox (none yet: the
    # address is not served).
    role_target: str = ""
    # generate-names with several domains: most names placed in one domain.
    names_per_domain_max: int = 50


@dataclass(frozen=True)
class LoggingConfig:
    # json, console, or auto (console on a terminal, JSON lines otherwise).
    format: str = "auto"
    level: str = "info"
    # Empty: standard error.
    file: str = ""


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    host: HostConfig = field(default_factory=HostConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    passwords: PasswordConfig = field(default_factory=PasswordConfig)
    secrets: SecretsConfig = field(default_factory=SecretsConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    mailboxes: MailboxesConfig = field(default_factory=MailboxesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # Source file, for messages; not read from YAML.
    source: str = "<defaults>"


_CHOICES: dict[str, tuple[str, ...]] = {
    "backend.type": ("postfix_dovecot",),
    "backend.postfix_dovecot.map_type": ("cdb", "hash", "lmdb"),
    "passwords.scheme": ("sha512-crypt", "argon2id"),
    "logging.format": ("auto", "json", "console"),
    "logging.level": ("debug", "info", "warning", "error"),
}

_POSITIVE: tuple[str, ...] = (
    "api.max_body_bytes",
    "database.pool_max",
    "worker.batch_domains",
    "worker.poll_interval",
    "worker.lease_seconds",
    "worker.max_attempts",
    "passwords.generated_length",
    "mailboxes.secrets_ttl_seconds",
    "mailboxes.names_per_domain_max",
)

T = TypeVar("T")


def _convert(source: str, key: str, tp: Any, value: Any) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(source, key, f"must be a mapping, got {type(value).__name__}")
        return _build(source, key, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(source, key, f"must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(source, key, f"must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(source, key, f"must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(source, key, f"must be a number, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(source, key, f"must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(source, key, f"must be a string, got {value!r}")
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        (inner,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            raise ConfigError(source, key, "must be a list")
        items = [_convert(source, f"{key}[{i}]", inner, v) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if isinstance(tp, types.UnionType):
        raise ConfigError(source, key, "unsupported option type")
    return value


def _build(source: str, prefix: str, cls: type[T], data: Mapping[str, Any]) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name != "source"}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(source, key, "unknown option")
        kwargs[k] = _convert(source, key, hints[k], v)
    return cls(**kwargs)


def _merge(base: dict[str, Any], path: list[str], value: str) -> None:
    node = base
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if name.startswith("MAILFORGE__"):
            parts = [p.lower() for p in name[len("MAILFORGE__") :].split("__") if p]
            if parts:
                _merge(out, parts, value)
    if "MAILFORGE_DATABASE_DSN" in env:
        _merge(out, ["database", "dsn"], env["MAILFORGE_DATABASE_DSN"])
    if "MAILFORGE_MASTER_KEY" in env:
        _merge(out, ["secrets", "master_key"], env["MAILFORGE_MASTER_KEY"])
    return out


def _deep_merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _validate(cfg: Config) -> None:
    flat = _flatten(dataclasses.asdict(cfg))
    for key, allowed in _CHOICES.items():
        if flat[key] not in allowed:
            raise ConfigError(cfg.source, key, f"must be one of {', '.join(allowed)}, "
                              f"got {flat[key]!r}")
    for key in _POSITIVE:
        if not flat[key] > 0:
            raise ConfigError(cfg.source, key, f"must be greater than 0, got {flat[key]!r}")
    for key in ("api.port",):
        if not 0 < flat[key] < 65536:
            raise ConfigError(cfg.source, key, f"must be a TCP port (1-65535), got {flat[key]}")
    if cfg.worker.concurrency < 0:
        raise ConfigError(cfg.source, "worker.concurrency", "must be 0 or more")
    if cfg.database.pool_min > cfg.database.pool_max:
        raise ConfigError(cfg.source, "database.pool_min", "must not exceed database.pool_max")
    if not 1 <= cfg.limits.bulk_max_items <= 500:
        raise ConfigError(cfg.source, "limits.bulk_max_items", "must be between 1 and 500")
    if cfg.mailboxes.retention_days < 0:
        raise ConfigError(cfg.source, "mailboxes.retention_days", "must be 0 or more")
    if cfg.mailboxes.retention_dir and not Path(cfg.mailboxes.retention_dir).is_absolute():
        raise ConfigError(cfg.source, "mailboxes.retention_dir", "must be an absolute path")
    if not Path(cfg.backend.postfix_dovecot.state_dir).is_absolute():
        raise ConfigError(cfg.source, "backend.postfix_dovecot.state_dir",
                          "must be an absolute path")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None) -> Config:
    """Read the YAML file at *path* (or only defaults when None) and apply the environment."""
    env = os.environ if env is None else env
    source = str(path) if path else "<defaults>"
    data: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(source, "(file)", f"cannot read: {exc.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}" if mark is not None else "(file)"
            raise ConfigError(source, where, f"not valid YAML: {getattr(exc, 'problem', exc)}") \
                from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(source, "(top level)", "must be a mapping of sections")
        data = loaded
    overrides = _env_overrides(env)
    if overrides:
        data = _deep_merge(data, overrides)
    cfg = _build(source, "", Config, data)
    cfg = dataclasses.replace(cfg, source=source)
    _validate(cfg)
    return cfg


def to_yaml_dict(cfg: Config) -> dict[str, Any]:
    """The configuration as plain data (for writing a generated config file)."""
    d = dataclasses.asdict(cfg)
    d.pop("source", None)
    return d
