"""The resume test, with clients that are not ours, for one transport.

A publisher posts to the server API without pause. A subscriber (WebSocket
via `websockets`, SSE or long polling via `httpx`) receives some
publications, goes away, stays away while at least 50 more are published,
comes back with its position, and must then receive every publication after
that position exactly once, in order — the missed ones, then live ones.

usage: resume.py EDGE_HTTP API_HTTP API_KEY TOKEN TRANSPORT CHANNEL
  TRANSPORT: ws | sse | poll
"""

import asyncio
import json
import sys

import httpx
import websockets

EDGE, API, API_KEY, TOKEN, TRANSPORT, CHANNEL = sys.argv[1:7]
MISSED = 50
LIVE_AFTER = 20
TIMEOUT = 15


class Publisher:
    """Publishes {"n": i} continuously; remembers the offsets it got."""

    def __init__(self):
        self.offsets = []
        self.running = True

    async def run(self):
        async with httpx.AsyncClient(base_url=API, timeout=TIMEOUT) as http:
            n = 0
            while self.running:
                n += 1
                r = await http.post("/api/publish", json={"channel": CHANNEL, "data": {"n": n}},
                                    headers={"Authorization": f"Bearer {API_KEY}"})
                r.raise_for_status()
                self.offsets.append(r.json()["offset"])
                await asyncio.sleep(0.005)

    async def wait_for(self, offset):
        async def reached():
            while not self.offsets or self.offsets[-1] < offset:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(reached(), TIMEOUT)


def check_sequence(received, after, at_least):
    expected = list(range(after + 1, after + 1 + len(received)))
    if received != expected:
        raise AssertionError(f"after {after}: expected {expected[:5]}…, got {received[:60]}")
    if len(received) < at_least:
        raise AssertionError(f"only {len(received)} publications after {after}, wanted {at_least}")


# ---------------------------------------------------------------- WebSocket

async def ws_session(since, until_count, publisher, stop_at=None):
    """Subscribes (resuming from `since`), returns (offsets, position)."""
    received, position = [], since
    async with websockets.connect(EDGE.replace("http", "ws", 1) + "/ws",
                                  subprotocols=["herald.v1.json"]) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": TOKEN}}))
        await ws.send(json.dumps({"id": 2, "subscribe": {"channel": CHANNEL, **({"since": since} if since else {})}}))
        while len(received) < until_count:
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if frame.get("id") == 2:
                ok = frame.get("ok")
                if ok is None:
                    raise AssertionError(f"subscribe failed: {frame}")
                if since:
                    if ok.get("recovered") is not True:
                        raise AssertionError(f"not recovered: {frame}")
                    for p in ok["publications"]:
                        received.append(p["offset"])
                        position = {"offset": p["offset"], "epoch": p["epoch"]}
                continue
            if "ping" in frame:
                await ws.send(json.dumps({"pong": {}}))
            if "pub" in frame and frame["pub"]["channel"] == CHANNEL:
                p = frame["pub"]
                received.append(p["offset"])
                position = {"offset": p["offset"], "epoch": p["epoch"]}
    return received, position


async def run_ws(publisher):
    first, position = await ws_session(None, 10, publisher)
    gone_at = position["offset"]
    await publisher.wait_for(gone_at + MISSED)
    again, _ = await ws_session(position, MISSED + LIVE_AFTER, publisher)
    check_sequence(again, gone_at, MISSED + LIVE_AFTER)
    return gone_at, len(again)


# ---------------------------------------------------------------- SSE

async def sse_session(last_event_id, until_count):
    received, last_id = [], last_event_id
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    async with httpx.AsyncClient(timeout=httpx.Timeout(TIMEOUT, read=TIMEOUT)) as http:
        async with http.stream("GET", f"{EDGE}/sse", params={"channels": CHANNEL}, headers=headers) as r:
            if r.status_code != 200:
                raise AssertionError(f"SSE: {r.status_code} {await r.aread()}")
            # nginx acts on X-Accel-Buffering and drops it: only Herald's own
            # answers still carry it
            proxied = r.headers.get("server", "").startswith("nginx")
            unbuffered = proxied or r.headers.get("x-accel-buffering") == "no"
            if not unbuffered or "text/event-stream" not in r.headers["content-type"]:
                raise AssertionError(f"SSE headers: {r.headers}")
            event, data, event_id = None, [], None
            lines = r.aiter_lines()
            while len(received) < until_count:
                line = await asyncio.wait_for(lines.__anext__(), TIMEOUT)
                if line == "":
                    if event == "pub":
                        p = json.loads("\n".join(data))
                        if p["channel"] == CHANNEL:
                            received.append(p["offset"])
                    if event == "subscribe" and last_event_id:
                        s = json.loads("\n".join(data))
                        if s["channel"] == CHANNEL and not s["recovered"]:
                            raise AssertionError(f"not recovered: {s}")
                    if event_id is not None:
                        last_id = event_id
                    event, data, event_id = None, [], None
                elif line.startswith(":") or line.startswith("retry:"):
                    continue
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line.startswith("id: "):
                    event_id = line[4:]
    return received, last_id


async def run_sse(publisher):
    first, last_id = await sse_session(None, 10)
    gone_at = first[-1]
    await publisher.wait_for(gone_at + MISSED)
    again, _ = await sse_session(last_id, MISSED + LIVE_AFTER)
    check_sequence(again, gone_at, MISSED + LIVE_AFTER)
    return gone_at, len(again)


# ---------------------------------------------------------------- long polling

async def poll_until(http, cursor, until_count):
    received = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while len(received) < until_count:
        r = await http.get(f"{EDGE}/poll", params={"channels": CHANNEL, "cursor": cursor, "timeout": 5},
                           headers=headers)
        if r.status_code == 204:
            continue
        if r.status_code != 200:
            raise AssertionError(f"poll: {r.status_code} {r.text}")
        answer = r.json()
        if answer.get("unrecoverable"):
            raise AssertionError(f"unrecoverable: {answer}")
        cursor = answer["cursor"]
        for m in answer["messages"]:
            if "pub" in m and m["pub"]["channel"] == CHANNEL:
                received.append(m["pub"]["offset"])
    return received, cursor


async def run_poll(publisher):
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        # no cursor: where the channels stand, at once (with whatever was
        # published while the session was being set up)
        r = await http.get(f"{EDGE}/poll", params={"channels": CHANNEL},
                           headers={"Authorization": f"Bearer {TOKEN}"})
        if r.status_code != 200:
            raise AssertionError(f"first poll: {r.status_code} {r.text}")
        setup = [m["pub"]["offset"] for m in r.json()["messages"]
                 if "pub" in m and m["pub"]["channel"] == CHANNEL]
        first, cursor = await poll_until(http, r.json()["cursor"], 10)
        first = setup + first
        gone_at = first[-1]
        # the client is away: nobody polls
        await publisher.wait_for(gone_at + MISSED)
        again, _ = await poll_until(http, cursor, MISSED + LIVE_AFTER)
        check_sequence(again, gone_at, MISSED + LIVE_AFTER)
        return gone_at, len(again)


async def main():
    publisher = Publisher()
    task = asyncio.create_task(publisher.run())
    try:
        run = {"ws": run_ws, "sse": run_sse, "poll": run_poll}[TRANSPORT]
        gone_at, count = await asyncio.wait_for(run(publisher), 60)
    finally:
        publisher.running = False
        await task
    print(f"ok: {TRANSPORT} resumed after offset {gone_at} and received the next {count} in order")


if __name__ == "__main__":
    asyncio.run(main())
