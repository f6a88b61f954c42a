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
import ipaddress
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
    # API worker processes serving the one port (SO_REUSEPORT; the kernel spreads the
    # connections). 0: one per CPU core, at most 4. The first process also runs the
    # reconcile workers and the mail services; the others serve only the API.
    workers: int = 1
    # Run the event loop on uvloop (faster) when it is installed.
    uvloop: bool = True
    # Successful token lookups are cached this many seconds per process, invalidated
    # at once through NOTIFY on revocation or account change; 0 disables the cache.
    token_cache_seconds: float = 5.0
    # One log line per request (method, path, status, ms).
    access_log: bool = True


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
    # Postfix's tables are `sqlite:` lookups (package postfix-sqlite; README "How mail
    # keeps flowing"). The cdb/hash/lmdb tables of earlier releases are no longer
    # written; those values are still accepted (with a warning at start) so an older
    # configuration loads during the migration.
    map_type: str = "sqlite"
    # Unused since the sqlite tables (nothing is compiled); accepted so an older
    # configuration loads.
    postmap: str = "/usr/sbin/postmap"
    # Run as `postfix -c <postfix_config_dir> reload` when the list of served domains
    # changes (Postfix's long-lived processes keep an address's class once resolved);
    # new mailboxes and aliases need no reload.
    postfix: str = "/usr/sbin/postfix"
    postfix_config_dir: str = "/etc/postfix"
    # Root of the Maildirs: <mail_root>/<domain>/<mailbox id>/Maildir
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
    # Hash scheme Dovecot verifies for passwords a user chose: sha512-crypt or argon2id.
    scheme: str = "sha512-crypt"
    # ... and for passwords mailforge generated (>= 120 bits of entropy): ssha512 (one
    # salted SHA-512) by default: a slow hash adds nothing to 142 random bits and would
    # cost the bulk and every login ~4 ms of CPU (docs/security.md, "Password hashing").
    generated_scheme: str = "ssha512"
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
class ApiLimitsConfig:
    # Per API token: sustained requests per second and the burst allowed above it
    # (token bucket, in memory per daemon). Over the limit: 429 with Retry-After.
    requests_per_second: float = 100.0
    burst: int = 500
    # Failed authentications per client address per minute before 429.
    auth_failures_per_minute: int = 60
    # A client must send its whole request body within this many seconds (else 408).
    body_read_timeout_seconds: float = 30.0
    # Idle keep-alive connections are closed after this many seconds. Keep it above
    # clients' own idle timeouts (aiohttp's is 15 s): a server closing at the same moment
    # a client reuses the connection makes that request fail.
    keepalive_timeout_seconds: float = 75.0
    # A client must send its request line and headers within this many seconds of its
    # first byte (else the connection is closed without an answer).
    header_read_timeout_seconds: float = 10.0
    # An Idempotency-Key being handled is leased for this long (renewed while the request
    # runs). A claim whose process died is taken over at once on the same host; on
    # another host only once the lease has run out.
    idempotency_lease_seconds: float = 120.0


@dataclass(frozen=True)
class LoggingConfig:
    # json, console, or auto (console on a terminal, JSON lines otherwise).
    format: str = "auto"
    level: str = "info"
    # Empty: standard error.
    file: str = ""


@dataclass(frozen=True)
class PowerDnsConfig:
    # PowerDNS Authoritative HTTP API (zones are created there when missing).
    api_url: str = "http://127.0.0.1:8081"
    api_key: str = ""
    server_id: str = "localhost"
    # Nameservers put in created zones and answered by connect / checked by check-ns.
    nameservers: tuple[str, ...] = ("ns1.localhost.", "ns2.localhost.")
    # Where its authoritative DNS answers (verification queries); "" = api_url's host:53.
    dns_server: str = "127.0.0.1"
    dns_port: int = 53


@dataclass(frozen=True)
class Rfc2136Config:
    # The primary server accepting signed dynamic updates (RFC 2136 + TSIG).
    server: str = "127.0.0.1"
    port: int = 53
    tsig_key_name: str = ""
    # Base64 TSIG secret (prefer MAILFORGE__DNS__RFC2136__TSIG_SECRET in the environment).
    tsig_secret: str = ""
    tsig_algorithm: str = "hmac-sha256"
    nameservers: tuple[str, ...] = ()


@dataclass(frozen=True)
class CloudflareConfig:
    api_url: str = "https://api.cloudflare.com/client/v4"
    # Default token; a domain may carry its own (sealed in the store).
    api_token: str = ""
    nameservers: tuple[str, ...] = ()
    # host:port answering for the zones (verification); "" = the zones' NS records.
    verify_server: str = ""


@dataclass(frozen=True)
class DnsConfig:
    # Provider used when connect does not name one: powerdns, rfc2136, cloudflare, manual.
    default_provider: str = "manual"
    # Providers offered to API clients at connect (entry points of mailforge.dns_providers).
    providers: tuple[str, ...] = ("manual", "powerdns", "rfc2136", "cloudflare")
    ttl: int = 300
    # Host the MX points at and its addresses (published as A/AAAA when inside the zone).
    mx_hostname: str = "mail.localhost"
    mx_ipv4: tuple[str, ...] = ()
    mx_ipv6: tuple[str, ...] = ()
    # SPF mechanisms authorising the mail host ("mx" plus these), and the final "all".
    spf_extra: tuple[str, ...] = ()
    spf_all: str = "~all"
    dmarc_policy: str = "none"
    # rua= address for aggregate reports; "" = postmaster@<domain>.
    dmarc_rua: str = ""
    mta_sts_mode: str = "testing"
    mta_sts_max_age: int = 604800
    # rua for TLS-RPT; "" = mailto:postmaster@<domain>.
    tls_rpt_rua: str = ""
    # Host serving MTA-STS policies and autoconfig XML (CNAME target for mta-sts.<domain>).
    web_hostname: str = ""
    # A plan changing or deleting more than this share of a zone's records needs force.
    max_change_ratio: float = 0.5
    # Verification queries: timeout per query, and a re-check interval while unverified.
    query_timeout: float = 2.0
    recheck_seconds: float = 2.0
    # Resolver for NS lookups (check-ns, and the proof of a name before it is served); ""
    # = the system resolver. host or host:port. Must see the public DNS, not a resolver
    # forwarding to the server hosting mailforge's zones (docs/security.md).
    ns_resolver: str = ""
    # HTTP timeout talking to provider APIs.
    http_timeout: float = 10.0
    powerdns: PowerDnsConfig = field(default_factory=PowerDnsConfig)
    rfc2136: Rfc2136Config = field(default_factory=Rfc2136Config)
    cloudflare: CloudflareConfig = field(default_factory=CloudflareConfig)


@dataclass(frozen=True)
class DkimConfig:
    # Where the signer's key files and tables are written (dkimpy-milter format).
    signer_dir: str = "/var/lib/mailforge/dkim"
    # Owner of the key files (mode 0600); "" = the daemon's own user.
    signer_user: str = ""
    # Command run (argv) after the tables changed, so the signer loads them.
    reload_command: tuple[str, ...] = ()
    # Signer's milter address (host:port) waited for after a reload; "" = do not wait.
    signer_address: str = ""
    # A pid file that changes when the signer restarted; "" = do not wait for it.
    signer_pid_file: str = ""
    rsa_bits: int = 2048
    # Rotate keys older than this many days; retired keys stay published this long.
    rotate_after_days: float = 90.0
    retire_days: float = 7.0
    # Revoked records (empty p=) stay this long before they are deleted.
    revoked_days: float = 7.0


@dataclass(frozen=True)
class MailConfig:
    # Dovecot master user mailforge logs in as (IMAP ``user*master``, SMTP AUTH too) so it
    # never needs a mailbox's password. The secret comes from here or the environment
    # (MAILFORGE__MAIL__MASTER_PASSWORD); only its hash is written, to master_passdb_file.
    master_user: str = "mailforge"
    master_password: str = ""
    # Empty: <backend state_dir>/dovecot/master-users (the Dovecot passdb with master=yes).
    master_passdb_file: str = ""
    # Postfix submission service the daemon submits API sends to.
    submission_host: str = "127.0.0.1"
    submission_port: int = 587
    # IMAP server the daemon reads mailboxes from (Dovecot).
    imap_host: str = "127.0.0.1"
    imap_port: int = 143
    # Most IMAP connections open at once for one mailbox; idle ones close after idle_seconds.
    imap_pool_per_mailbox: int = 3
    imap_idle_seconds: float = 60.0
    imap_timeout: float = 10.0
    sent_folder: str = "Sent"
    # Postfix policy service (check_policy_service inet:listen:port); port 0 disables it.
    policy_listen: str = "127.0.0.1"
    policy_port: int = 10040
    # Daily send limit of a mailbox whose own limit is not set.
    default_daily_limit: int = 500
    # Warm-up: a mailbox with warm-up on may send warmup_start a day on its first day,
    # rising linearly to its daily limit after warmup_days days.
    warmup_start: int = 5
    warmup_days: int = 14
    # Inbound observation (docs/mail.md): Dovecot posts each finished delivery to this
    # loopback listener and the scanner scans that one mailbox (new mail -> webhooks,
    # DSNs and ARF reports -> reputation). The Dovecot side is a file mailforge writes
    # (events_conf_file; empty: <backend state_dir>/dovecot/events.conf) with the URL
    # and a credential derived from the master key. events_port 0: no listener.
    events_listen: str = "127.0.0.1"
    events_port: int = 10041
    events_conf_file: str = ""
    # Run when that file changed, so that Dovecot reads it (empty: reload it by hand).
    dovecot_reload_command: tuple[str, ...] = ("doveadm", "reload")
    # Mailboxes marked as watched (the policy service's mailforge_observe, for Postfix
    # configurations that still call it) are polled every scan_interval seconds.
    scan_interval: float = 1.0
    # The safety net for events that never came (the daemon was down, Dovecot's stats
    # process restarted): every active mailbox is scanned once at start and then every
    # full_scan_interval seconds (0: only at start), at most sweep_rate mailboxes a
    # second. A scan is a whole IMAP session, ~25 ms of CPU (mostly Dovecot's), so 10/s
    # is ~1/4 of a core while a sweep runs: 100,000 mailboxes in ~2.8 hours a day.
    full_scan_interval: float = 86400.0
    sweep_rate: float = 10.0


@dataclass(frozen=True)
class ReputationConfig:
    window_days: int = 30
    # Rates are taken over max(sent, min_volume) so that a new domain is not judged on
    # a handful of messages.
    min_volume: int = 20
    watch_bounce_rate: float = 0.03
    block_bounce_rate: float = 0.08
    watch_complaint_rate: float = 0.001
    block_complaint_rate: float = 0.003
    # A domain is blocked only with at least this many bounces (or complaints) in the
    # window, whatever the rate: a single report never blocks a low-volume domain.
    block_min_events: int = 3
    # How long the Message-IDs of sent messages are kept: a DSN or ARF report counts
    # only when it refers to a message sent in this time (its evidence).
    evidence_days: int = 30


@dataclass(frozen=True)
class WebhookConfig:
    timeout: float = 10.0
    max_attempts: int = 12
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    poll_interval: float = 1.0


@dataclass(frozen=True)
class OutboundConfig:
    # Connections to tenant-given hosts (webhooks) go to public addresses only; these
    # CIDR ranges are allowed too (e.g. a receiver on the operator's own network).
    allow_networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class ConnectedConfig:
    # Connected mailboxes (issue 12): existing SMTP/IMAP accounts on their own provider.
    # Hosts are tenant-given: every connection goes through outbound.allow_networks' guard.
    # A PEM bundle trusted besides the system store (e.g. a private CA); "": the system
    # store only. Certificates are always verified.
    ca_file: str = ""
    # Seconds for each connect, TLS handshake and command of a test or a use.
    timeout: float = 20.0
    # Connection tests run at once by the worker.
    test_concurrency: int = 32
    # Open SMTP (and, separately, IMAP) connections per remote host and port, all
    # mailboxes together; more wait (an idle one of another mailbox is closed first).
    per_host_connections: int = 16
    # Open IMAP connections per connected mailbox.
    per_mailbox_connections: int = 2
    # An unused pooled connection is closed after this many seconds.
    idle_seconds: float = 60.0
    # The worker looks for due tests this often (it is also woken by NOTIFY).
    poll_interval: float = 60.0
    # A failed mailbox is tested again after retest_backoff_base seconds, doubling with
    # each failure up to retest_backoff_max.
    retest_backoff_base: float = 60.0
    retest_backoff_max: float = 3600.0
    # An active mailbox is tested again this often (seconds).
    recheck_interval: float = 86400.0
    # The DNS check of a connected address's domain (MX, SPF, DMARC, DKIM) is refreshed
    # this often (seconds).
    dns_check_interval: float = 86400.0


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
    api_limits: ApiLimitsConfig = field(default_factory=ApiLimitsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    reputation: ReputationConfig = field(default_factory=ReputationConfig)
    webhooks: WebhookConfig = field(default_factory=WebhookConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    connected: ConnectedConfig = field(default_factory=ConnectedConfig)
    # Source file, for messages; not read from YAML.
    source: str = "<defaults>"


_CHOICES: dict[str, tuple[str, ...]] = {
    "backend.type": ("postfix_dovecot",),
    "backend.postfix_dovecot.map_type": ("sqlite", "cdb", "hash", "lmdb"),
    "passwords.scheme": ("sha512-crypt", "argon2id"),
    "passwords.generated_scheme": ("sha512-crypt", "argon2id", "ssha512"),
    "logging.format": ("auto", "json", "console"),
    "logging.level": ("debug", "info", "warning", "error"),
    "dns.default_provider": ("manual", "powerdns", "rfc2136", "cloudflare"),
    "dns.dmarc_policy": ("none", "quarantine", "reject"),
    "dns.mta_sts_mode": ("none", "testing", "enforce"),
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
    "api_limits.requests_per_second",
    "api_limits.burst",
    "api_limits.auth_failures_per_minute",
    "api_limits.body_read_timeout_seconds",
    "api_limits.keepalive_timeout_seconds",
    "api_limits.header_read_timeout_seconds",
    "api_limits.idempotency_lease_seconds",
    "dns.ttl",
    "dns.max_change_ratio",
    "dkim.rsa_bits",
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
        if isinstance(value, str):
            # From the environment (MAILFORGE__SECTION__KEY): a comma-separated list.
            value = [v.strip() for v in value.split(",") if v.strip()]
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
    if not 0 <= cfg.api.workers <= 64:
        raise ConfigError(cfg.source, "api.workers", "must be from 0 (one per core) to 64")
    if not 0 <= cfg.api.token_cache_seconds <= 60:
        raise ConfigError(cfg.source, "api.token_cache_seconds",
                          "must be from 0 (no cache) to 60")
    if cfg.passwords.generated_scheme == "ssha512" and cfg.passwords.generated_length < 21:
        # 62**21 > 2**125: below that, a fast hash would give guessing a chance.
        raise ConfigError(cfg.source, "passwords.generated_length",
                          "must be at least 21 (>= 120 bits) with generated_scheme ssha512")
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
    for i, net in enumerate(cfg.outbound.allow_networks):
        try:
            ipaddress.ip_network(net, strict=True)
        except ValueError:
            raise ConfigError(cfg.source, f"outbound.allow_networks[{i}]",
                              f"must be a network in CIDR form (e.g. 10.1.0.0/16), "
                              f"got {net!r}") from None
    c = cfg.connected
    if c.ca_file and not Path(c.ca_file).is_absolute():
        raise ConfigError(cfg.source, "connected.ca_file", "must be an absolute path")
    for key in ("timeout", "poll_interval", "retest_backoff_base", "retest_backoff_max",
                "recheck_interval", "dns_check_interval", "idle_seconds"):
        if not getattr(c, key) > 0:
            raise ConfigError(cfg.source, f"connected.{key}", "must be greater than 0")
    for key in ("test_concurrency", "per_host_connections", "per_mailbox_connections"):
        if getattr(c, key) < 1:
            raise ConfigError(cfg.source, f"connected.{key}", "must be 1 or more")
    if c.retest_backoff_max < c.retest_backoff_base:
        raise ConfigError(cfg.source, "connected.retest_backoff_max",
                          "must not be less than connected.retest_backoff_base")
    if cfg.reputation.block_min_events < 1 or cfg.reputation.evidence_days < 1:
        raise ConfigError(cfg.source, "reputation", "block_min_events and evidence_days "
                          "must be 1 or more")
    m = cfg.mail
    if m.events_port and not 0 < m.events_port < 65536:
        raise ConfigError(cfg.source, "mail.events_port",
                          f"must be a TCP port (1-65535) or 0 (off), got {m.events_port}")
    try:
        loopback = ipaddress.ip_address(m.events_listen).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        # Delivery events say which mailbox to scan: only the local Dovecot may post them.
        raise ConfigError(cfg.source, "mail.events_listen",
                          f"must be a loopback address (127.0.0.1 or ::1), "
                          f"got {m.events_listen!r}")
    if not m.sweep_rate > 0 or not m.scan_interval > 0 or m.full_scan_interval < 0:
        raise ConfigError(cfg.source, "mail", "sweep_rate and scan_interval must be greater "
                          "than 0, full_scan_interval 0 or more")
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
