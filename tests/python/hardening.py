"""What a hostile or careless client sends, from clients that are not ours
(httpx, websockets, grpcio with stubs generated from proto/): data nested
10,000 levels deep or with a lone surrogate, a gRPC request over the size
limit, HTTP commands past their rate, and a WebSocket closed politely.

usage: hardening.py HTTP_URL GRPC_TARGET WS_URL API_KEY TOKEN
  TOKEN may subscribe and publish to `chat:*`. The server runs with
  command_rate = 5 and command_burst = 5. Exits 0 when every check passes.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile

import grpc
import httpx
import websockets

HTTP, GRPC_TARGET, WS, API_KEY, TOKEN = sys.argv[1:6]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
AUTH = {"Authorization": f"Bearer {API_KEY}"}
DEEP = "[" * 10_000 + "1" + "]" * 10_000
LONE = '"\\ud800"'


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def stubs():
    out = tempfile.mkdtemp(prefix="herald-stubs-")
    proto = os.path.join(ROOT, "proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
         f"--grpc_python_out={out}", os.path.join(proto, "herald/routing/v1/routing.proto")],
        check=True,
    )
    sys.path.insert(0, out)
    from herald.routing.v1 import routing_pb2, routing_pb2_grpc
    return routing_pb2, routing_pb2_grpc


def http_data():
    with httpx.Client(base_url=HTTP, timeout=10) as http:
        for data, what in [(DEEP, "deep"), (LONE, "lone surrogate")]:
            body = '{"channel":"chat:h","data":' + data + "}"
            r = http.post("/api/publish", content=body, headers={**AUTH, "Content-Type": "application/json"})
            check(r.status_code == 400, f"{what} over HTTP: {r.status_code} {r.text}")
            check(r.json()["error"]["code"] == 100, f"{what}: {r.text}")
        r = http.get("/api/history", params={"channel": "chat:h"}, headers=AUTH)
        check(r.json()["publications"] == [], f"nothing stored: {r.text}")


def grpc_data():
    pb, pb_grpc = stubs()
    # the client's own limit is 4 MiB too: raise it to reach the server's
    channel = grpc.insecure_channel(GRPC_TARGET, options=[("grpc.max_send_message_length", 16 << 20)])
    stub = pb_grpc.RoutingStub(channel)
    meta = [("authorization", f"Bearer {API_KEY}")]
    for data, code, what in [
        (DEEP, grpc.StatusCode.INVALID_ARGUMENT, "deep"),
        ("\"" + "x" * (8 << 20) + "\"", grpc.StatusCode.RESOURCE_EXHAUSTED, "8 MB"),
    ]:
        try:
            stub.Publish(pb.PublishRequest(channel="chat:g", data=data.encode()), metadata=meta, timeout=20)
            raise AssertionError(f"{what} over gRPC was accepted")
        except grpc.RpcError as e:
            check(e.code() == code, f"{what} over gRPC: {e.code()} {e.details()}")


async def websocket():
    async with websockets.connect(WS, subprotocols=["herald.v1.json"]) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": TOKEN}}))
        check("ok" in json.loads(await ws.recv()), "connected")
        await ws.send('{"id":2,"publish":{"channel":"chat:w","data":' + DEEP + "}}")
        reply = json.loads(await ws.recv())
        check(reply.get("id") == 2 and reply["error"]["code"] == 100, f"deep over WebSocket: {reply}")
        await ws.close(1000, "bye")
    # the server answered the close: the client saw its own code, not 1006
    check(ws.close_code == 1000, f"close answered with {ws.close_code}")


def http_commands():
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=HTTP, timeout=10) as http:
        for path, body in [
            ("/publish", {"channel": "chat:r", "data": 1}),
            ("/typing", {"channel": "chat:r"}),
            ("/presence", {"channel": "chat:r"}),
        ]:
            codes = []
            for _ in range(30):
                r = http.post(path, json=body, headers=headers)
                codes.append((r.status_code, r.json().get("error", {}).get("code")))
            check((429, 107) in codes, f"{path} past its rate: {codes}")


http_data()
grpc_data()
asyncio.run(websocket())
http_commands()
print("ok: hardening")
