"""Audit clients for the cluster tests: WebSocket (`websockets`), SSE and
long polling (`httpx`) subscribers that resume like the SDK does.

Each client subscribes to CHANNEL and keeps every publication it is given
as (offset, n, epoch). Whenever its connection ends — a drained edge's
4000, an edge killed, a 503 from an edge that is full or draining, a proxy
cut — it waits a little (jittered, or the Retry-After it was given),
connects to the next URL of its list and resumes from its position. A
resume answered `recovered: false` is kept as told loss.

usage: cluster_audit.py TOKEN CHANNEL URL...
  stdin:  "start TRANSPORT COUNT"  COUNT more clients (ws | sse | poll), each
                                   starting at the next URL of the list
          "until OFFSET"           each client reads up to OFFSET, then the
                                   results are printed and the script exits
  stdout: "ready TOTAL"            every client started so far is subscribed
          one JSON line at the end: {"clients": [{"name", "transport",
          "seen": [[offset, n, epoch], …], "sessions", "told_lost": […]}]}
"""

import asyncio
import base64
import collections
import json
import random
import sys
import time

import httpx
import websockets

TOKEN, CHANNEL = sys.argv[1:3]
URLS = sys.argv[3:]
# a session that hears nothing for this long is dead (the server pings
# WebSockets every 25 s and SSE every 15 s; a poll is held 5 s)
QUIET = 40


START = time.monotonic()


def log(*what):
    print(f"{time.monotonic() - START:8.3f}", *what, file=sys.stderr, flush=True)


def cursor_offset(cursor):
    """CHANNEL's offset in a poll cursor (base64 JSON), for the record."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        for channel, _, offset in json.loads(text)["p"]:
            if channel == CHANNEL:
                return offset
    except (ValueError, KeyError, TypeError):
        pass
    return None


class Ended(Exception):
    """The session ended; `wait` is how long to wait before the next one."""

    def __init__(self, why, wait=None):
        super().__init__(why)
        self.wait = wait


def retry_after(response):
    try:
        return min(float(response.headers.get("retry-after", "1")), 5.0)
    except ValueError:
        return 1.0


class AuditClient:
    def __init__(self, name, transport, first_url):
        self.name, self.transport = name, transport
        self.url_index = first_url
        self.seen = []
        self.sessions = 0
        self.told_lost = []
        self.subscribed = asyncio.Event()
        self.until = None
        self.reached = asyncio.Event()
        # where to resume: WebSocket {"offset","epoch"}, SSE's last event
        # id, a poll cursor
        self.position = None
        # the last polls, told with a loss: (when, URL, status, offsets)
        self.recent = collections.deque(maxlen=8)

    def url(self):
        return URLS[self.url_index % len(URLS)]

    def got(self, p):
        if p["channel"] != CHANNEL:
            return
        data = p["data"]
        self.seen.append([p["offset"], data["n"] if isinstance(data, dict) else None, p["epoch"]])
        self.check_done()

    def check_done(self):
        if self.until is not None and self.seen and self.seen[-1][0] >= self.until:
            self.reached.set()

    async def run(self):
        session = {"ws": self.ws_session, "sse": self.sse_session, "poll": self.poll_session}[self.transport]
        while not self.reached.is_set():
            self.sessions += 1
            wait = None
            try:
                await session()
            except Ended as e:
                log(f"{self.name}: {e} at {self.url()}")
                wait = e.wait
            except (OSError, EOFError, asyncio.TimeoutError, httpx.HTTPError,
                    websockets.exceptions.WebSocketException) as e:
                log(f"{self.name}: {type(e).__name__} {e} at {self.url()}")
            if self.reached.is_set():
                break
            # like the SDK: a jittered pause, then the next edge
            await asyncio.sleep(wait if wait is not None else random.uniform(0.1, 0.6))
            self.url_index += 1

    # ------------------------------------------------------------ WebSocket

    async def ws_session(self):
        url = self.url().replace("http", "ws", 1) + "/ws"
        async with websockets.connect(url, subprotocols=["herald.v1.json"], open_timeout=10,
                                      ping_interval=None) as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": TOKEN}}))
            subscribe = {"channel": CHANNEL}
            if self.position:
                subscribe["since"] = self.position
            await ws.send(json.dumps({"id": 2, "subscribe": subscribe}))
            while not self.reached.is_set():
                frame = json.loads(await asyncio.wait_for(ws.recv(), QUIET))
                if frame.get("id") == 1 and "ok" not in frame:
                    raise Ended(f"connect refused: {frame}", wait=1.0)
                if frame.get("id") == 2:
                    ok = frame.get("ok")
                    if ok is None:
                        raise Ended(f"subscribe refused: {frame}", wait=1.0)
                    if self.position and ok.get("recovered") is not True:
                        self.told_lost.append({"after": self.position, "now": ok.get("epoch")})
                    for p in ok.get("publications", []):
                        self.ws_pub(p)
                    self.subscribed.set()
                elif "ping" in frame:
                    await ws.send(json.dumps({"pong": {}}))
                elif "pub" in frame:
                    self.ws_pub(frame["pub"])
                elif "disconnect" in frame:
                    raise Ended(f"told {frame['disconnect']}")

    def ws_pub(self, p):
        if p["channel"] == CHANNEL:
            self.position = {"offset": p["offset"], "epoch": p["epoch"]}
        self.got(p)

    # ------------------------------------------------------------ SSE

    async def sse_session(self):
        headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/event-stream"}
        if self.position:
            headers["Last-Event-ID"] = self.position
        timeout = httpx.Timeout(10, read=QUIET)
        async with httpx.AsyncClient(timeout=timeout) as http:
            async with http.stream("GET", f"{self.url()}/sse", params={"channels": CHANNEL},
                                   headers=headers) as r:
                if r.status_code != 200:
                    raise Ended(f"SSE {r.status_code}", wait=retry_after(r))
                event, data, event_id = None, [], None
                lines = r.aiter_lines()
                while not self.reached.is_set():
                    line = await asyncio.wait_for(lines.__anext__(), QUIET)
                    if line == "":
                        body = json.loads("\n".join(data)) if data else None
                        if event == "pub":
                            self.got(body)
                        elif event == "subscribe" and body["channel"] == CHANNEL:
                            if self.position and not body["recovered"]:
                                self.told_lost.append({"after": self.position, "now": body["epoch"]})
                            self.subscribed.set()
                        elif event == "disconnect":
                            raise Ended(f"told {body}")
                        if event_id is not None:
                            self.position = event_id
                        event, data, event_id = None, [], None
                    elif line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line.startswith("id: "):
                        event_id = line[4:]
                raise Ended("done")

    # ------------------------------------------------------------ long polling

    async def poll_session(self):
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=QUIET)) as http:
            while not self.reached.is_set():
                params = {"channels": CHANNEL, "timeout": 5}
                if self.position:
                    params["cursor"] = self.position
                sent = time.monotonic() - START
                r = await http.get(f"{self.url()}/poll", params=params, headers=headers)
                record = [round(sent, 3), self.url(), r.status_code,
                          cursor_offset(self.position) if self.position else None]
                self.recent.append(record)
                if r.status_code == 204:
                    continue
                if r.status_code != 200:
                    raise Ended(f"poll {r.status_code}", wait=retry_after(r))
                answer = r.json()
                offsets = [m["pub"]["offset"] for m in answer["messages"]
                           if "pub" in m and m["pub"]["channel"] == CHANNEL]
                record += [offsets[:1] + offsets[-1:], cursor_offset(answer["cursor"])]
                if CHANNEL in answer.get("unrecoverable", []):
                    self.told_lost.append({"after": self.position, "recent": list(self.recent)})
                    log(f"{self.name}: told unrecoverable after {list(self.recent)}")
                ended = None
                for m in answer["messages"]:
                    if "pub" in m:
                        self.got(m["pub"])
                    elif "disconnect" in m:
                        ended = m["disconnect"]
                self.position = answer["cursor"]
                self.subscribed.set()
                if ended:
                    raise Ended(f"told {ended}")

    def result(self):
        return {"name": self.name, "transport": self.transport, "seen": self.seen,
                "sessions": self.sessions, "told_lost": self.told_lost}


async def main():
    clients, tasks = [], []
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().split()
        if not line:
            raise SystemExit("stdin closed before 'until'")
        if line[0] == "start":
            transport, count = line[1], int(line[2])
            for _ in range(count):
                client = AuditClient(f"{transport}-{len(clients)}", transport, len(clients))
                clients.append(client)
                tasks.append(asyncio.create_task(client.run()))
            await asyncio.wait_for(asyncio.gather(*(c.subscribed.wait() for c in clients)), 120)
            print(f"ready {len(clients)}", flush=True)
        elif line[0] == "until":
            for client in clients:
                client.until = int(line[1])
                client.check_done()
            # the caller bounds the whole wait; a client that stops
            # progressing shows in its result
            done, pending = await asyncio.wait([asyncio.create_task(c.reached.wait()) for c in clients],
                                               timeout=120)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            print(json.dumps({"clients": [c.result() for c in clients]}), flush=True)
            return


if __name__ == "__main__":
    asyncio.run(main())
