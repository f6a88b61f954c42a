"""The demo behind scripts/demo: the main job of mailforge, end to end, on the sandbox."""

from __future__ import annotations

import argparse
import imaplib
import json
import secrets
import smtplib
import sys
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailforge.sandbox import Sandbox


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_job(self, job_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, job = self.call("GET", f"/v1/jobs/{job_id}")
            if job["status"] in ("completed", "failed"):
                return dict(job)
            time.sleep(0.05)
        raise SystemExit(f"job {job_id} did not finish")


def step(text: str) -> None:
    print(f"\n== {text}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    args = ap.parse_args()
    t0 = time.monotonic()
    step(f"sandbox up in {args.dir}")
    info = Sandbox(args.dir).up()
    print(f"api {info['api_url']}  smtp {info['smtp']['port']}  imap {info['imap']['port']}"
          f"  dns {info['dns']['port']}  ({time.monotonic() - t0:.1f}s)")
    api = Api(info["api_url"], info["admin_token"])

    domain = f"demo-{secrets.token_hex(3)}.test"
    step(f"connect and set up {domain}")
    status, body = api.call("POST", "/v1/domains/connect", {"domains": [domain]})
    print(status, json.dumps(body["domains"][0], indent=None)[:200])
    t = time.monotonic()
    status, body = api.call("POST", "/v1/domains/setup", {"domain": domain})
    job = api.wait_job(body["job_id"])
    print(f"setup job {job['status']} in {1000 * (time.monotonic() - t):.0f} ms")

    step("create three mailboxes")
    users = []
    for name, full in (("sarah.chen", "Sarah Chen"), ("james.r", "James Rivera"),
                       ("ops", "Operations")):
        t = time.monotonic()
        status, user = api.call("POST", "/v1/email-users",
                                {"domain": domain, "username": name, "name": full})
        job = api.wait_job(user["job_id"])
        users.append(user)
        print(f"{user['email']:<32} job {job['status']} in "
              f"{1000 * (time.monotonic() - t):.0f} ms; password shown once: "
              f"{user['password'][:4]}...")

    step("deliver a message by SMTP to the first mailbox")
    rcpt = users[0]["email"]
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "partner@outside.test", rcpt, "Hello from SMTP"
    msg.set_content("Delivered by Postfix to Dovecot through mailforge's maps.")
    with smtplib.SMTP(info["smtp"]["host"], info["smtp"]["port"], timeout=10) as s:
        s.send_message(msg)
        print("accepted by Postfix")
        s.ehlo()
        s.mail("partner@outside.test")
        code, text = s.rcpt(f"nobody@{domain}")
        print(f"unknown address nobody@{domain}: {code} {text.decode()}")

    step("read it back over IMAP with the mailbox's password")
    deadline = time.monotonic() + 10
    while True:
        with imaplib.IMAP4(info["imap"]["host"], info["imap"]["port"]) as im:
            im.login(rcpt, users[0]["password"])
            im.select("INBOX", readonly=True)
            _, data = im.search(None, "ALL")
            if data[0].split():
                _, parts = im.fetch(data[0].split()[-1], "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
                first = parts[0]
                subject = first[1].decode().strip() if isinstance(first, tuple) else ""
                print(f"{rcpt}: {len(data[0].split())} message(s); {subject}")
                break
        if time.monotonic() > deadline:
            print("message not delivered in 10 s", file=sys.stderr)
            return 1
        time.sleep(0.1)

    step("done")
    print(f"total {time.monotonic() - t0:.1f}s. The sandbox is still running; logs in "
          f"{args.dir}/logs. Stop it with: .venv/bin/mailforge sandbox down --dir {args.dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
