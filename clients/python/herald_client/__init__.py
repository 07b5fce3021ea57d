"""A typed client for Herald's server API: publish, broadcast, send to a
user, history, presence, disconnect, devices and notifications — and client
tokens for apps that share Herald's HS256 secret.

    from herald_client import Herald

    with Herald("http://127.0.0.1:8080", api_key="herald-dev-key") as herald:
        herald.publish("chat:lobby", {"text": "hello"})
"""

from ._types import (
    BAD_REQUEST,
    LIMIT_EXCEEDED,
    OUTCOME_UNKNOWN,
    PERMISSION_DENIED,
    TOKEN_EXPIRED,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    UNAVAILABLE,
    UNKNOWN_CHANNEL,
    UNRECOVERABLE,
    BroadcastResult,
    DeliveryState,
    Device,
    DeviceStatus,
    Environment,
    HeraldError,
    History,
    JsonValue,
    Notification,
    NotifyOutcome,
    Platform,
    Publication,
    Published,
    SendResult,
    Sent,
    WebPushKeys,
    WebPushSubscription,
)
from .client import AsyncHerald, Herald, __version__
from .token import mint_token

__all__ = [
    "BAD_REQUEST",
    "LIMIT_EXCEEDED",
    "OUTCOME_UNKNOWN",
    "PERMISSION_DENIED",
    "TOKEN_EXPIRED",
    "TOO_MANY_REQUESTS",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "UNKNOWN_CHANNEL",
    "UNRECOVERABLE",
    "AsyncHerald",
    "BroadcastResult",
    "DeliveryState",
    "Device",
    "DeviceStatus",
    "Environment",
    "Herald",
    "HeraldError",
    "History",
    "JsonValue",
    "Notification",
    "NotifyOutcome",
    "Platform",
    "Publication",
    "Published",
    "SendResult",
    "Sent",
    "WebPushKeys",
    "WebPushSubscription",
    "__version__",
    "mint_token",
]
