"""Pure parts of issue 6: composing and reading messages, limits and warm-up, opaque
message ids, policy requests, reputation thresholds and webhook signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, date, datetime
from typing import Any

import pytest

from mailforge import reputation, secretbox, webhooks
from mailforge.config import Config, ReputationConfig, WebhookConfig
from mailforge.errors import ValidationFailed
from mailforge.mail import compose, limits, policy
from mailforge.mail.imap import check_folder, parse_fetch
from mailforge.mail.msgid import MessageIds, MessageRef
from mailforge.schema.base import validate
from mailforge.schema.mail import SendMessage


def parse_send(data: dict[str, Any]) -> tuple[compose.SendRequest | None, list[str]]:
    """A send request body as the API validates it (``schema.mail.SendMessage``): the
    request, or the error details."""
    try:
        return validate(SendMessage, data, Config()).to_request(), []
    except ValidationFailed as exc:
        return None, exc.details


def _box() -> secretbox.SecretBox:
    return secretbox.SecretBox(b"k" * 32)


def test_parse_send_names_every_bad_field() -> None:
    req, errs = parse_send({
        "to": ["ok@example.com", "not an address"], "cc": 5, "subject": "a\nb",
        "html": "yes", "in_reply_to": "nope", "extra": 1,
        "attachments": [{"filename": "../x", "content_base64": "!!"}]})
    assert req is None
    text = "\n".join(errs)
    for field in ("to[1]", "cc:", "subject:", "html:", "in_reply_to:", "extra: unknown",
                  "attachments[0].filename", "attachments[0].content_base64"):
        assert field in text, (field, errs)
    _req, errs = parse_send({"subject": "x"})
    assert "to: is required" in errs


def test_compose_html_only_gets_a_text_part_threading_and_signature() -> None:
    req, errs = parse_send({
        "to": "a@example.com", "bcc": ["hidden@example.com"], "subject": "Hi",
        "body": "<p>Hello <b>world</b></p><script>x()</script>", "html": True,
        "in_reply_to": "<p1@example.com>", "references": "<p0@example.com>",
        "attachments": [{"filename": "f.bin", "content_type": "application/octet-stream",
                         "content_base64": base64.b64encode(b"\x00\xff").decode()}]})
    assert not errs and req is not None
    msg = compose.compose(req, "me@my.example", "Me Myself", "Me\nACME", "my.example")
    assert msg["Message-ID"].endswith("@my.example>")
    assert msg["In-Reply-To"] == "<p1@example.com>"
    assert msg["References"] == "<p0@example.com> <p1@example.com>"
    assert "Bcc" not in msg and "hidden" not in msg.as_string()
    parsed = compose.parse(msg.as_bytes())
    text, html = compose.bodies(parsed)
    assert text is not None and "Hello world" in text and "x()" not in text
    assert text.rstrip().endswith("Me\nACME")
    assert html is not None and "<b>world</b>" in html
    assert compose.attachments(parsed) == [("f.bin", "application/octet-stream", b"\x00\xff")]
    assert req.recipients == ["a@example.com", "hidden@example.com"]


def test_bodies_decode_latin1_quoted_printable() -> None:
    raw = (b"From: x@example.com\r\nSubject: =?iso-8859-1?q?R=E9sum=E9?=\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n<p>Caf=E9 cr=E8me</p>\r\n")
    msg = compose.parse(raw)
    _text, html = compose.bodies(msg)
    assert html == "<p>Caf\u00e9 cr\u00e8me</p>\n"
    assert str(msg["Subject"]) == "R\u00e9sum\u00e9"


def test_classify_reports() -> None:
    def report(rt: str, part: str, body: str) -> bytes:
        return (f'Content-Type: multipart/report; report-type={rt}; boundary="b"\r\n\r\n'
                f"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b\r\nContent-Type: {part}\r\n"
                f"\r\n{body}\r\n--b--\r\n").encode()
    failed = report("delivery-status", "message/delivery-status",
                    "Reporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\n"
                    "Action: failed\r\nStatus: 5.1.1")
    delayed = failed.replace(b"Action: failed", b"Action: delayed")
    arf = report("feedback-report", "message/feedback-report", "Feedback-Type: abuse")
    assert compose.classify_report(compose.parse(failed)) == "bounce"
    assert compose.classify_report(compose.parse(delayed)) is None
    assert compose.classify_report(compose.parse(arf)) == "complaint"
    assert compose.classify_report(compose.parse(b"Subject: hi\r\n\r\nx")) is None


def test_warmup_ramps_linearly_to_the_target() -> None:
    w = limits.Warmup(5, 14, date(2026, 1, 1))
    assert limits.warmup_limit(50, w, date(2026, 1, 1)) == 5
    assert 5 < limits.warmup_limit(50, w, date(2026, 1, 8)) < 50
    assert limits.warmup_limit(50, w, date(2026, 1, 15)) == 50
    assert limits.warmup_limit(3, w, date(2026, 1, 1)) == 3  # target below the start
    assert limits.effective_limit(None, 500, None, date(2026, 1, 1)) == 500
    days = [limits.warmup_limit(50, w, date(2026, 1, d)) for d in range(1, 16)]
    assert days == sorted(days)


def test_seconds_until_reset() -> None:
    now = datetime(2026, 1, 1, 23, 59, 0, tzinfo=UTC)
    assert 60 <= limits.seconds_until_reset(now) <= 61


def test_message_ids_are_deterministic_opaque_and_unforgeable() -> None:
    ids = MessageIds(_box())
    ref = MessageRef("usr_abc", "INBOX", 123, 7)
    a = ids.encode(ref)
    assert a == ids.encode(ref) and a.startswith("msg_") and "usr_abc" not in a
    assert ids.decode(a) == ref
    tampered = a[:-2] + ("A" if a[-2] != "A" else "B") + a[-1]
    assert ids.decode(tampered) is None
    assert ids.decode("msg_" + "A" * 40) is None
    assert MessageIds(secretbox.SecretBox(b"x" * 32)).decode(a) is None


def test_policy_request_parsing_and_defer_text() -> None:
    req = policy.parse_request([b"request=smtpd_access_policy\n",
                                b"protocol_state=RCPT\n", b"sasl_username=a@b.example\n",
                                b"garbage\n"])
    assert req == {"request": "smtpd_access_policy", "protocol_state": "RCPT",
                   "sasl_username": "a@b.example"}
    assert policy.defer_text(3).startswith("451 4.7.1 ")


def test_reputation_thresholds() -> None:
    cfg = ReputationConfig()
    assert reputation.assess(0, 0, 0, cfg).status == "healthy"
    assert reputation.assess(1000, 40, 0, cfg).status == "watch"
    assert reputation.assess(1000, 80, 0, cfg).status == "blocked"
    assert reputation.assess(10, 1, 0, cfg).status == "watch"  # 1 / min_volume 20
    assert reputation.assess(10000, 0, 30, cfg).status == "blocked"


def test_webhook_signature_and_backoff() -> None:
    body = b'{"id":"evt_1"}'
    sig = webhooks.sign("whsec_x", body)
    assert sig == "sha256=" + hmac.new(b"whsec_x", body, hashlib.sha256).hexdigest()
    cfg = WebhookConfig(retry_base_seconds=5, retry_max_seconds=60)
    assert 4 <= webhooks.backoff(1, cfg) <= 6
    assert webhooks.backoff(20, cfg) <= 72


@pytest.mark.parametrize("name,ok", [("INBOX", True), ("Sent", True), ('a"b', False),
                                     ("a*", False), ("", False)])
def test_folder_names(name: str, ok: bool) -> None:
    assert check_folder(name) is ok


def test_parse_fetch_splits_messages_and_literals() -> None:
    lines = [b'1 FETCH (UID 5 FLAGS (\\Seen) BODY[HEADER.FIELDS (SUBJECT)] {15}',
             bytearray(b"Subject: hi\r\n\r\n"), b")",
             b"2 FETCH (UID 6 FLAGS () BODY[HEADER.FIELDS (SUBJECT)] {4}",
             bytearray(b"\r\n\r\n"), b")", b"Fetch completed."]
    out = parse_fetch(lines)
    assert [t.split()[3] for t, _ in out] == ["5", "6"]
    assert out[0][1][0][1] == b"Subject: hi\r\n\r\n"
    assert "HEADER.FIELDS" in out[0][1][0][0]


@pytest.mark.parametrize("value", ["bob\n@example.com", "bo\rb@example.com", "bob@exa\nmple.com",
                                   "bob\u2028@example.com", "bob\x00@example.com"])
def test_recipient_refuses_line_breaks_and_controls(value: str) -> None:
    # A final newline passes a ``$``-anchored pattern: it would reach the To header and RCPT.
    with pytest.raises(ValueError):
        compose.recipient(value)


def test_recipient_canonical_form_has_no_whitespace() -> None:
    assert compose.recipient(" Bob@Example.COM\n") == "Bob@example.com"


@pytest.mark.parametrize("name", ["INBOX\n", "Sent\r\nA1 LOGOUT", "a\"b", "a\\b", "*", "50%",
                                  "caf\u00e9", "x\x00", "\ud800"])
def test_check_folder_refuses_injection_and_non_ascii(name: str) -> None:
    assert not check_folder(name)


def test_check_folder_accepts_plain_names() -> None:
    assert check_folder("INBOX") and check_folder("Sent Items") and check_folder("Archive/2026")


def test_message_ids_and_content_types_match_in_full() -> None:
    ok, errs = parse_send({"to": ["a@example.com"], "subject": "s", "body": "t",
                                   "in_reply_to": "<a@b.test>"})
    assert ok is not None and not errs
    for field, value in (("in_reply_to", "<a@b.test>\nBcc: x@evil.test"),
                         ("attachments", [{"filename": "a.txt", "content_base64": "eA==",
                                           "content_type": "text/plain\n"}])):
        req, errs = parse_send({"to": ["a@example.com"], "subject": "s", "body": "t",
                                        field: value})
        assert req is None and any(e.startswith(field) for e in errs), (field, errs)
