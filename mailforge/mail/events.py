"""Delivery events from Dovecot: the mail itself tells the inbound scanner which mailbox
to look at, instead of the scanner polling mailboxes.

Dovecot 2.3's event exporter (the ``stats`` process) posts every
``mail_delivery_finished`` event (one per recipient an LMTP delivery saved into a
mailbox, emitted after the save committed) as JSON to this module's listener; the event's
``fields.user`` is the mailbox's login, which is its address. The Dovecot side is a
config file mailforge writes (:func:`render_dovecot_conf`, included by
``deploy/dovecot/mailforge.conf`` with ``!include_try``), so the URL, its port and the
credential are mailforge's own. See "How inbound mail is observed" in ``docs/mail.md``
for why this path and not ``push_notification`` or a Sieve hook.

Who may post: the listener binds a loopback address only (config validation refuses
any other) and every request must carry HTTP Basic credentials whose password is a
secret derived from the master key (:func:`event_secret`), compared in constant time;
anything else is a 401 before the body is read. Even an accepted event only asks for
a scan of a mailbox of this host, which finds nothing new unless mail arrived: a forged
event is at most a harmless scan. Bodies are bounded (``MAX_BODY``) and events are
coalesced per mailbox by the scanner, with a bound on how many wait.
"""

from __future__ import annotations

import base64
import binascii
import grp
import hmac
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from ..atomic import write_if_changed
from ..config import Config
from ..log import get
from ..secretbox import SecretBox

log = get(__name__)

# One event is a few hundred bytes (the subject is in it); anything near this is not
# from Dovecot.
MAX_BODY = 64 * 1024
EVENT_USER = "mailforge"
EVENT_PATH = "/dovecot/events"
DELIVERY_EVENT = "mail_delivery_finished"
# An address longer than this is no mailbox's (RFC 5321: 254 in a path).
MAX_ADDRESS = 320


def event_secret(box: SecretBox) -> str:
    """The password Dovecot's exporter sends (derived from the master key: the same in
    every process and across restarts, so Dovecot's config never needs rewriting)."""
    return base64.urlsafe_b64encode(box.derive("dovecot-delivery-events")).decode() \
        .rstrip("=")


def conf_path(cfg: Config) -> Path:
    if cfg.mail.events_conf_file:
        return Path(cfg.mail.events_conf_file)
    return Path(cfg.backend.postfix_dovecot.state_dir) / "dovecot" / "events.conf"


def render_dovecot_conf(listen: str, port: int, secret: str) -> str:
    """The exporter and metric blocks Dovecot includes (``!include_try``)."""
    host = f"[{listen}]" if ":" in listen else listen
    return (
        "# Written by mailforge (mail/events.py); do not edit: it is rewritten when the\n"
        "# events listener (mail.events_listen, mail.events_port) or the master key\n"
        "# changes. Dovecot's stats process posts each finished delivery to mailforge,\n"
        "# which scans that mailbox (webhooks, DSNs, ARF reports).\n"
        "event_exporter mailforge {\n"
        "  format = json\n"
        "  # The json format requires a time format, even with timestamps left out.\n"
        "  format_args = time-unix\n"
        "  transport = http-post\n"
        f"  transport_args = http://{EVENT_USER}:{secret}@{host}:{port}{EVENT_PATH}\n"
        "  # Delivery never waits on this: the stats process posts asynchronously.\n"
        "  transport_timeout = 5sec\n"
        "}\n"
        "metric mailforge_delivery {\n"
        "  exporter = mailforge\n"
        "  # Only the name and fields (fields.user is the mailbox).\n"
        "  exporter_include = name fields\n"
        f"  filter = event={DELIVERY_EVENT}\n"
        "}\n")


def write_dovecot_conf(cfg: Config, box: SecretBox) -> bool:
    """Write the Dovecot include for the configured listener (0640, Dovecot's group:
    it holds the credential); True when its content changed (Dovecot must reload)."""
    m = cfg.mail
    if not m.events_port:
        text = "# mailforge: delivery events are off (mail.events_port is 0).\n"
    else:
        text = render_dovecot_conf(m.events_listen, m.events_port, event_secret(box))
    try:
        gid: int | None = grp.getgrnam(cfg.backend.postfix_dovecot.auth_group).gr_gid
    except KeyError:
        gid = None
    return write_if_changed(conf_path(cfg), text.encode(), mode=0o640, group=gid)


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def authorized(header: str | None, secret: str) -> bool:
    """Whether an Authorization header carries the event credential (constant time)."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = raw.partition(b":")
    ok_user = hmac.compare_digest(user, EVENT_USER.encode())
    ok_password = hmac.compare_digest(password, secret.encode())
    return bool(sep) and ok_user and ok_password


def delivered_to(body: bytes) -> str | None:
    """The mailbox a ``mail_delivery_finished`` event names, lowercased; None for any
    other event, a failed delivery (``fields.error``) or anything malformed."""
    try:
        ev = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(ev, dict) or ev.get("event") != DELIVERY_EVENT:
        return None
    fields = ev.get("fields")
    if not isinstance(fields, dict) or "error" in fields:
        return None
    user = fields.get("user")
    if not isinstance(user, str) or not 3 <= len(user) <= MAX_ADDRESS or "@" not in user \
            or any(ord(c) < 33 or c == "*" for c in user):
        return None
    return user.lower()


class EventListener:
    """The loopback HTTP endpoint Dovecot posts delivery events to; *notify* gets the
    mailbox address of each accepted event (it must not block)."""

    def __init__(self, cfg: Config, box: SecretBox, notify: Callable[[str], None]) -> None:
        self.cfg = cfg
        self._secret = event_secret(box)
        self._notify = notify
        self._runner: web.AppRunner | None = None
        self.accepted = 0
        self.refused = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(EVENT_PATH, self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        # The credential first: a stranger's request is refused before its body is read.
        if not authorized(request.headers.get("Authorization"), self._secret):
            self.refused += 1
            return web.Response(status=401)
        if (request.content_length or 0) > MAX_BODY:
            self.refused += 1
            return web.Response(status=413)
        address = delivered_to(await request.read())
        if address is not None:
            self.accepted += 1
            self._notify(address)
        # Anything else from Dovecot (another event, a failed delivery) is not an error
        # Dovecot could fix: answered 204 like the rest, so its log stays quiet.
        return web.Response(status=204)

    async def start(self) -> None:
        m = self.cfg.mail
        if not m.events_port:
            return
        if not is_loopback(m.events_listen):  # config validation refuses it already
            raise ValueError("mail.events_listen must be a loopback address")
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, m.events_listen, m.events_port,
                              reuse_address=True).start()
        except OSError as exc:
            # The sweep still finds new mail; the rest of the daemon is useful: go on.
            log.error("delivery events listener cannot listen; only the sweep observes "
                      "inbound mail", address=f"{m.events_listen}:{m.events_port}",
                      error=str(exc))
            await runner.cleanup()
            return
        self._runner = runner
        log.info("delivery events listening", address=f"{m.events_listen}:{m.events_port}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
