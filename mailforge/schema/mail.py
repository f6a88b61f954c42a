"""Models of mail through the API: sending as a mailbox, a folder's messages, bodies and
attachments, read flags, the sending quota and warm-up, and a domain's reputation.

Recipients (``to``, ``cc``, ``bcc``) are RFC 5322 address lists: a string with one or
several addresses (``Jordan Lee <jordan@company.test>``, ``"Lee, Jordan" <j@x>, k@y``)
or a list with one address per item; each is checked canonically by
``mail/compose.py`` and a bad list item is named (``to[3]: ...``).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..mail import compose
from ..mail.imap import check_folder
from .base import Body, Reply
from .common import Page, PageInfo


def _errors(title: str, problems: list[tuple[tuple[int | str, ...], str]]) -> ValidationError:
    """A validation error with one detail per (location, message): lets one validator
    name the list item or the field that is wrong."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=PydanticCustomError("value_error", "{error}", {"error": msg}),
                         loc=loc, input=None) for loc, msg in problems])


def _recipients(value: Any) -> compose.Recipients:
    if isinstance(value, compose.Recipients):
        return value
    try:
        return compose.recipients(value)
    except compose.AddressErrors as exc:
        raise _errors("recipients", [(() if i is None else (i,), m)
                                     for i, m in exc.problems]) from None


def _message_ids(value: Any) -> tuple[str, ...]:
    return compose.message_ids(value)


def _one_message_id(value: str) -> str:
    ids = compose.message_ids(value)
    if len(ids) != 1:
        raise ValueError("must be a single Message-ID like <id@host>")
    return ids[0]


def _base64(value: str) -> str:
    compose.attachment_data(value)  # decodes, or says why not
    return value


def _started_on(value: str) -> str:
    try:
        date.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date YYYY-MM-DD") from None
    return value


def _folder(value: str) -> str:
    if not check_folder(value):
        raise ValueError("must be a folder name (no quotes, backslashes or wildcards)")
    return value


Recipients = Annotated[compose.Recipients, PlainValidator(_recipients), WithJsonSchema({
    "oneOf": [
        {"type": "string", "maxLength": compose.MAX_ADDRESS_TEXT,
         "description": "One address or an RFC 5322 address list."},
        {"type": "array", "maxItems": compose.MAX_RECIPIENTS,
         "items": {"type": "string"}, "description": "One address per item."}]})]

MessageIds = Annotated[tuple[str, ...], PlainValidator(_message_ids), WithJsonSchema({
    "oneOf": [{"type": "string", "description": "Message-IDs separated by spaces."},
              {"type": "array", "items": {"type": "string"}}]})]


class NewAttachment(Body):
    """A file to attach."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"filename": "offer.pdf", "content_type": "application/pdf",
         "content_base64": "JVBERi0xLjQK"}]})
    filename: Annotated[str, AfterValidator(compose.attachment_filename), Field(
        max_length=255, description="The file name the recipient sees (no / or \\).",
        examples=["offer.pdf"])]
    content_type: Annotated[str, AfterValidator(compose.attachment_type), Field(
        max_length=255, description="Its MIME type.",
        examples=["application/pdf"])] = "application/octet-stream"
    content_base64: Annotated[str, AfterValidator(_base64), Field(
        description="The file's bytes, base64-encoded.", examples=["JVBERi0xLjQK"])]

    def to_attachment(self) -> compose.Attachment:
        return compose.Attachment(self.filename, self.content_type,
                                  compose.attachment_data(self.content_base64))


class SendMessage(Body):
    """A message to send as the mailbox. The body is text, or HTML with ``html: true``
    (a text alternative is derived from it unless ``text`` is given); the mailbox's
    signature is appended. ``in_reply_to`` and ``references`` thread a reply."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"to": "Jordan Lee <jordan@company.test>", "subject": "Re: Quick question",
         "body": "<p>Thanks for the reply, Jordan!</p>", "html": True,
         "in_reply_to": "<reply-xyz@company.test>",
         "references": "<abc123@outreach-acme.test> <reply-xyz@company.test>"}]})
    to: Annotated[Recipients, Field(
        description=f"Recipients: an address, an address list (\"Jordan Lee "
                    f"<jordan@company.test>, k@y.test\") or a list of addresses; at most "
                    f"{compose.MAX_RECIPIENTS} in to, cc and bcc together.",
        examples=["Jordan Lee <jordan@company.test>"])]
    cc: Annotated[Recipients | None, Field(
        description="Copy recipients, in the same forms as to.",
        examples=[["carol@company.test"]])] = None
    bcc: Annotated[Recipients | None, Field(
        description="Blind copy recipients (only the Sent copy shows them).",
        examples=[["archive@my.test"]])] = None
    subject: Annotated[str, AfterValidator(compose.one_line), Field(
        max_length=compose.MAX_SUBJECT, description="The subject line.",
        examples=["Quick question about your Q2 roadmap"])] = ""
    body: Annotated[str, Field(description="The text, or the HTML with html: true.",
                               examples=["<p>Hi Jordan,</p>"])] = ""
    html: Annotated[bool, Field(description="The body is HTML.", examples=[True])] = False
    text: Annotated[str | None, Field(
        description="The plain-text alternative of an HTML body (derived when left out).",
        examples=["Hi Jordan,"])] = None
    in_reply_to: Annotated[Annotated[str, Field(max_length=500),
                                     AfterValidator(_one_message_id)] | None, Field(
        description="The Message-ID this message answers.",
        examples=["<reply-xyz@company.test>"])] = None
    references: Annotated[MessageIds | None, Field(
        description="The thread's Message-IDs (in_reply_to is added to them).",
        examples=["<abc123@outreach-acme.test> <reply-xyz@company.test>"])] = None
    attachments: Annotated[Annotated[list[NewAttachment],
                                     Field(max_length=compose.MAX_ATTACHMENTS)] | None, Field(
        description="Files to attach.",
        examples=[[{"filename": "offer.pdf", "content_type": "application/pdf",
                    "content_base64": "JVBERi0xLjQK"}]])] = None

    @model_validator(mode="after")
    def _count(self) -> SendMessage:
        if not self.to.addresses:
            raise _errors("SendMessage", [(("to",), "must name at least one recipient")])
        n = sum(len(r.addresses) for r in (self.to, self.cc, self.bcc) if r is not None)
        if n > compose.MAX_RECIPIENTS:
            raise _errors("SendMessage", [(("to",), f"at most {compose.MAX_RECIPIENTS} "
                                                    "recipients in to, cc and bcc together")])
        return self

    def to_request(self) -> compose.SendRequest:
        cc = self.cc or compose.Recipients()
        bcc = self.bcc or compose.Recipients()
        # Bcc names are dropped: the only header Bcc appears in is the sender's Sent copy.
        names = dict(cc.names) | dict(self.to.names)
        return compose.SendRequest(
            to=self.to.addresses, cc=cc.addresses, bcc=bcc.addresses, subject=self.subject,
            body=self.body, is_html=self.html, text=self.text, in_reply_to=self.in_reply_to,
            references=self.references or (),
            attachments=tuple(a.to_attachment() for a in self.attachments or ()),
            names=tuple(sorted(names.items())))


class Sent(Reply):
    """Accepted by the mail server (DKIM-signed on the way out); a copy is in Sent."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"message_id": "<Zq3k9x0aQmS7@outreach-acme.test>", "status": "sent",
         "remaining": 49}]})
    message_id: Annotated[str, Field(description="The Message-ID of the message sent.",
                                     examples=["<Zq3k9x0aQmS7@outreach-acme.test>"])]
    status: Annotated[Literal["sent"], Field(description="Always sent.",
                                             examples=["sent"])]
    remaining: Annotated[int, Field(description="Messages the mailbox may still send "
                                                "today.", examples=[49])]
    refused: Annotated[list[str] | None, Field(
        description="Recipients the mail server refused (the others got the message).",
        examples=[["gone@company.test"]])] = None


# ------------------------------------------------------------------ reading


class InboxQuery(Page):
    """Which folder and which of its messages."""

    folder: Annotated[str, AfterValidator(_folder), Field(
        max_length=200, description="The folder (INBOX, Sent, ...).",
        examples=["INBOX"])] = "INBOX"
    unread: Annotated[bool, Field(description="Only unread messages.",
                                  examples=[False])] = False


class Message(Reply):
    """A message of a folder, as its headers say."""

    model_config = ConfigDict(populate_by_name=True)
    uid: Annotated[str, Field(
        description="Its id, the same as id (the name integrations written for the hosted "
                    "API use in /v1/inbox/{uid}/body).", examples=["msg_3kQ0p1rX8v"])]
    imap_uid: Annotated[int, Field(description="Its IMAP UID in the folder.",
                                   examples=[42])]
    id: Annotated[str, Field(description="Its id for the /v1/inbox/{msg_id} calls.",
                             examples=["msg_3kQ0p1rX8v"])]
    message_id: Annotated[str | None, Field(description="Its Message-ID header.",
                                            examples=["<reply-xyz@company.test>"])]
    from_: Annotated[str | None, Field(
        alias="from", description="The From header, as sent: fit to pass to send's to.",
        examples=["Jordan Lee <jordan@company.test>"])]
    to: Annotated[list[str], Field(description="The To addresses.",
                                   examples=[["me@outreach-acme.test"]])]
    cc: Annotated[list[str], Field(description="The Cc addresses.", examples=[[]])]
    subject: Annotated[str, Field(description="The subject.",
                                  examples=["Re: Quick question"])]
    date: Annotated[str | None, Field(description="When it was sent (RFC 3339).",
                                      examples=["2026-03-22T10:00:00Z"])]
    is_read: Annotated[bool, Field(description="Marked read.", examples=[False])]
    in_reply_to: Annotated[str | None, Field(description="The Message-ID it answers.",
                                             examples=["<abc123@outreach-acme.test>"])]
    references: Annotated[list[str], Field(description="The thread's Message-IDs.",
                                           examples=[["<abc123@outreach-acme.test>"]])]
    has_attachments: Annotated[bool, Field(description="It has attachments.",
                                           examples=[False])]


class Messages(PageInfo):
    """A page of a folder's messages, newest first."""

    messages: Annotated[list[Message], Field(description="The messages of the page.",
                                             examples=[[]])]
    folder: Annotated[str, Field(description="The folder listed.", examples=["INBOX"])]


class MessageBody(Reply):
    """A message's body, decoded from any charset and transfer encoding."""

    id: Annotated[str, Field(description="The message's id.", examples=["msg_3kQ0p1rX8v"])]
    body: Annotated[str, Field(description="The text body, else the HTML one.",
                               examples=["Sure, let's talk on Tuesday."])]
    text: Annotated[str | None, Field(description="The text/plain body.",
                                      examples=["Sure, let's talk on Tuesday."])]
    html: Annotated[str | None, Field(description="The text/html body.",
                                      examples=[None])]
    subject: Annotated[str | None, Field(description="The subject.",
                                         examples=["Re: Quick question"])]
    message_id: Annotated[str | None, Field(description="Its Message-ID header.",
                                            examples=["<reply-xyz@company.test>"])]


class AttachmentInfo(Reply):
    """One attachment of a message."""

    index: Annotated[int, Field(description="Its place (for .../attachments/{n}).",
                                examples=[0])]
    filename: Annotated[str, Field(description="Its file name.", examples=["offer.pdf"])]
    content_type: Annotated[str, Field(description="Its MIME type.",
                                       examples=["application/pdf"])]
    size: Annotated[int, Field(description="Its size in bytes, decoded.", examples=[5120])]
    url: Annotated[str, Field(description="Where to download it.",
                              examples=["/v1/inbox/msg_3kQ0p1rX8v/attachments/0"])]


class Attachments(Reply):
    """A message's attachments, in order."""

    attachments: Annotated[list[AttachmentInfo], Field(description="The attachments.",
                                                       examples=[[]])]


class Marked(Reply):
    """The message's read flag as set."""

    id: Annotated[str, Field(description="The message's id.", examples=["msg_3kQ0p1rX8v"])]
    is_read: Annotated[bool, Field(description="Marked read.", examples=[True])]


# ------------------------------------------------------------------ quota and warm-up


class NewWarmup(Body):
    """A warm-up: the limit starts at start_limit and rises linearly to the daily limit
    over days. A field left out takes the server's default."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"start_limit": 10, "days": 30, "started_on": "2026-03-22"}]})
    start_limit: Annotated[int | None, Field(ge=1, le=10_000, description="The limit on "
                                             "the first day.", examples=[10])] = None
    days: Annotated[int | None, Field(ge=1, le=365, description="Days to reach the daily "
                                      "limit.", examples=[30])] = None
    started_on: Annotated[Annotated[str, AfterValidator(_started_on),
                                    Field(json_schema_extra={"format": "date"})] | None, Field(
        description="The first day (default today).", examples=["2026-03-22"])] = None


class SendingSettings(Body):
    """The fields given change; the others stay as they are."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"daily_send_limit": 200, "warmup": {"start_limit": 10, "days": 30}}]})
    daily_send_limit: Annotated[int | None, Field(
        ge=0, le=1_000_000, description="Messages a day; null: the server's default.",
        examples=[200])] = None
    warmup: Annotated[NewWarmup | None, Field(
        description="The warm-up; null: none.",
        examples=[{"start_limit": 10, "days": 30}])] = None


class Warmup(Reply):
    """A warm-up schedule."""

    start_limit: Annotated[int, Field(description="The limit on the first day.",
                                      examples=[10])]
    days: Annotated[int, Field(description="Days to reach the daily limit.", examples=[30])]
    started_on: Annotated[str, Field(description="The first day.",
                                     examples=["2026-03-22"])]


class Quota(Reply):
    """A mailbox's daily send limit, warm-up and today's count."""

    daily_send_limit: Annotated[int | None, Field(
        description="Its own limit; null: the server's default.", examples=[200])]
    default_daily_limit: Annotated[int, Field(description="The server's default limit.",
                                              examples=[50])]
    effective_limit: Annotated[int, Field(description="Today's limit (warm-up applied).",
                                          examples=[17])]
    sent_today: Annotated[int, Field(description="Messages sent today (API and SMTP).",
                                     examples=[3])]
    remaining: Annotated[int, Field(description="Messages it may still send today.",
                                    examples=[14])]
    resets_at: Annotated[str, Field(description="When the count starts over (00:00 UTC).",
                                    examples=["2026-03-23T00:00:00Z"])]
    warmup: Annotated[Warmup | None, Field(description="The warm-up, if any.",
                                           examples=[None])]


class DomainReputation(Reply):
    """A domain's sending reputation over the window."""

    domain_id: Annotated[str, Field(description="The domain's id.", examples=["dom_4f2k"])]
    domain: Annotated[str, Field(description="Its name.", examples=["outreach-acme.test"])]
    status: Annotated[Literal["healthy", "watch", "blocked"], Field(
        description="blocked refuses sends and new mailboxes.", examples=["healthy"])]
    window_days: Annotated[int, Field(description="The window, in days.", examples=[30])]
    sent: Annotated[int, Field(description="Messages sent in the window.", examples=[1200])]
    bounces: Annotated[int, Field(description="Bounces counted in the window.",
                                  examples=[4])]
    complaints: Annotated[int, Field(description="Complaints counted in the window.",
                                     examples=[0])]
    bounce_rate: Annotated[float, Field(description="Bounces per message sent.",
                                        examples=[0.0033])]
    complaint_rate: Annotated[float, Field(description="Complaints per message sent.",
                                           examples=[0.0])]
