"""Code 111 (outcome unknown) and the other answers that say "maybe try
again". A real standalone stores in memory and always confirms, so the lost
confirmation is played by a transport in front of it: the first request is
stored on the real server under a key routing would have made, and the
client is told 504/111 with that key, as routing answers when JetStream does
not confirm within publish_timeout_ms. The retry must store nothing more."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import API_KEY, Server, unique

from herald_client import AsyncHerald, Herald, HeraldError

MESSAGE = (
    "history did not confirm in time: the publication may be stored; "
    "send it again with this idempotency_key to store it once"
)


def outcome_unknown(key: str | None) -> httpx.Response:
    error: dict[str, Any] = {"code": 111, "message": MESSAGE}
    if key is not None:
        error["idempotency_key"] = key
    return httpx.Response(504, json={"error": error})


def forwarded(request: httpx.Request, body: dict[str, Any]) -> httpx.Request:
    return httpx.Request(
        request.method, request.url, headers={"Authorization": request.headers["authorization"]}, json=body
    )


class LostFirstConfirmation:
    """The first request is stored on the real server, under a key of the
    server's making, and its answer lost (504/111 with that key); the
    others go through as they are. Keeps every body sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.key = unique("routing-made-")
        self.real = httpx.HTTPTransport()
        self.real_async = httpx.AsyncHTTPTransport()

    def _first(self, request: httpx.Request) -> tuple[bool, httpx.Request]:
        body = json.loads(request.content)
        self.bodies.append(body)
        if len(self.bodies) > 1:
            return False, request
        return True, forwarded(request, {**body, "idempotency_key": body.get("idempotency_key", self.key)})

    def handle(self, request: httpx.Request) -> httpx.Response:
        first, request = self._first(request)
        response = self.real.handle_request(request)
        if not first:
            return response
        response.read()
        assert response.status_code == 200, response.text
        return outcome_unknown(json.loads(request.content)["idempotency_key"])

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        first, request = self._first(request)
        response = await self.real_async.handle_async_request(request)
        if not first:
            return response
        await response.aread()
        assert response.status_code == 200, response.text
        return outcome_unknown(json.loads(request.content)["idempotency_key"])


def test_an_unconfirmed_publish_is_sent_again_with_the_servers_key_and_stored_once(server: Server) -> None:
    lost = LostFirstConfirmation()
    channel = unique("api:orders-")
    with Herald(server.http, API_KEY, transport=httpx.MockTransport(lost.handle)) as herald:
        answer = herald.publish(channel, {"order": 1})
        assert answer.offset == 1
        assert "idempotency_key" not in lost.bodies[0]
        assert [b.get("idempotency_key") for b in lost.bodies[1:]] == [lost.key]
    with Herald(server.http, API_KEY) as direct:
        assert [p.data for p in direct.history(channel).publications] == [{"order": 1}]


def test_broadcast_and_send_are_sent_again_the_same_way(server: Server) -> None:
    channels = [unique("api:b-"), unique("api:b-")]
    user = unique("u-")
    for call in (
        lambda h: h.broadcast(channels, {"n": 1}, idempotency_key=unique("mine-")),
        lambda h: h.send(user, {"dm": 1}),
    ):
        lost = LostFirstConfirmation()
        with Herald(server.http, API_KEY, transport=httpx.MockTransport(lost.handle)) as herald:
            call(herald)
        assert len(lost.bodies) == 2
        assert lost.bodies[1]["idempotency_key"] == lost.bodies[0].get("idempotency_key", lost.key)
    with Herald(server.http, API_KEY) as direct:
        for channel in [*channels, f"#{user}"]:
            assert len(direct.history(channel).publications) == 1, channel


def test_the_async_client_sends_again_the_same_way(server: Server) -> None:
    lost = LostFirstConfirmation()
    channel = unique("api:orders-")

    async def run() -> int:
        transport = httpx.MockTransport(lost.handle_async)
        async with AsyncHerald(server.http, API_KEY, transport=transport) as herald:
            return (await herald.publish(channel, {"order": 2}, idempotency_key="order-2")).offset

    assert asyncio.run(run()) == 1
    assert [b["idempotency_key"] for b in lost.bodies] == ["order-2", "order-2"]
    with Herald(server.http, API_KEY) as direct:
        assert len(direct.history(channel).publications) == 1


def answering(*responses: Callable[[], httpx.Response]) -> tuple[list[dict[str, Any]], httpx.MockTransport]:
    """A transport answering the given responses in turn (the last one
    again when they run out); and the bodies it was sent."""
    bodies: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return responses[min(len(bodies), len(responses)) - 1]()

    return bodies, httpx.MockTransport(handle)


def test_at_most_three_attempts_then_the_error_with_its_key() -> None:
    bodies, transport = answering(lambda: outcome_unknown("k-1"))
    with Herald("http://herald.invalid", API_KEY, transport=transport) as herald:
        with pytest.raises(HeraldError) as e:
            herald.publish("api:x", 1, idempotency_key="mine")
    assert (e.value.code, e.value.status, e.value.idempotency_key) == (111, 504, "k-1")
    assert [b["idempotency_key"] for b in bodies] == ["mine", "k-1", "k-1"]


def test_nothing_else_is_sent_again() -> None:
    cases = {
        "111 without a key to send it with": (lambda: outcome_unknown(None), 504, 111, None),
        "a bad request": (
            lambda: httpx.Response(400, json={"error": {"code": 100, "message": "invalid channel"}}),
            400,
            100,
            None,
        ),
        "unavailable, nothing was done": (
            lambda: httpx.Response(
                503,
                headers={"Retry-After": "1"},
                json={"error": {"code": 500, "message": "history unavailable; try again"}},
            ),
            503,
            500,
            1.0,
        ),
        "not Herald's answer": (lambda: httpx.Response(502, text="<html>bad gateway</html>"), 502, None, None),
    }
    for name, (response, status, code, retry_after) in cases.items():
        bodies, transport = answering(response)
        with Herald("http://herald.invalid", API_KEY, transport=transport) as herald:
            with pytest.raises(HeraldError) as e:
                herald.publish("api:x", 1)
        assert len(bodies) == 1, name
        assert (e.value.status, e.value.code, e.value.retry_after) == (status, code, retry_after), name
    assert "bad gateway" in e.value.message
