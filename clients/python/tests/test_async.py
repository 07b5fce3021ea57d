"""`AsyncHerald`: every method, awaited, against the same server — it
shares the requests and answers with `Herald`, so this checks the sending."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from conftest import API_KEY, SECRET, WAIT, Server, User, unique
from websockets.exceptions import ConnectionClosed

from herald_client import AsyncHerald, Herald, HeraldError, mint_token


def test_every_method_awaited(server: Server, herald: Herald, connect_user: Callable[[str], User]) -> None:
    channel, name = unique("chat:room-"), unique("u-")
    user = connect_user(mint_token(SECRET, name, channels=[channel]))
    assert "ok" in user.command("subscribe", {"channel": channel})

    async def run() -> None:
        async with AsyncHerald(server.http, API_KEY) as h:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + WAIT
            while await h.presence(channel) != [name]:
                assert loop.time() < deadline, "never in presence"
                await asyncio.sleep(0.02)

            published = await h.publish(channel, {"n": 1}, idempotency_key="a-1")
            assert published == await h.publish(channel, {"n": 1}, idempotency_key="a-1")
            results = await h.broadcast([channel, unique("api:b-")], {"n": 2})
            assert [r.offset for r in results] == [2, 1]
            history = await h.history(channel, since=1)
            assert [p.data for p in history.publications] == [{"n": 2}] and history.recovered
            assert not (await h.history(channel, since=1, epoch="other")).recovered
            assert (await h.send(name, {"dm": 1})).result == "online"

            device = await h.register_device(name, "fcm", unique("fcm-token-"))
            assert [d.id for d in await h.devices(name)] == [device]
            sent = await h.notify(device_id=device, notification={"title": "t", "body": "b"})
            deadline = loop.time() + WAIT
            while not await h.notification_status(sent):
                assert loop.time() < deadline, "no status for the push"
                await asyncio.sleep(0.02)
            assert await h.unregister_device(device) and not await h.unregister_device(device)

            with pytest.raises(HeraldError) as e:
                await h.publish(unique("nope:x-"), 1)
            assert (e.value.status, e.value.code) == (404, 104)
            with pytest.raises(HeraldError) as e:
                await h.presence("bad channel")
            assert (e.value.status, e.value.code) == (400, 100)
            await h.disconnect(name)

    asyncio.run(run())
    assert user.publication(channel)["data"] == {"n": 1}
    assert user.publication(channel)["data"] == {"n": 2}
    assert user.publication(f"#{name}")["data"] == {"dm": 1}
    with pytest.raises(ConnectionClosed) as closed:
        user.frame(lambda f: False)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4503
