"""`Herald` (sync) and `AsyncHerald`: the same operations (`_ops`), sent
with httpx."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar, cast

import httpx

from . import _ops
from ._types import (
    BroadcastResult,
    Device,
    DeviceStatus,
    Environment,
    History,
    JsonValue,
    Notification,
    Platform,
    Published,
    Sent,
    WebPushSubscription,
)

T = TypeVar("T")

__version__ = "0.1.0"
_USER_AGENT = f"herald-client-python/{__version__}"


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": _USER_AGENT}


class Herald:
    """Herald's server API, for the backend that publishes.

    `url` is the HTTP server API (standalone: ``http://127.0.0.1:8080``;
    distributed: routing on 8081 — and notify's 8083 for the device and
    notification methods, so give that one its own client). `api_key` is one
    of ``HERALD_API_KEYS``.

    Every refusal raises `HeraldError`; network failures are httpx's
    exceptions. Use it as a context manager, or `close` it."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def _run(self, op: _ops.Op[T]) -> T:
        request = next(op)
        while True:
            response = self._http.request(
                request.method, request.path, json=request.json, params=request.params
            )
            try:
                request = op.send(response)
            except StopIteration as done:
                return cast(T, done.value)

    def publish(
        self,
        channel: str,
        data: JsonValue,
        *,
        idempotency_key: str | None = None,
        notify_offline: Sequence[str] | None = None,
        notification: Notification | None = None,
    ) -> Published:
        """Stores `data` in `channel` and delivers it to its subscribers.

        With `idempotency_key`, a request sent again (within the server's
        idempotency window, 120 s) gets the first answer and stores nothing.
        When Herald answers 111 (stored perhaps: JetStream did not confirm in
        time) it is sent again with the error's key, at most 3 attempts in
        all, so it is stored exactly once. `notify_offline`: users to reach
        by push if they are not connected (`notification` is what their
        devices show; none: a silent push); the answer's `notify` says who
        was online, pushed, without devices, or unknown."""
        return self._run(
            _ops.publish(channel, data, idempotency_key, notify_offline, notification)
        )

    def broadcast(
        self, channels: Sequence[str], data: JsonValue, *, idempotency_key: str | None = None
    ) -> list[BroadcastResult]:
        """Publishes `data` to every channel (all checked first: one bad
        channel stores nothing); one result per channel, in order. Retried on
        111 like `publish`."""
        return self._run(_ops.broadcast(channels, data, idempotency_key))

    def send(
        self,
        user: str,
        data: JsonValue,
        *,
        notification: Notification | None = None,
        idempotency_key: str | None = None,
    ) -> Sent:
        """Publishes to `user`'s personal channel (every connection of theirs
        gets it) and, if they are offline, pushes `notification` to their
        devices. Retried on 111 like `publish`."""
        return self._run(_ops.send(user, data, notification, idempotency_key))

    def history(
        self,
        channel: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        limit: int | None = None,
    ) -> History:
        """The publications kept in `channel` (oldest first), or those after
        offset `since` of `epoch` (default: the current epoch), at most
        `limit` (server default 100, at most 1000). When that position is no
        longer kept the answer is ``recovered=False`` with the channel's
        current position — not an error."""
        return self._run(_ops.history(channel, since, epoch, limit))

    def disconnect(self, user: str) -> None:
        """Closes every connection of `user` (close code 4503: the client does
        not reconnect with the same token)."""
        self._run(_ops.disconnect(user))

    def presence(self, channel: str) -> list[str]:
        """The users subscribed to `channel` now, across every edge: their
        ids, sorted, each once however many connections they have."""
        return self._run(_ops.presence(channel))

    def register_device(
        self,
        user: str,
        platform: Platform,
        token: str | None = None,
        *,
        subscription: WebPushSubscription | None = None,
        app: str | None = None,
        environment: Environment | None = None,
        locale: str | None = None,
    ) -> str:
        """Registers a device of `user`; answers its id. APNs and FCM devices
        give their `token`, Web Push ones the browser's `subscription`. `app`
        chooses the push credentials (``[apps."<id>"]``; default
        ``"default"``); `environment` is APNs' (default production).
        Registering a known token again keeps its id (and moves it to
        `user`)."""
        return self._run(
            _ops.register_device(user, platform, token, subscription, app, environment, locale)
        )

    def devices(self, user: str) -> list[Device]:
        """`user`'s devices, most recently seen first."""
        return self._run(_ops.devices(user))

    def unregister_device(self, device_id: str) -> bool:
        """Removes a device; False if there was none with that id."""
        return self._run(_ops.unregister_device(device_id))

    def notify(
        self,
        user: str | None = None,
        *,
        device_id: str | None = None,
        notification: Notification | None = None,
        data: JsonValue = None,
    ) -> str:
        """Queues a push to every device of `user`, or to one device; answers
        the notification's id, for `notification_status`. Without
        `notification` the push is silent; `data` (at most 4 KiB of JSON)
        goes to the app."""
        return self._run(_ops.notify(user, device_id, notification, data))

    def notification_status(self, notification_id: str) -> list[DeviceStatus]:
        """Where a queued push stands, per device (empty until the worker has
        taken it)."""
        return self._run(_ops.notification_status(notification_id))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Herald:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncHerald:
    """`Herald` for asyncio: the same methods, awaited. Use it with
    ``async with``, or `aclose` it."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=url, headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def _run(self, op: _ops.Op[T]) -> T:
        request = next(op)
        while True:
            response = await self._http.request(
                request.method, request.path, json=request.json, params=request.params
            )
            try:
                request = op.send(response)
            except StopIteration as done:
                return cast(T, done.value)

    async def publish(
        self,
        channel: str,
        data: JsonValue,
        *,
        idempotency_key: str | None = None,
        notify_offline: Sequence[str] | None = None,
        notification: Notification | None = None,
    ) -> Published:
        """See `Herald.publish` (retried on 111 the same way)."""
        return await self._run(
            _ops.publish(channel, data, idempotency_key, notify_offline, notification)
        )

    async def broadcast(
        self, channels: Sequence[str], data: JsonValue, *, idempotency_key: str | None = None
    ) -> list[BroadcastResult]:
        """See `Herald.broadcast`."""
        return await self._run(_ops.broadcast(channels, data, idempotency_key))

    async def send(
        self,
        user: str,
        data: JsonValue,
        *,
        notification: Notification | None = None,
        idempotency_key: str | None = None,
    ) -> Sent:
        """See `Herald.send`."""
        return await self._run(_ops.send(user, data, notification, idempotency_key))

    async def history(
        self,
        channel: str,
        *,
        since: int | None = None,
        epoch: str | None = None,
        limit: int | None = None,
    ) -> History:
        """See `Herald.history`."""
        return await self._run(_ops.history(channel, since, epoch, limit))

    async def disconnect(self, user: str) -> None:
        """See `Herald.disconnect`."""
        await self._run(_ops.disconnect(user))

    async def presence(self, channel: str) -> list[str]:
        """See `Herald.presence`."""
        return await self._run(_ops.presence(channel))

    async def register_device(
        self,
        user: str,
        platform: Platform,
        token: str | None = None,
        *,
        subscription: WebPushSubscription | None = None,
        app: str | None = None,
        environment: Environment | None = None,
        locale: str | None = None,
    ) -> str:
        """See `Herald.register_device`."""
        return await self._run(
            _ops.register_device(user, platform, token, subscription, app, environment, locale)
        )

    async def devices(self, user: str) -> list[Device]:
        """See `Herald.devices`."""
        return await self._run(_ops.devices(user))

    async def unregister_device(self, device_id: str) -> bool:
        """See `Herald.unregister_device`."""
        return await self._run(_ops.unregister_device(device_id))

    async def notify(
        self,
        user: str | None = None,
        *,
        device_id: str | None = None,
        notification: Notification | None = None,
        data: JsonValue = None,
    ) -> str:
        """See `Herald.notify`."""
        return await self._run(_ops.notify(user, device_id, notification, data))

    async def notification_status(self, notification_id: str) -> list[DeviceStatus]:
        """See `Herald.notification_status`."""
        return await self._run(_ops.notification_status(notification_id))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHerald:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
