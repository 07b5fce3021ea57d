"""What the client sends (TypedDicts you can write as dict literals), what
Herald answers (frozen dataclasses), and the one error."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Union

# ---------------------------------------------------------------- sent

#: One JSON document: what `data` may be.
JsonValue = Union[None, bool, int, float, str, Sequence["JsonValue"], Mapping[str, "JsonValue"]]


class _NotificationFields(TypedDict):
    title: str
    body: str


class Notification(_NotificationFields, total=False):
    """What a device shows: ``{"title": …, "body": …}``, optionally a
    ``collapse_key`` (alerts with one key replace each other on the device
    and are coalesced by Herald). Title and body: at most 1024 bytes each."""

    collapse_key: str


class WebPushKeys(TypedDict):
    p256dh: str
    auth: str


class _WebPushFields(TypedDict):
    endpoint: str
    keys: WebPushKeys


class WebPushSubscription(_WebPushFields, total=False):
    """A browser's ``PushSubscription.toJSON()``, as it gives it."""

    expirationTime: Any


Platform = Literal["apns", "fcm", "webpush"]
Environment = Literal["sandbox", "production"]

# ---------------------------------------------------------------- answers

#: How `send` reached the user: connected (``online``), a push queued
#: (``pushed``), offline with no device (``no_devices``), or presence did not
#: answer in time (``unknown``: delivered live to any connection, no push).
SendResult = Literal["online", "pushed", "no_devices", "unknown"]
#: Where a push stands on one device.
DeliveryState = Literal["pending", "sent", "retrying", "failed"]


@dataclass(frozen=True)
class NotifyOutcome:
    """Who of a publish's ``notify_offline`` got what."""

    online: list[str]
    pushed: list[str]
    unknown: list[str]
    no_devices: list[str]


@dataclass(frozen=True)
class Published:
    """Where a publication was stored; ``notify`` only when
    ``notify_offline`` named users."""

    offset: int
    epoch: str
    notify: NotifyOutcome | None = None


@dataclass(frozen=True)
class BroadcastResult:
    """Where a broadcast's publication went in one of its channels."""

    channel: str
    offset: int
    epoch: str


@dataclass(frozen=True)
class Sent:
    """The answer to `send`."""

    result: SendResult


@dataclass(frozen=True)
class Publication:
    """One stored publication. ``from_`` is the publishing user (absent for
    publications made through the server API); ``ts`` Unix milliseconds."""

    offset: int
    data: Any
    ts: int
    from_: str | None = None


@dataclass(frozen=True)
class History:
    """A channel's history after a position.

    ``recovered`` is true when every publication after the position asked
    is in ``publications`` (at most ``limit`` of them). When false the
    position is gone (too old, or another epoch): ``publications`` is empty
    and ``offset``/``epoch`` are where the channel is now — load your state
    afresh and continue from there. ``offset``/``epoch`` are always the
    channel's latest position, not the last publication returned."""

    publications: list[Publication]
    offset: int
    epoch: str
    recovered: bool = True


@dataclass(frozen=True)
class Device:
    """A registered device. ``token`` is the APNs/FCM token or the Web Push
    endpoint; times are Unix milliseconds."""

    id: str
    user: str
    platform: Platform
    token: str
    app: str
    environment: Environment
    created_ms: int
    updated_ms: int
    last_seen_ms: int
    p256dh: str | None = None
    auth: str | None = None
    locale: str | None = None


@dataclass(frozen=True)
class DeviceStatus:
    """Where one notification stands on one device."""

    device_id: str
    platform: str
    state: DeliveryState
    reason: str
    attempts: int
    updated_ms: int


# ---------------------------------------------------------------- errors

#: Herald's error codes (the same numbers over HTTP, gRPC and WebSocket).
BAD_REQUEST = 100
UNAUTHORIZED = 101
PERMISSION_DENIED = 103
UNKNOWN_CHANNEL = 104
LIMIT_EXCEEDED = 106
TOO_MANY_REQUESTS = 107
TOKEN_EXPIRED = 109
UNRECOVERABLE = 110
OUTCOME_UNKNOWN = 111
UNAVAILABLE = 500


class HeraldError(Exception):
    """Herald refused or could not do a request.

    ``code`` is Herald's error code (100 bad request, 101 wrong API key, 103,
    104 unknown namespace or device, 106 over a limit, 110, 111 outcome
    unknown, 500 a dependency is down; ``None`` when the answer was not
    Herald's — a proxy's error page, say); ``status`` the HTTP status (for
    gRPC calls, the status the same error has over HTTP); ``retry_after``
    the seconds a 503 asks to wait; ``idempotency_key`` (code 111) the key
    that stores the request exactly once when it is sent again."""

    def __init__(
        self,
        code: int | None,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(f"{message} (code {code}, HTTP {status})")
        self.code = code
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.idempotency_key = idempotency_key
