"""A client that is not ours: the `websockets` library connects to a Herald
edge with a token, subscribes, and must receive what the server API
publishes over HTTP (`httpx`). Exits 0 on success; prints why otherwise.

usage: ws_receive_api_publish.py WS_URL API_URL TOKEN API_KEY CHANNEL
"""

import asyncio
import json
import sys

import httpx
import websockets

TIMEOUT = 10


async def expect_reply(ws, frame_id):
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if frame.get("id") == frame_id:
            if "ok" not in frame:
                raise SystemExit(f"command {frame_id} failed: {frame}")
            return frame["ok"]


async def main(ws_url, api_url, token, api_key, channel):
    async with websockets.connect(ws_url, subprotocols=["herald.v1.json"]) as ws:
        assert ws.subprotocol == "herald.v1.json", ws.subprotocol
        await ws.send(json.dumps({"id": 1, "connect": {"token": token}}))
        connected = await expect_reply(ws, 1)
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": channel}}))
        subscribed = await expect_reply(ws, 2)

        data = {"text": "hello from the server API", "n": 42, "nested": {"ok": True}}
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            response = await http.post(
                f"{api_url}/api/publish",
                json={"channel": channel, "data": data},
                headers={"Authorization": f"Bearer {api_key}"},
            )
        if response.status_code != 200:
            raise SystemExit(f"publish failed: {response.status_code} {response.text}")
        published = response.json()

        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if "ping" in frame:
                await ws.send(json.dumps({"pong": {}}))
                continue
            if "pub" in frame:
                break
            if "join" in frame or "leave" in frame:
                continue  # presence events of the channel (its own join included)
            raise SystemExit(f"unexpected frame: {frame}")
        pub = frame["pub"]
        assert pub["channel"] == channel, pub
        assert pub["data"] == data, pub
        assert pub["offset"] == published["offset"] == subscribed["offset"] + 1, (pub, published, subscribed)
        assert pub["epoch"] == published["epoch"], (pub, published)
        # a channel with no history yet has no epoch yet
        assert subscribed["epoch"] in ("", pub["epoch"]), (pub, subscribed)
        print(f"ok: {connected['user']} received offset {pub['offset']} on {channel}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
