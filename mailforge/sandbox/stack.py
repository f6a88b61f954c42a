"""A private, real mail stack on loopback high ports: the sandbox tests and demos run on.

``Sandbox(DIR).up()`` starts PostgreSQL, PowerDNS, an outbound SMTP sink, the DKIM
signer (dkimpy-milter, service name ``opendkim``), Dovecot, Postfix and (optionally)
the mailforge daemon, each as a detached foreground
process in a new session, with its output in ``DIR/logs/<service>.log``. Ports,
passwords and keys are chosen once and kept in ``DIR/sandbox.json``; running ``up()``
again starts only what is not running (and reloads a running Postfix or Dovecot, or
restarts the daemon, whose configuration it changed). ``down()`` stops everything and
checks that no process of any service is left.

The same Postfix and Dovecot also play an "external provider" (issue 12: mailboxes
hosted elsewhere that mailforge connects to): TLS listeners (implicit TLS and STARTTLS,
SMTP submission and IMAP) on their own loopback address, ``EXTERNAL_HOST``, with a
certificate from the sandbox's private test CA (:mod:`.tls`); a pair with a certificate
nobody trusts on ``BAD_TLS_HOST``; and XOAUTH2/OAUTHBEARER logins checked against the
sandbox's OAuth2 server (:mod:`.oauth`, service ``oauth``). ``sandbox.json`` describes
them under ``external``.

Every service runs in the foreground (``postfix start-fg``, ``dovecot -F``,
``dkimpy-milter`` under a restart-on-SIGHUP supervisor, the From header guard
(``mailforge.milter.fromguard``), ``postgres`` itself,
``pdns_server daemon=no``), so the pid this
module records (``DIR/run/<service>.pid``) is the root of all the service's processes;
a stop that leaves a straggler finishes it with SIGKILL.

The Postfix, Dovecot and DKIM signer settings mailforge depends on are rendered from the
same templates as the production snippets under ``deploy/`` (:func:`render_deploy`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template
from typing import Any

from .. import config, secretbox
from ..backends.postfix_dovecot.layout import Layout
from ..config import DkimConfig
from ..dkim.signer import ensure_tables as ensure_dkim_tables
from ..dkim.signer import render_conf as render_dkimpy_conf
from ..mail import events
from . import tls
from .ports import pick_ports

TEMPLATES = Path(__file__).parent / "templates"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PDNS_SCHEMA = Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql")
POSTFIX_MAIN_CF = Path("/etc/postfix/main.cf")

SERVICES = ("postgres", "pdns", "sink", "oauth", "opendkim", "from_guard", "dovecot",
            "postfix", "daemon")
PORT_NAMES = ("postgres", "smtp", "submission", "imap", "lmtp", "dovecot_auth",
              "opendkim", "dns", "pdns_api", "sink", "api", "policy", "from_guard",
              "events")
# The external provider's own loopback addresses. Not 127.0.0.1: the sandbox daemon
# allows only EXTERNAL_NETWORK for connections to tenant-given hosts (connected
# mailboxes, webhooks), so a tenant still cannot reach PostgreSQL, the PowerDNS API or
# anything else on 127.0.0.1 (tests/integration/test_hostile_mail.py checks that).
EXTERNAL_HOST = "127.0.0.2"
BAD_TLS_HOST = "127.0.0.3"
EXTERNAL_NETWORK = "127.0.0.2/31"
# Port name -> the address it listens on.
EXTERNAL_PORTS = {"smtp_tls": EXTERNAL_HOST, "smtp_starttls": EXTERNAL_HOST,
                  "imap_tls": EXTERNAL_HOST, "imap_starttls": EXTERNAL_HOST,
                  "oauth": EXTERNAL_HOST, "bad_smtp": BAD_TLS_HOST,
                  "bad_imap": BAD_TLS_HOST}
# What a started (or reloaded) service must be listening on before it counts as ready.
READY_PORTS = {"postfix": ("smtp", "submission", "smtp_tls", "smtp_starttls", "bad_smtp"),
               "dovecot": ("imap", "lmtp", "dovecot_auth", "imap_tls", "imap_starttls",
                           "bad_imap")}
OAUTH_CLIENT_ID = "mailforge-sandbox"
OAUTH_DOVECOT_CLIENT_ID = "dovecot"
MYHOSTNAME = "mail.sandbox.test"
AUTH_GROUP = "dovecot"
MAIL_USER = "vmail"
# Postfix reads sqlite: tables (the backend layout; README "How mail keeps flowing").
MAP_TYPE = "sqlite"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


class SandboxError(RuntimeError):
    """A sandbox service failed to start or stop; the message carries its log tail."""


# --------------------------------------------------------------------------- templates


def render(name: str, **values: Any) -> str:
    """Render ``templates/<name>`` with :class:`string.Template` (``$$`` is a literal ``$``)."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    return Template(text).substitute({k: str(v) for k, v in values.items()})


def render_postfix_main_mailforge(layout: Layout, virtual_transport: str, milter: str,
                                  policy: str, from_guard: str) -> str:
    return render("postfix-main-mailforge.cf", policy=policy, from_guard=from_guard,
                  virtual_domains=layout.postfix_ref("virtual_domains"),
                  virtual_mailboxes=layout.postfix_ref("virtual_mailboxes"),
                  virtual_aliases=layout.postfix_ref("virtual_aliases"),
                  sender_logins=layout.postfix_ref("sender_logins"),
                  virtual_transport=virtual_transport, milter=milter)


def render_postfix_submission(service: str, chroot: str, tls_level: str, sasl_path: str) -> str:
    return render("postfix-master-submission.cf", submission_service=service, chroot=chroot,
                  submission_tls_level=tls_level, sasl_path=sasl_path)


def render_dovecot_mailforge(layout: Layout, mail_root: str, mail_user: str,
                             first_valid_uid: int, auth_listener: str,
                             lmtp_listener: str, login_processes: int = 4) -> str:
    return render("dovecot-mailforge.conf", first_valid_uid=first_valid_uid,
                  sql_conf=layout.dovecot_sql_conf, mail_user=mail_user,
                  master_passdb=layout.state_dir / "dovecot" / "master-users",
                  mail_root=mail_root, auth_listener=auth_listener,
                  lmtp_listener=lmtp_listener, login_processes=login_processes,
                  events_conf=layout.state_dir / "dovecot" / "events.conf")


# Production values for deploy/: the defaults of mailforge/config.py and the Debian paths.
DEPLOY_STATE_DIR = "/var/lib/mailforge/backend"
DEPLOY_MAIL_ROOT = "/var/vmail"
DEPLOY_FROM_GUARD = "127.0.0.1:8892"


def render_deploy() -> dict[str, str]:
    """The production snippets under ``deploy/``, keyed by path relative to the repo."""
    layout = Layout(Path(DEPLOY_STATE_DIR))
    return {
        "deploy/postfix/main.cf.mailforge":
            "# Add to /etc/postfix/main.cf (e.g. with postconf -e), then: postfix reload\n"
            + render_postfix_main_mailforge(layout, "lmtp:unix:private/dovecot-lmtp",
                                            "inet:localhost:8891", "inet:127.0.0.1:10040",
                                            f"inet:{DEPLOY_FROM_GUARD}"),
        "deploy/postfix/master.cf.mailforge":
            "# Add to /etc/postfix/master.cf: the submission service for mailbox users.\n"
            + render_postfix_submission("submission", "y", "encrypt", "private/auth"),
        "deploy/dovecot/mailforge.conf":
            "# Save as /etc/dovecot/conf.d/99-mailforge.conf (after Debian's own settings).\n"
            + render_dovecot_mailforge(
                layout, DEPLOY_MAIL_ROOT, "vmail", 100,
                auth_listener=("  unix_listener /var/spool/postfix/private/auth {\n"
                               "    mode = 0660\n    user = postfix\n    group = postfix\n"
                               "  }"),
                lmtp_listener=("  unix_listener /var/spool/postfix/private/dovecot-lmtp {\n"
                               "    mode = 0600\n    user = postfix\n    group = postfix\n"
                               "  }")),
        "deploy/dkimpy-milter/dkimpy-milter.conf":
            "# Save as /etc/dkimpy-milter/dkimpy-milter.conf; mailforge writes the tables and\n"
            "# keys (dkim.signer_dir) and restarts the milter (dkim.reload_command).\n"
            + render_dkimpy_conf("inet:8891@[127.0.0.1]", "/var/lib/mailforge/dkim",
                                 user="dkimpy-milter"),
    }


def write_deploy(repo_root: str | Path) -> list[Path]:
    out = []
    for rel, text in render_deploy().items():
        path = Path(repo_root) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        out.append(path)
    return out


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, parent pid, session id, start time in clock ticks) of *pid*, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    # fields[0] is stat field 3 (state): ppid is field 4, session 6, starttime 22.
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def _alive(pid: int, start: int | None = None) -> bool:
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return start is None or st[3] == start


def _environ_has(pid: int, entry: bytes) -> bool:
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def service_processes(pid: int, start: int, env_marker: bytes | None = None) -> list[int]:
    """Live processes of the service whose leader was *pid* (started at *start* ticks).

    A process belongs to it when it descends from the leader, shares its session, or
    (when given) carries *env_marker* in its environment; and it is not older than the
    leader. Postgres children call setsid() and Postfix's master -s does too, so the
    session alone is not enough; descendants of a dead leader are reparented, which
    the session or the marker (Postfix: MAIL_CONFIG) still catches.
    """
    procs: dict[int, tuple[str, int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st is not None and st[3] >= start and st[0] not in ("Z", "X"):
                procs[int(entry)] = st
    members = {p for p, st in procs.items() if st[2] == pid}
    if pid in procs:
        members.add(pid)
    if env_marker is not None:
        members |= {p for p in procs if p not in members and _environ_has(p, env_marker)}
    changed = True
    while changed:
        changed = False
        for p, st in procs.items():
            if p not in members and st[1] in members:
                members.add(p)
                changed = True
    return sorted(members)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return f"(no log at {path})"
    text = data[-65536:].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _chown(path: Path, user: str, group: str | None = None) -> None:
    shutil.chown(path, user, group or user)


# --------------------------------------------------------------------------- sandbox


class Sandbox:
    """A private mail stack in *directory*; see the module docstring."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory).resolve()
        self.info: dict[str, Any] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # Services whose configuration _prepare() changed (up() reloads them if running).
        self._changed: set[str] = set()
        if self.json_path.exists():
            self.info = json.loads(self.json_path.read_text())

    # ----- paths

    @property
    def json_path(self) -> Path:
        return self.dir / "sandbox.json"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def state_dir(self) -> Path:
        return self.dir / "state"

    @property
    def mail_root(self) -> Path:
        return self.dir / "mail"

    @property
    def postfix_config_dir(self) -> Path:
        return self.dir / "postfix" / "etc"

    @property
    def dovecot_config(self) -> Path:
        return self.dir / "dovecot" / "dovecot.conf"

    @property
    def oauth_config(self) -> Path:
        return self.dir / "oauth" / "oauth.json"

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    @property
    def layout(self) -> Layout:
        return Layout(self.state_dir)

    def log_paths(self) -> dict[str, Path]:
        paths = {name: self.log_dir / f"{name}.log" for name in SERVICES}
        for extra in ("daemon-console", "postfix-console", "dovecot-console"):
            paths[extra] = self.log_dir / f"{extra}.log"
        return paths

    def _pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    # ----- state

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _save(self) -> None:
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.info, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.json_path)

    def _ensure_info(self) -> None:
        info = self.info
        ports: dict[str, int] = dict(info.get("ports", {}))
        missing = [n for n in PORT_NAMES if n not in ports]
        if missing:
            ports.update(pick_ports(missing, udp=("dns",), avoid=ports.values()))
        for name, host in EXTERNAL_PORTS.items():
            if name not in ports:
                ports.update(pick_ports([name], avoid=ports.values(), host=host))
        secrets_: dict[str, str] = dict(info.get("secrets", {}))
        secrets_.setdefault("postgres_password", secrets.token_urlsafe(18))
        secrets_.setdefault("pdns_api_key", secrets.token_urlsafe(24))
        secrets_.setdefault("mail_master_password", secrets.token_urlsafe(24))
        secrets_.setdefault("oauth_client_secret", secrets.token_urlsafe(24))
        secrets_.setdefault("oauth_dovecot_secret", secrets.token_urlsafe(24))
        secrets_.setdefault("oauth_mint_secret", secrets.token_urlsafe(24))
        d = self.dir
        h = "127.0.0.1"
        pw = secrets_["postgres_password"]
        info.update({
            "dir": str(d),
            "ports": ports,
            "secrets": secrets_,
            "api_url": f"http://{h}:{ports['api']}",
            "admin_token": info.get("admin_token"),
            "smtp": {"host": h, "port": ports["smtp"]},
            "submission": {"host": h, "port": ports["submission"]},
            "imap": {"host": h, "port": ports["imap"]},
            "lmtp": {"host": h, "port": ports["lmtp"]},
            "dovecot_auth": {"host": h, "port": ports["dovecot_auth"]},
            "dns": {"host": h, "port": ports["dns"]},
            "pdns_api": {"url": f"http://{h}:{ports['pdns_api']}", "key": secrets_["pdns_api_key"],
                         "server_id": "localhost"},
            "sink": {"host": h, "port": ports["sink"]},
            "outbox_dir": str(d / "outbox"),
            "postgres_dsn": f"postgresql://mailforge:{pw}@{h}:{ports['postgres']}/mailforge",
            "config_path": str(d / "mailforge.yaml"),
            "state_dir": str(self.state_dir),
            "mail_root": str(self.mail_root),
            "mail_user": MAIL_USER,
            "map_type": MAP_TYPE,
            "postfix_config_dir": str(self.postfix_config_dir),
            "dovecot_config": str(self.dovecot_config),
            "from_guard": {"host": h, "port": ports["from_guard"]},
            "opendkim": {"port": ports["opendkim"], "signer": "dkimpy-milter",
                         "signer_dir": str(self.state_dir / "dkim"),
                         "key_table": str(self.state_dir / "dkim" / "KeyTable"),
                         "signing_table": str(self.state_dir / "dkim" / "SigningTable"),
                         "pid_file": str(self.run_dir / "dkim-signer.pid")},
            "mx_hostname": MYHOSTNAME,
            "logs": {k: str(v) for k, v in self.log_paths().items()},
            "external": self._external_info(ports, secrets_),
        })

    def _external_info(self, ports: dict[str, int], secrets_: dict[str, str]) -> dict[str, Any]:
        """sandbox.json's ``external``: the sandbox as a provider mailforge connects to.
        Mint a refresh token: ``mailforge.sandbox.oauth.mint(info, address)`` (POST
        ``mint_url`` with ``Authorization: Bearer <secrets.oauth_mint_secret>``)."""
        def ep(name: str) -> dict[str, Any]:
            return {"host": EXTERNAL_PORTS[name], "port": ports[name]}

        oauth = f"http://{EXTERNAL_HOST}:{ports['oauth']}"
        return {
            "smtp_tls": ep("smtp_tls"), "smtp_starttls": ep("smtp_starttls"),
            "imap_tls": ep("imap_tls"), "imap_starttls": ep("imap_starttls"),
            "bad_tls": {"smtp": ep("bad_smtp"), "imap": ep("bad_imap")},
            "ca_file": str(self.tls_dir / "ca.pem"),
            "oauth": {"token_url": f"{oauth}/token", "client_id": OAUTH_CLIENT_ID,
                      "client_secret": secrets_["oauth_client_secret"],
                      "mint_url": f"{oauth}/mint"},
        }

    # ----- configuration files

    def _prepare(self) -> None:
        d = self.dir
        # mkdtemp makes 0700: the postgres, postfix, dovecot and vmail users must traverse.
        os.chmod(d, 0o711)  # noqa: S103 - traverse only, no listing
        for sub in ("logs", "run", "postfix/etc", "postfix/queue", "postfix/data", "dovecot",
                    "dovecot/run", "dovecot/state", "opendkim", "pdns", "outbox", "state",
                    "mail", "oauth"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(d / "logs", 0o755)  # noqa: S103 - logs of a throwaway test stack
        _chown(d / "postfix" / "data", "postfix")
        _chown(self.mail_root, MAIL_USER)
        os.chmod(self.mail_root, 0o770)  # noqa: S103 - vmail user and group only
        ports = self.info["ports"]
        layout = self.layout
        pf = self.postfix_config_dir
        milter = f"inet:127.0.0.1:{ports['opendkim']}"

        # Postfix
        main = render("postfix-main-instance.cf", config_dir=pf, queue_dir=d / "postfix/queue",
                      data_dir=d / "postfix/data", maillog_file=self.log_dir / "postfix.log",
                      log_dir=self.log_dir, myhostname=MYHOSTNAME, sink_port=ports["sink"])
        main += "\n" + render_postfix_main_mailforge(
            layout, f"lmtp:inet:127.0.0.1:{ports['lmtp']}", milter,
            f"inet:127.0.0.1:{ports['policy']}", f"inet:127.0.0.1:{ports['from_guard']}")
        sasl = f"inet:127.0.0.1:{ports['dovecot_auth']}"
        submission = render_postfix_submission(str(ports["submission"]), "n", "none", sasl)
        certs = tls.ensure(self.tls_dir, [MYHOSTNAME],
                           ["127.0.0.1", EXTERNAL_HOST, BAD_TLS_HOST])
        submission += self._postfix_external(sasl, certs)
        master = render("postfix-master-instance.cf", smtp_port=ports["smtp"],
                        submission=submission.rstrip("\n"))
        self._write_if_changed(pf / "main.cf", main, "postfix")
        self._write_if_changed(pf / "master.cf", master, "postfix")

        # Postfix's and Dovecot's databases (Postfix needs the tables before it starts).
        layout.initialize()
        for p in (layout.dovecot_dir, layout.auth_db, layout.dovecot_sql_conf):
            shutil.chown(p, group=AUTH_GROUP)

        # Dovecot
        auth_listener = ("  inet_listener sasl {\n    address = 127.0.0.1\n"
                         f"    port = {ports['dovecot_auth']}\n  }}")
        lmtp_listener = ("  inet_listener lmtp {\n    address = 127.0.0.1\n"
                         f"    port = {ports['lmtp']}\n  }}")
        mf = render_dovecot_mailforge(layout, str(self.mail_root), MAIL_USER,
                                      pwd.getpwnam(MAIL_USER).pw_uid, auth_listener,
                                      lmtp_listener, login_processes=os.cpu_count() or 1)
        oauth2_conf = d / "dovecot" / "oauth2.conf.ext"
        sec = self.info["secrets"]
        # Dovecot's auth process reads it; it holds Dovecot's introspection secret.
        self._write_if_changed(oauth2_conf, render(
            "dovecot-oauth2.conf.ext",
            introspection_url=f"http://{EXTERNAL_HOST}:{ports['oauth']}/introspect",
            client_id=OAUTH_DOVECOT_CLIENT_ID, client_secret=sec["oauth_dovecot_secret"]),
            "dovecot", mode=0o640)
        shutil.chown(oauth2_conf, group=AUTH_GROUP)
        external = render("dovecot-external.conf", external_host=EXTERNAL_HOST,
                          bad_host=BAD_TLS_HOST, bad_cert_file=certs.bad_cert_file,
                          bad_key_file=certs.bad_key_file, oauth2_conf=oauth2_conf)
        dconf = render("dovecot-instance.conf",
                       instance_name=f"mailforge-sandbox-{ports['imap']}",
                       base_dir=d / "dovecot/run", state_dir=d / "dovecot/state",
                       log_path=self.log_dir / "dovecot.log", imap_port=ports["imap"],
                       ssl_cert_file=certs.cert_file, ssl_key_file=certs.key_file,
                       external_host=EXTERNAL_HOST, bad_host=BAD_TLS_HOST,
                       imap_tls_port=ports["imap_tls"],
                       imap_starttls_port=ports["imap_starttls"],
                       bad_imap_port=ports["bad_imap"], external=external, mailforge=mf)
        self._write_if_changed(self.dovecot_config, dconf, "dovecot")

        # The OAuth2 server's settings (its secrets: mode 0600, not on its command line).
        self._write_if_changed(self.oauth_config, json.dumps({
            "host": EXTERNAL_HOST, "port": ports["oauth"],
            "state_file": str(d / "oauth" / "tokens.jsonl"),
            "client_id": OAUTH_CLIENT_ID, "client_secret": sec["oauth_client_secret"],
            "introspection_client_id": OAUTH_DOVECOT_CLIENT_ID,
            "introspection_client_secret": sec["oauth_dovecot_secret"],
            "mint_secret": sec["oauth_mint_secret"]}, indent=1) + "\n", "oauth", mode=0o600)
        # The master-user passdb must exist (Dovecot fails every login while a passdb file
        # is missing); the daemon writes the hashed secret into it when it starts.
        master_users = layout.state_dir / "dovecot" / "master-users"
        if not master_users.exists():
            master_users.write_text("")
            os.chmod(master_users, 0o640)
            shutil.chown(master_users, group=AUTH_GROUP)

        # The signer is dkimpy-milter (RSA + Ed25519; OpenDKIM 2.11 cannot sign Ed25519
        # here), under a supervisor that restarts it on SIGHUP: it loads keys only at start.
        # Only where no table exists yet: on a live sandbox the tables are the daemon's
        # (every domain's keys), and rewriting them empty dropped all signing.
        ensure_dkim_tables(self._dkim_cfg())
        self._write_if_changed(d / "opendkim" / "dkimpy-milter.conf", render_dkimpy_conf(
            f"inet:{ports['opendkim']}@[127.0.0.1]", str(self.state_dir / "dkim")))

        # PowerDNS
        db = d / "pdns" / "pdns.sqlite3"
        if not db.exists():
            import sqlite3

            tmp = db.with_suffix(".tmp")
            tmp.unlink(missing_ok=True)
            con = sqlite3.connect(tmp)
            con.executescript(PDNS_SCHEMA.read_text())
            con.commit()
            con.close()
            os.replace(tmp, db)
        self._write_if_changed(d / "pdns" / "pdns.conf", render(
            "pdns.conf", database=db, dns_port=ports["dns"],
            api_key=self.info["secrets"]["pdns_api_key"], api_port=ports["pdns_api"],
            socket_dir=d / "pdns"))

        # mailforge daemon
        key_file = d / "master.key"
        if not key_file.exists():
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        self._write_if_changed(d / "mailforge.yaml", self._daemon_yaml(key_file), "daemon")
        # Dovecot's side of the delivery events, as the daemon writes it (the same file:
        # the daemon's start finds it current and reloads nothing), before Dovecot starts.
        daemon_cfg = config.load(d / "mailforge.yaml")
        events.write_dovecot_conf(daemon_cfg, secretbox.from_config(daemon_cfg))
        self._register_postfix_config_dir()

    def _dkim_cfg(self) -> DkimConfig:
        pidfile = self.run_dir / "dkim-signer.pid"
        return DkimConfig(
            signer_dir=str(self.state_dir / "dkim"),
            reload_command=("/bin/sh", "-c", f"kill -HUP $(head -n1 {pidfile})"),
            signer_address=f"127.0.0.1:{self.info['ports']['opendkim']}",
            signer_pid_file=str(pidfile))

    def _daemon_yaml(self, key_file: Path) -> str:
        import yaml

        i = self.info
        cfg = {
            "database": {"dsn": i["postgres_dsn"], "pool_min": 1, "pool_max": 10},
            "api": {"listen": "127.0.0.1", "port": i["ports"]["api"]},
            "host": {"name": "sandbox", "mx_hostname": MYHOSTNAME,
                     "imap": dict(i["imap"]), "submission": dict(i["submission"]),
                     "smtp": dict(i["smtp"])},
            "backend": {"type": "postfix_dovecot", "postfix_dovecot": {
                "state_dir": i["state_dir"], "map_type": MAP_TYPE,
                "postfix_config_dir": i["postfix_config_dir"], "mail_root": i["mail_root"],
                "mail_user": MAIL_USER, "auth_group": AUTH_GROUP}},
            "secrets": {"master_key_file": str(key_file)},
            "logging": {"format": "json", "level": "debug",
                        "file": str(self.log_dir / "daemon.log")},
            "worker": {"poll_interval": 1.0},
            "mail": {"master_password": i["secrets"]["mail_master_password"],
                     "submission_host": i["submission"]["host"],
                     "submission_port": i["submission"]["port"],
                     "imap_host": i["imap"]["host"], "imap_port": i["imap"]["port"],
                     "policy_port": i["ports"]["policy"],
                     "events_port": i["ports"]["events"],
                     "dovecot_reload_command": ["doveadm", "-c", str(self.dovecot_config),
                                                "reload"],
                     # Tests restart the daemon often: each start sweeps every mailbox.
                     "sweep_rate": 10.0},
            "dns": {"default_provider": "powerdns", "mx_hostname": MYHOSTNAME,
                    "mx_ipv4": ["127.0.0.1"], "recheck_seconds": 0.3,
                    "query_timeout": 1.0, "ns_resolver": f"127.0.0.1:{i['ports']['dns']}",
                    "powerdns": {"api_url": i["pdns_api"]["url"],
                                 "api_key": i["pdns_api"]["key"],
                                 "nameservers": ["ns1.sandbox.test.", "ns2.sandbox.test."],
                                 "dns_server": "127.0.0.1", "dns_port": i["ports"]["dns"]}},
            "dkim": dataclasses.asdict(self._dkim_cfg()),
            # Connected mailboxes (issue 12) may point at the sandbox's external provider
            # (and the OAuth2 server) on EXTERNAL_NETWORK; nothing else on loopback.
            "outbound": {"allow_networks": [EXTERNAL_NETWORK]},
        }
        # The test CA, for the TLS listeners of the external provider. Only when this
        # mailforge has the ``connected`` section: the config refuses unknown keys.
        if "connected" in {f.name for f in dataclasses.fields(config.Config)}:
            cfg["connected"] = {"ca_file": i["external"]["ca_file"]}
        return ("# mailforge sandbox daemon config. Generated by mailforge.sandbox.\n"
                + yaml.safe_dump(cfg, sort_keys=False))

    def _write_if_changed(self, path: Path, text: str, service: str | None = None,
                          mode: int | None = None) -> bool:
        """Write *path* unless it holds *text*; a change is noted against *service*,
        which ``up()`` then reloads or restarts if it runs."""
        if path.exists() and path.read_text() == text:
            return False
        tmp = path.with_name(path.name + ".tmp")
        if mode is not None:
            # Created with its mode: a secret is never readable, not even for a moment.
            tmp.unlink(missing_ok=True)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
        tmp.write_text(text)
        os.replace(tmp, path)
        if service is not None:
            self._changed.add(service)
        return True

    def _postfix_external(self, sasl_path: str, certs: tls.TlsFiles) -> str:
        """master.cf services of the external provider: submission with implicit TLS
        (465-style, wrapper mode) and with STARTTLS (587-style), and an implicit-TLS one
        whose certificate nobody trusts. TLS is required before AUTH on all of them.
        mailforge's daily-limit policy is left out: this server stands for someone
        else's, and the mailbox's sends are counted by mailforge where it sends."""
        ports = self.info["ports"]
        out = ""
        for name, wrapper, cert, key in (
                ("smtp_tls", "yes", certs.cert_file, certs.key_file),
                ("smtp_starttls", "no", certs.cert_file, certs.key_file),
                ("bad_smtp", "yes", certs.bad_cert_file, certs.bad_key_file)):
            out += render("postfix-master-external.cf",
                          service=f"{EXTERNAL_PORTS[name]}:{ports[name]}",
                          syslog_name=f"external-{name.replace('_', '-')}",
                          wrappermode=wrapper, key_file=key, cert_file=cert,
                          sasl_path=sasl_path)
        return out

    def _register_postfix_config_dir(self, remove: bool = False) -> None:
        """Add (or remove) our config dir in alternate_config_directories of the default
        main.cf; entries of other sandboxes that no longer exist are dropped."""
        if not POSTFIX_MAIN_CF.exists():
            return
        mine = str(self.postfix_config_dir)
        # Serialize with other sandboxes: an exclusive flock on the /etc/postfix directory.
        lock = os.open(POSTFIX_MAIN_CF.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            cur = subprocess.run(["postconf", "-h", "alternate_config_directories"],
                                 capture_output=True, text=True, check=True).stdout
            entries = [e for e in cur.replace(",", " ").split() if e]
            new = [e for e in entries if e != mine and (e.startswith("$") or Path(e).is_dir())]
            if not remove:
                new.append(mine)
            if new != entries:
                subprocess.run(["postconf", "-e",
                                f"alternate_config_directories = {' '.join(new)}"],
                               check=True, capture_output=True)
        finally:
            os.close(lock)

    # ----- process control

    def _read_pid(self, name: str) -> tuple[int, int] | None:
        try:
            pid_s, start_s = self._pidfile(name).read_text().split()
            return int(pid_s), int(start_s)
        except (OSError, ValueError):
            return None

    def running(self, name: str) -> bool:
        self._check_name(name)
        proc = self._procs.get(name)
        if proc is not None:
            proc.poll()  # reap a child that died, so it does not linger as a zombie
        rec = self._read_pid(name)
        return rec is not None and _alive(*rec)

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in SERVICES:
            raise ValueError(f"unknown sandbox service {name!r}; one of {', '.join(SERVICES)}")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFORGE")}
        repo = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], log: Path, user: str | None = None,
               env: dict[str, str] | None = None) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} mailforge sandbox "
                      f"starting {name}: {' '.join(argv)}\n".encode())
            out.flush()
            kwargs: dict[str, Any] = {}
            if user:
                kwargs.update(user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[])
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=str(self.dir if user is None else "/"),
                                    env=env if env is not None else self._env(), **kwargs)
        st = _proc_stat(proc.pid)
        start = st[3] if st else 0
        self._pidfile(name).write_text(f"{proc.pid} {start}\n")
        self._procs[name] = proc

    def _wait_ready(self, name: str, check: Any, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return
            if not self.running(name):
                raise SandboxError(f"sandbox: {name} exited during start-up\n"
                                   + self._log_tail(name))
            if time.monotonic() > deadline:
                raise SandboxError(f"sandbox: {name} not ready after {timeout:.0f}s\n"
                                   + self._log_tail(name))
            time.sleep(0.05)

    def _log_tail(self, name: str, lines: int = 40) -> str:
        paths = [self.log_paths()[name]]
        if name == "daemon":
            paths.append(self.log_paths()["daemon-console"])
        return "\n".join(f"--- {p} (last {lines} lines) ---\n{_tail(p, lines)}" for p in paths)

    def start_service(self, name: str) -> None:
        """Start *name* unless it runs; return when it accepts connections."""
        self._check_name(name)
        if not self.info:
            raise SandboxError("sandbox: up() was never run in " + str(self.dir))
        if self.running(name):
            return
        getattr(self, f"_start_{name}")()

    def _ports_open(self, *names: str) -> bool:
        return all(_port_open(self.info["ports"][n], EXTERNAL_PORTS.get(n, "127.0.0.1"))
                   for n in names)

    def _start_postgres(self) -> None:
        pgdir = self.dir / "postgres"
        data = pgdir / "data"
        sock = pgdir / "sock"
        port = self.info["ports"]["postgres"]
        log = self.log_paths()["postgres"]
        first = not (data / "PG_VERSION").exists()
        if first:
            if data.exists():
                shutil.rmtree(data)
            pgdir.mkdir(exist_ok=True)
            sock.mkdir(exist_ok=True)
            _chown(pgdir, "postgres")
            _chown(sock, "postgres")
            pwfile = pgdir / "pw"
            pwfile.write_text(secrets.token_urlsafe(24) + "\n")  # never used: local trust
            _chown(pwfile, "postgres")
            r = subprocess.run(
                [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
                 "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256",
                 f"--pwfile={pwfile}", "--no-sync"],
                user="postgres", group="postgres", extra_groups=[], cwd="/",
                capture_output=True, text=True)
            pwfile.unlink()
            with open(log, "a") as fh:
                fh.write(r.stdout + r.stderr)
            if r.returncode:
                raise SandboxError(f"sandbox: initdb failed\n{r.stdout}{r.stderr}")
            conf = data / "postgresql.conf"
            with open(conf, "a") as fh:
                fh.write(
                    "\n# mailforge sandbox\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"port = {port}\n"
                    f"unix_socket_directories = '{sock}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 200\nshared_buffers = 64MB\n"
                    "logging_collector = off\nlog_line_prefix = '%m [%p] %q%u@%d '\n"
                    "log_min_messages = warning\nlog_min_error_statement = error\n")
        self._spawn("postgres", [str(PG_BIN / "postgres"), "-D", str(data)], log,
                    user="postgres")

        def accepting() -> bool:
            if not (sock / f".s.PGSQL.{port}").exists():
                return False
            r = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", str(sock), "-p",
                                str(port), "-U", "postgres"], capture_output=True)
            return r.returncode == 0 and self._ports_open("postgres")

        self._wait_ready("postgres", accepting)
        # Role and database (idempotent; also after a crash between initdb and here).
        pw = self.info["secrets"]["postgres_password"]

        def psql(sql: str, db: str = "postgres") -> str:
            r = subprocess.run([str(PG_BIN / "psql"), "-h", str(sock), "-p", str(port),
                                "-U", "postgres", "-d", db, "-XAtq", "-v", "ON_ERROR_STOP=1",
                                "-c", sql], user="postgres", group="postgres",
                               extra_groups=[], cwd="/", capture_output=True, text=True)
            if r.returncode:
                raise SandboxError(f"sandbox: psql {sql!r} failed: {r.stderr}")
            return r.stdout.strip()

        # CREATEDB: tests make scratch databases (e.g. to compare migrations with schema).
        if not psql("SELECT 1 FROM pg_roles WHERE rolname = 'mailforge' AND rolcreatedb"):
            if psql("SELECT 1 FROM pg_roles WHERE rolname = 'mailforge'"):
                psql("ALTER ROLE mailforge CREATEDB")
            else:
                psql(f"CREATE ROLE mailforge LOGIN CREATEDB PASSWORD '{pw}'")
        if not psql("SELECT 1 FROM pg_database WHERE datname = 'mailforge'"):
            psql("CREATE DATABASE mailforge OWNER mailforge")

    def _start_pdns(self) -> None:
        conf_dir = self.dir / "pdns"
        self._spawn("pdns", ["/usr/sbin/pdns_server", f"--config-dir={conf_dir}"],
                    self.log_paths()["pdns"])
        self._wait_ready("pdns", lambda: self._ports_open("dns", "pdns_api"))

    def _start_sink(self) -> None:
        self._spawn("sink", [sys.executable, "-m", "mailforge.sandbox.sink", "--host",
                             "127.0.0.1", "--port", str(self.info["ports"]["sink"]),
                             "--dir", self.info["outbox_dir"]], self.log_paths()["sink"])
        self._wait_ready("sink", lambda: self._ports_open("sink"))

    def _start_oauth(self) -> None:
        self._spawn("oauth", [sys.executable, "-m", "mailforge.sandbox.oauth", "--config",
                              str(self.oauth_config)], self.log_paths()["oauth"])
        self._wait_ready("oauth", lambda: self._ports_open("oauth"))

    def _start_opendkim(self) -> None:
        self._spawn("opendkim", [sys.executable, "-m", "mailforge.dkim.supervise",
                                 str(self.dir / "opendkim" / "dkimpy-milter.conf"),
                                 str(self.run_dir / "dkim-signer.pid")],
                    self.log_paths()["opendkim"])
        self._wait_ready("opendkim", lambda: self._ports_open("opendkim"))

    def _start_from_guard(self) -> None:
        # Its own process, not the daemon's: submission must work while the daemon is
        # stopped, and Postfix defers submissions while the guard is down.
        self._spawn("from_guard", [sys.executable, "-m", "mailforge.milter.fromguard",
                                   "--listen", f"127.0.0.1:{self.info['ports']['from_guard']}",
                                   "--map", str(self.layout.postfix_db),
                                   "--config", self.info["config_path"]],
                    self.log_paths()["from_guard"])
        self._wait_ready("from_guard", lambda: self._ports_open("from_guard"))

    def _start_dovecot(self) -> None:
        self._spawn("dovecot", ["/usr/sbin/dovecot", "-F", "-c", str(self.dovecot_config)],
                    self.log_dir / "dovecot-console.log")
        self._wait_ready("dovecot", lambda: self._ports_open(*READY_PORTS["dovecot"]))
        if self.running("postfix"):
            # Postfix's smtpd processes keep their SASL connection to the old Dovecot and
            # would answer the next AUTH with 454 4.7.0 "Connection lost to authentication
            # server"; a reload makes them finish and new ones connect afresh.
            subprocess.run(["postfix", "-c", str(self.postfix_config_dir), "reload"],
                           check=False, capture_output=True)

    def _start_postfix(self) -> None:
        self._spawn("postfix", ["/usr/sbin/postfix", "-c", str(self.postfix_config_dir),
                                "start-fg"], self.log_dir / "postfix-console.log")
        self._wait_ready("postfix", lambda: self._ports_open(*READY_PORTS["postfix"]))

    def _daemon_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mailforge", "--config", self.info["config_path"], *args]

    def _run_daemon_cli(self, *args: str) -> str:
        r = subprocess.run(self._daemon_cmd(*args), capture_output=True, text=True,
                           env=self._env(), cwd=str(self.dir), timeout=120)
        with open(self.log_paths()["daemon-console"], "a") as fh:
            fh.write(f"\n===== mailforge {' '.join(args)} -> exit {r.returncode}\n{r.stderr}")
        if r.returncode:
            raise SandboxError(f"sandbox: `mailforge {' '.join(args)}` failed "
                               f"(exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def _start_daemon(self) -> None:
        self._run_daemon_cli("migrate")
        if not self.info.get("admin_token"):
            out = self._run_daemon_cli("token", "create", "--name", "sandbox-admin",
                                       "--permissions", "admin", "--json")
            tok = json.loads(out.strip().splitlines()[-1])
            self.info["admin_token"] = tok["token"]
            self.info["admin_token_id"] = tok.get("id")
            self._save()
        self._spawn("daemon", self._daemon_cmd("run"), self.log_paths()["daemon-console"])
        url = self.info["api_url"] + "/v1/health"

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310
                    return bool(resp.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        self._wait_ready("daemon", healthy, timeout=20.0)

    # ----- stop

    def _members(self, name: str) -> list[int]:
        rec = self._read_pid(name)
        if rec is None:
            return []
        marker = (f"MAIL_CONFIG={self.postfix_config_dir}".encode() if name == "postfix"
                  else None)
        return service_processes(rec[0], rec[1], marker)

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop *name* and all its processes; SIGKILL what is left after 15 s.

        PostgreSQL gets SIGINT for SIGTERM (fast shutdown: a smart one would wait for the
        daemon's pooled connections to go away). For Postfix the signal goes to the
        master process (the recorded leader is postfix-script, which waits for it).
        """
        self._check_name(name)
        rec = self._read_pid(name)
        if rec is None:
            return
        pid = rec[0]
        members = self._members(name)
        if members:
            target = pid
            if name == "postgres" and sig == signal.SIGTERM:
                sig = signal.SIGINT
            if name == "postfix":
                mpid = self._postfix_master_pid()
                if mpid in members:
                    target = mpid
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, sig)
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and self._members(name):
                self._reap(name)
                if not _alive(target):
                    # The main process is gone; its children get at most 2 s more.
                    # (Dovecot's auth, log, anvil and stats processes outlive the
                    # master while Postfix's smtpd holds a SASL connection, and the
                    # auth process keeps the listening socket.)
                    deadline = min(deadline, time.monotonic() + 2.0)
                    for p in self._members(name):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(p, signal.SIGTERM)
                    while time.monotonic() < deadline and self._members(name):
                        time.sleep(0.05)
                    break
                time.sleep(0.05)
        left = self._members(name)
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self._members(name) and time.monotonic() < deadline:
            self._reap(name)
            time.sleep(0.05)
        self._reap(name)
        still = self._members(name)
        if left:
            with open(self.log_paths()[name], "a") as fh:
                fh.write(f"\n===== mailforge sandbox: killed stragglers of {name}: {left}\n")
        if still:
            raise SandboxError(f"sandbox: {name} processes {still} survived SIGKILL")
        self._pidfile(name).unlink(missing_ok=True)

    def _reap(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            self._procs.pop(name, None)

    def _postfix_master_pid(self) -> int | None:
        try:
            return int((self.dir / "postfix/queue/pid/master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # ----- public lifecycle

    def up(self, start_daemon: bool = True) -> dict[str, Any]:
        """Start the stack (only what is not running yet); return the sandbox.json content."""
        t0 = time.monotonic()
        with self._lock():
            self._ensure_info()
            self._save()
            self._changed.clear()
            self._prepare()
            self._apply_changes(start_daemon)
            for name in SERVICES:
                if name == "daemon" and not start_daemon:
                    continue
                self.start_service(name)
            self.info["up_seconds"] = round(time.monotonic() - t0, 2)
            self._save()
        return self.info

    def _apply_changes(self, start_daemon: bool) -> None:
        """A sandbox made by an older mailforge, still running: what _prepare() just
        rewrote takes effect (new listeners, the oauth2 passdb, the daemon's config)."""
        reload = {"postfix": ["postfix", "-c", str(self.postfix_config_dir), "reload"],
                  "dovecot": ["doveadm", "-c", str(self.dovecot_config), "reload"]}
        for name, argv in reload.items():
            if name in self._changed and self.running(name):
                subprocess.run(argv, check=False, capture_output=True)
                self._wait_ready(name, lambda n=name: self._ports_open(*READY_PORTS[n]))
        restart = ["oauth"] + (["daemon"] if start_daemon else [])
        for name in restart:
            if name in self._changed and self.running(name):
                self.stop_service(name)  # started again by up()

    def up_postgres(self) -> dict[str, Any]:
        """Start PostgreSQL alone, for tests of the store and the engine that need no
        mail stack (``tests/db/``); ``down()`` stops it. Returns the sandbox.json content
        (``postgres_dsn``: the ``mailforge`` role, which may create databases)."""
        with self._lock():
            self._ensure_info()
            self._save()
            # The postgres user must traverse the directory (mkdtemp makes it 0700).
            os.chmod(self.dir, 0o711)  # noqa: S103 - traverse only, no listing
            for sub in ("logs", "run"):
                (self.dir / sub).mkdir(exist_ok=True)
            self.start_service("postgres")
        return self.info

    def down(self) -> None:
        """Stop every service this sandbox started (in reverse order); idempotent."""
        with self._lock():
            # Clients first (daemon, then Postfix, which talks to the milter, LMTP, SASL
            # and the sink); the rest in parallel (OpenDKIM alone takes ~4 s to stop);
            # PostgreSQL last.
            self.stop_service("daemon")
            self.stop_service("postfix")
            middle = [n for n in SERVICES if n not in ("daemon", "postfix", "postgres")]
            with ThreadPoolExecutor(len(middle)) as pool:
                for fut in [pool.submit(self.stop_service, n) for n in middle]:
                    fut.result()
            self.stop_service("postgres")
            if self.info:
                self._register_postfix_config_dir(remove=True)

    def leftovers(self) -> dict[str, list[int]]:
        """Live processes of every service with a pid file (after down(): none)."""
        out = {}
        for name in SERVICES:
            members = self._members(name)
            if members:
                out[name] = members
        return out


def main(argv: list[str] | None = None) -> int:
    """``python -m mailforge.sandbox.stack {up,down,render-deploy} ...`` (for development)."""
    import argparse

    p = argparse.ArgumentParser(prog="mailforge.sandbox.stack")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up")
    u.add_argument("--dir", required=True)
    u.add_argument("--no-daemon", action="store_true")
    dn = sub.add_parser("down")
    dn.add_argument("--dir", required=True)
    rd = sub.add_parser("render-deploy", help="rewrite deploy/ snippets from the templates")
    rd.add_argument("--repo", default=str(Path(__file__).resolve().parents[2]))
    args = p.parse_args(argv)
    if args.cmd == "up":
        info = Sandbox(args.dir).up(start_daemon=not args.no_daemon)
        print(json.dumps(info, indent=2))
    elif args.cmd == "down":
        Sandbox(args.dir).down()
    else:
        for path in write_deploy(args.repo):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
