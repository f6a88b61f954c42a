"""Models of event webhooks: registering a receiver, the webhooks of the account and a
webhook's recent deliveries."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from .. import netguard
from .base import Body, Reply
from .common import PageInfo

Event = Literal["message.received", "message.bounced", "message.complained",
                "job.completed", "job.failed", "email_user.connected",
                "email_user.connection_failed"]


class NewWebhook(Body):
    """A receiver for events of every domain of the account. Its URL must reach the
    public internet (or a network the operator allowed); it is checked again at every
    delivery."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"url": "https://hooks.example.com/mailforge", "events": ["message.received"]}]})
    url: Annotated[str, Field(max_length=netguard.MAX_URL,
                              description="The http(s) URL events are POSTed to.",
                              examples=["https://hooks.example.com/mailforge"])]
    events: Annotated[list[Event] | None, Field(
        min_length=1, description="The events to deliver (default: all).",
        examples=[["message.received", "message.bounced"]])] = None


class Webhook(Reply):
    """A registered webhook."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "whk_8d2kq0", "url": "https://hooks.example.com/mailforge",
         "events": ["message.received"], "created_at": "2026-03-22T10:00:00Z"}]})
    id: Annotated[str, Field(description="Its id.", examples=["whk_8d2kq0"])]
    url: Annotated[str, Field(description="Where events go.",
                              examples=["https://hooks.example.com/mailforge"])]
    events: Annotated[list[Event], Field(description="The events it receives.",
                                         examples=[["message.received"]])]
    created_at: Annotated[str, Field(description="When it was registered.",
                                     examples=["2026-03-22T10:00:00Z"])]


class NewWebhookSecret(Webhook):
    """The webhook registered, with its signing secret: shown only here. Each delivery
    carries ``X-Mailforge-Signature: sha256=<hex HMAC-SHA256 of the body>``."""

    secret: Annotated[str, Field(description="The signing secret (shown once).",
                                 examples=["whsec_Zq3k9x0aQmS7"])]


class Webhooks(PageInfo):
    """The account's webhooks, oldest first."""

    webhooks: Annotated[list[Webhook], Field(description="The webhooks of the page.",
                                             examples=[[]])]


class Delivery(Reply):
    """One event sent (or to be sent) to a webhook."""

    id: Annotated[int, Field(description="Its number.", examples=[1042])]
    event_id: Annotated[str, Field(description="The event's id (receivers deduplicate "
                                               "on it).", examples=["evt_in_usr_1:7:42"])]
    event: Annotated[Event, Field(description="The event.", examples=["message.received"])]
    state: Annotated[Literal["pending", "delivered", "failed"], Field(
        description="failed: gave up after the configured attempts.",
        examples=["delivered"])]
    attempts: Annotated[int, Field(description="Attempts made.", examples=[1])]
    last_status: Annotated[int | None, Field(description="The receiver's last HTTP status.",
                                             examples=[204])]
    last_error: Annotated[str | None, Field(description="Why the last attempt failed.",
                                            examples=[None])]
    created_at: Annotated[str, Field(description="When the event happened.",
                                     examples=["2026-03-22T10:00:00Z"])]
    delivered_at: Annotated[str | None, Field(description="When it was delivered.",
                                              examples=["2026-03-22T10:00:01Z"])]
    next_attempt_at: Annotated[str | None, Field(description="When it is tried next.",
                                                 examples=[None])]


class Deliveries(PageInfo):
    """A webhook's deliveries, newest first."""

    deliveries: Annotated[list[Delivery], Field(description="The deliveries of the page.",
                                                examples=[[]])]
