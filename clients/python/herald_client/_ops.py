"""Every HTTP operation once, without I/O: an operation is a generator that
yields the requests it needs and is sent their responses, so the sync and
async clients share the bodies, the answers, the errors and the retries and
differ only in how a request is sent."""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import quote

import httpx

from ._types import (
    OUTCOME_UNKNOWN,
    UNKNOWN_CHANNEL,
    UNRECOVERABLE,
    BroadcastResult,
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
    Sent,
    WebPushSubscription,
)

T = TypeVar("T")

#: Attempts of a request that may answer 111 (outcome unknown), as the Rust
#: client and the JS SDK make: the first, then twice with the error's key.
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    params: Mapping[str, str | int] | None = None


Op = Generator[Request, httpx.Response, T]


def error_of(response: httpx.Response) -> HeraldError:
    """The error a non-success answer carries: `{"error":{"code","message",…}}`
    with its status, `Retry-After` on 503."""
    retry_after: float | None = None
    header = response.headers.get("retry-after")
    if header is not None:
        try:
            retry_after = float(header)
        except ValueError:
            retry_after = None  # an HTTP date: Herald sends seconds
    try:
        error = response.json()["error"]
        code: int | None = int(error["code"])
        message = str(error.get("message", ""))
        key = error.get("idempotency_key")
    except (ValueError, KeyError, TypeError):
        code, message, key = None, response.text[:500] or response.reason_phrase, None
    return HeraldError(
        code,
        response.status_code,
        message,
        retry_after=retry_after,
        idempotency_key=key if isinstance(key, str) else None,
    )


def call(request: Request, ok: int = 200) -> Op[Any]:
    """Sends `request`; its JSON answer if the status is `ok`, else raises."""
    response = yield request
    if response.status_code != ok:
        raise error_of(response)
    if response.status_code == 204:
        return None
    return response.json()


def keyed(path: str, body: dict[str, Any]) -> Op[Any]:
    """A POST that takes an idempotency key: answered 111 (the server could
    not tell whether it was stored), it is sent again with the key the error
    names — the caller's own, or one Herald made — so it takes effect once."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return (yield from call(Request("POST", path, body)))
        except HeraldError as e:
            if e.code != OUTCOME_UNKNOWN or not e.idempotency_key or attempt == MAX_ATTEMPTS:
                raise
            body = {**body, "idempotency_key": e.idempotency_key}
    raise AssertionError("unreachable")


def _some(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """`body` and the `fields` that are not None."""
    return {**body, **{k: v for k, v in fields.items() if v is not None}}


# ---------------------------------------------------------------- routing


def publish(
    channel: str,
    data: JsonValue,
    idempotency_key: str | None,
    notify_offline: Sequence[str] | None,
    notification: Notification | None,
) -> Op[Published]:
    body = _some(
        {"channel": channel, "data": data},
        idempotency_key=idempotency_key,
        notify_offline=list(notify_offline) if notify_offline else None,
        notification=notification,
    )
    answer = yield from keyed("/api/publish", body)
    notify = answer.get("notify")
    return Published(
        offset=answer["offset"],
        epoch=answer["epoch"],
        notify=None
        if notify is None
        else NotifyOutcome(
            online=list(notify.get("online", [])),
            pushed=list(notify.get("pushed", [])),
            unknown=list(notify.get("unknown", [])),
            no_devices=list(notify.get("no_devices", [])),
        ),
    )


def broadcast(
    channels: Sequence[str], data: JsonValue, idempotency_key: str | None
) -> Op[list[BroadcastResult]]:
    body = _some({"channels": list(channels), "data": data}, idempotency_key=idempotency_key)
    answer = yield from keyed("/api/broadcast", body)
    return [BroadcastResult(r["channel"], r["offset"], r["epoch"]) for r in answer["results"]]


def send(
    user: str,
    data: JsonValue,
    notification: Notification | None,
    idempotency_key: str | None,
) -> Op[Sent]:
    body = _some(
        {"user": user, "data": data},
        notification=notification,
        idempotency_key=idempotency_key,
    )
    answer = yield from keyed("/api/send", body)
    return Sent(result=answer["result"])


def history(
    channel: str, since: int | None, epoch: str | None, limit: int | None
) -> Op[History]:
    params: dict[str, str | int] = {"channel": channel}
    if since is not None:
        params["since"] = since
    if epoch is not None:
        params["epoch"] = epoch
    if limit is not None:
        params["limit"] = limit
    try:
        answer = yield from call(Request("GET", "/api/history", params=params))
    except HeraldError as e:
        if e.code != UNRECOVERABLE:
            raise
        # the 410 names no position: read where the channel is now
        latest = yield from call(
            Request("GET", "/api/history", params={"channel": channel, "limit": 0})
        )
        return History([], latest["offset"], latest["epoch"], recovered=False)
    return History(
        publications=[
            Publication(offset=p["offset"], data=p["data"], ts=p["ts"], from_=p.get("from"))
            for p in answer["publications"]
        ],
        offset=answer["offset"],
        epoch=answer["epoch"],
    )


def disconnect(user: str) -> Op[None]:
    yield from call(Request("POST", "/api/disconnect", {"user": user}))


def presence(channel: str) -> Op[list[str]]:
    answer = yield from call(Request("GET", "/api/presence", params={"channel": channel}))
    return [str(u) for u in answer["users"]]


# ---------------------------------------------------------------- notify


def register_device(
    user: str,
    platform: Platform,
    token: str | None,
    subscription: WebPushSubscription | None,
    app: str | None,
    environment: Environment | None,
    locale: str | None,
) -> Op[str]:
    body = _some(
        {"user": user, "platform": platform},
        token=token,
        subscription=subscription,
        app=app,
        environment=environment,
        locale=locale,
    )
    answer = yield from call(Request("POST", "/api/devices", body), ok=201)
    return cast(str, answer["id"])


def _device(d: Mapping[str, Any]) -> Device:
    return Device(
        id=d["id"],
        user=d["user"],
        platform=d["platform"],
        token=d["token"],
        app=d["app"],
        environment=d["environment"],
        created_ms=d["created_ms"],
        updated_ms=d["updated_ms"],
        last_seen_ms=d["last_seen_ms"],
        p256dh=d.get("p256dh"),
        auth=d.get("auth"),
        locale=d.get("locale"),
    )


def devices(user: str) -> Op[list[Device]]:
    answer = yield from call(Request("GET", "/api/devices", params={"user": user}))
    return [_device(d) for d in answer["devices"]]


def unregister_device(device_id: str) -> Op[bool]:
    try:
        yield from call(Request("DELETE", f"/api/devices/{quote(device_id, safe='')}"), ok=204)
    except HeraldError as e:
        if e.code == UNKNOWN_CHANNEL and e.status == 404:
            return False
        raise
    return True


def notify(
    user: str | None,
    device_id: str | None,
    notification: Notification | None,
    data: JsonValue,
) -> Op[str]:
    if (user is None) == (device_id is None):
        raise ValueError("name either a user or a device_id")
    body = _some(
        {}, user=user, device_id=device_id, notification=notification, data=data
    )
    answer = yield from call(Request("POST", "/api/notify", body), ok=202)
    return cast(str, answer["id"])


def notification_status(notification_id: str) -> Op[list[DeviceStatus]]:
    answer = yield from call(Request("GET", f"/api/notify/{quote(notification_id, safe='')}"))
    return [
        DeviceStatus(
            device_id=s["device_id"],
            platform=s["platform"],
            state=s["state"],
            reason=s["reason"],
            attempts=s["attempts"],
            updated_ms=s["updated_ms"],
        )
        for s in answer["devices"]
    ]
