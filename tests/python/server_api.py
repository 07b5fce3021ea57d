"""Every method of Herald's server API, called from clients that are not
ours: gRPC stubs generated here from proto/ with grpcio-tools, and httpx for
HTTP; a `websockets` client plays the connected user.

usage: server_api.py HTTP_URL GRPC_TARGET WS_URL API_KEY ALICE_TOKEN MODE
  MODE is `standalone` (the edge answers presence) or `distributed`
  (no presence service yet: offline hand-offs report `unknown`).

The server must run with max_message_bytes = 4096, strict_namespaces and a
namespace `api`. Exits 0 when every check passes.
"""

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile

import grpc
import httpx
import websockets

HTTP, GRPC_TARGET, WS, API_KEY, ALICE_TOKEN, MODE = sys.argv[1:7]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TIMEOUT = 10
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def generate_stubs():
    out = tempfile.mkdtemp(prefix="herald-stubs-")
    proto = os.path.join(ROOT, "proto")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
         f"--grpc_python_out={out}", os.path.join(proto, "herald/routing/v1/routing.proto"),
         os.path.join(proto, "herald/presence/v1/presence.proto")],
        check=True,
    )
    sys.path.insert(0, out)
    from herald.routing.v1 import routing_pb2, routing_pb2_grpc
    from herald.presence.v1 import presence_pb2, presence_pb2_grpc
    return routing_pb2, routing_pb2_grpc, presence_pb2, presence_pb2_grpc


pb, pb_grpc, presence_pb, presence_grpc = generate_stubs()
channel = grpc.insecure_channel(GRPC_TARGET)
stub = pb_grpc.RoutingStub(channel)
META = [("authorization", f"Bearer {API_KEY}")]
http = httpx.Client(base_url=HTTP, timeout=TIMEOUT)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def history_http(ch):
    r = http.get("/api/history", params={"channel": ch}, headers=AUTH)
    check(r.status_code == 200, f"history {ch}: {r.status_code} {r.text}")
    return r.json()


def grpc_error(call, code):
    try:
        call()
    except grpc.RpcError as e:
        check(e.code() == code, f"expected {code}, got {e.code()}: {e.details()}")
        return e.details()
    raise AssertionError(f"expected {code}, the call succeeded")


def test_publish_and_history():
    r = stub.Publish(pb.PublishRequest(channel="api:feed", data=b'{"via":"grpc"}'), metadata=META)
    check(r.offset == 1 and r.epoch, f"grpc publish: {r}")
    a = http.post("/api/publish", json={"channel": "api:feed", "data": {"via": "http"}}, headers=AUTH)
    check(a.status_code == 200, a.text)
    check(a.json() == {"offset": 2, "epoch": r.epoch}, a.json())

    h = stub.History(pb.HistoryRequest(channel="api:feed"), metadata=META)
    check([p.offset for p in h.publications] == [1, 2], h)
    check(json.loads(h.publications[0].data) == {"via": "grpc"}, h.publications[0])
    check(h.offset == 2 and h.epoch == r.epoch, h)
    h = stub.History(pb.HistoryRequest(channel="api:feed", since=1, epoch=r.epoch), metadata=META)
    check([p.offset for p in h.publications] == [2], h)
    j = http.get("/api/history", params={"channel": "api:feed", "since": 1}, headers=AUTH).json()
    check([p["offset"] for p in j["publications"]] == [2], j)
    check(j["publications"][0]["data"] == {"via": "http"}, j)
    # a position from another epoch cannot be recovered: 410 / OUT_OF_RANGE
    r410 = http.get("/api/history", params={"channel": "api:feed", "since": 1, "epoch": "nope"}, headers=AUTH)
    check(r410.status_code == 410 and r410.json()["error"]["code"] == 110, r410.text)
    grpc_error(lambda: stub.History(pb.HistoryRequest(channel="api:feed", since=1, epoch="nope"), metadata=META),
               grpc.StatusCode.OUT_OF_RANGE)


def test_broadcast():
    chans = ["api:b1", "api:b2", "api:b3"]
    r = stub.Broadcast(pb.BroadcastRequest(channels=chans, data=b'{"n":1}'), metadata=META)
    check([x.channel for x in r.results] == chans and all(x.offset == 1 for x in r.results), r)
    a = http.post("/api/broadcast", json={"channels": chans, "data": {"n": 2}}, headers=AUTH)
    check(a.status_code == 200, a.text)
    check([x["offset"] for x in a.json()["results"]] == [2, 2, 2], a.json())


def test_idempotency():
    body = {"channel": "api:once", "data": {"order": 17}, "idempotency_key": "order-17"}

    async def five():
        async with httpx.AsyncClient(base_url=HTTP, timeout=TIMEOUT) as client:
            return await asyncio.gather(*[client.post("/api/publish", json=body, headers=AUTH) for _ in range(5)])

    answers = asyncio.run(five())
    check(all(a.status_code == 200 for a in answers), [a.text for a in answers])
    check(len({a.text for a in answers}) == 1, [a.text for a in answers])
    check(len(history_http("api:once")["publications"]) == 1, history_http("api:once"))

    request = pb.PublishRequest(channel="api:once-grpc", data=b'{"x":1}', idempotency_key="k-1")
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: stub.Publish(request, metadata=META), range(5)))
    check(len({(r.offset, r.epoch) for r in results}) == 1, results)
    check(len(history_http("api:once-grpc")["publications"]) == 1, "grpc idempotency stored twice")


async def alice_session():
    """alice connects; SendToUser reaches her live; Disconnect closes her."""
    async with websockets.connect(WS, subprotocols=["herald.v1.json"]) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": ALICE_TOKEN}}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        check("ok" in reply, reply)
        if MODE == "standalone":
            # presence learns of the connection a moment later (the edge
            # reports it); wait for that, with a deadline
            presence = presence_grpc.PresenceStub(channel)
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while not presence.IsOnline(presence_pb.IsOnlineRequest(user="alice"), metadata=META).online:
                check(asyncio.get_running_loop().time() < deadline, "alice never showed as online")
                await asyncio.sleep(0.02)

        def send_grpc():
            return stub.SendToUser(pb.SendToUserRequest(user="alice", data=b'{"dm":"grpc"}'), metadata=META)

        r = await asyncio.to_thread(send_grpc)
        expected = pb.SEND_RESULT_ONLINE if MODE == "standalone" else pb.SEND_RESULT_UNKNOWN
        check(r.result == expected, f"SendToUser alice: {r}")
        async with httpx.AsyncClient(base_url=HTTP, timeout=TIMEOUT) as client:
            a = await client.post("/api/send", json={"user": "alice", "data": {"dm": "http"}}, headers=AUTH)
        check(a.status_code == 200, a.text)
        check(a.json()["result"] == ("online" if MODE == "standalone" else "unknown"), a.json())
        got = []
        while len(got) < 2:
            frame = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            if "pub" in frame:
                check(frame["pub"]["channel"] == "#alice", frame)
                got.append(frame["pub"]["data"]["dm"])
        check(got == ["grpc", "http"], got)

        async with httpx.AsyncClient(base_url=HTTP, timeout=TIMEOUT) as client:
            d = await client.post("/api/disconnect", json={"user": "alice"}, headers=AUTH)
        check(d.status_code == 200, d.text)
        try:
            while True:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        except websockets.ConnectionClosed as closed:
            check(closed.rcvd is not None and closed.rcvd.code == 4503, f"closed with {closed.rcvd}")
    # and the gRPC method answers too (nobody left to close)
    stub.Disconnect(pb.DisconnectRequest(user="alice"), metadata=META)


def test_send_to_an_offline_user():
    r = stub.SendToUser(pb.SendToUserRequest(user="bob", data=b'{"x":1}',
                                             notification=pb.Notification(title="Hi", body="Bob")), metadata=META)
    # standalone knows bob has no device; distributed here runs without
    # presence, so routing cannot tell whether bob is online
    expected = pb.SEND_RESULT_NO_DEVICES if MODE == "standalone" else pb.SEND_RESULT_UNKNOWN
    check(r.result == expected, r)


def test_bad_input_is_refused_and_stores_nothing():
    before = history_http("api:guarded")["offset"]
    cases = [
        ("oversized data", {"channel": "api:guarded", "data": "x" * 5000}, AUTH, 413, 106),
        ("invalid channel", {"channel": "api guarded", "data": 1}, AUTH, 400, 100),
        ("unknown namespace", {"channel": "nope:guarded", "data": 1}, AUTH, 404, 104),
        ("missing key", {"channel": "api:guarded", "data": 1}, {}, 401, 101),
        ("wrong key", {"channel": "api:guarded", "data": 1}, {"Authorization": "Bearer wrong-key-1"}, 401, 101),
        ("unknown field", {"channel": "api:guarded", "data": 1, "colour": "red"}, AUTH, 400, 100),
    ]
    for name, body, headers, status, code in cases:
        r = http.post("/api/publish", json=body, headers=headers)
        check(r.status_code == status, f"{name}: {r.status_code} {r.text}")
        check(r.json()["error"]["code"] == code, f"{name}: {r.text}")
    r = http.post("/api/publish", content=b'{"channel": "api:guarded", "data": ', headers={**AUTH, "Content-Type": "application/json"})
    check(r.status_code == 400 and r.json()["error"]["code"] == 100, f"malformed JSON: {r.text}")
    r = http.post("/api/broadcast", json={"channels": ["api:guarded", "nope:x"], "data": 1}, headers=AUTH)
    check(r.status_code == 404, f"broadcast with one unknown namespace: {r.text}")
    r = http.post("/api/send", json={"user": "bad user", "data": 1}, headers=AUTH)
    check(r.status_code == 400, f"send to an invalid user: {r.text}")

    g = grpc.StatusCode
    grpc_error(lambda: stub.Publish(pb.PublishRequest(channel="api:guarded", data=b"1")), g.UNAUTHENTICATED)
    grpc_error(lambda: stub.Publish(pb.PublishRequest(channel="api:guarded", data=b"1"),
                                    metadata=[("authorization", "Bearer wrong-key-1")]), g.UNAUTHENTICATED)
    grpc_error(lambda: stub.Publish(pb.PublishRequest(channel="api guarded", data=b"1"), metadata=META), g.INVALID_ARGUMENT)
    grpc_error(lambda: stub.Publish(pb.PublishRequest(channel="api:guarded", data=b"{not json"), metadata=META), g.INVALID_ARGUMENT)
    grpc_error(lambda: stub.Publish(pb.PublishRequest(channel="api:guarded", data=b'"' + b"x" * 5000 + b'"'), metadata=META),
               g.RESOURCE_EXHAUSTED)
    grpc_error(lambda: stub.Publish(pb.PublishRequest(channel="nope:guarded", data=b"1"), metadata=META), g.NOT_FOUND)
    after = history_http("api:guarded")["offset"]
    check(after == before, f"bad input stored something: offset {before} -> {after}")


def main():
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    test_publish_and_history()
    test_broadcast()
    test_idempotency()
    asyncio.run(alice_session())
    test_send_to_an_offline_user()
    test_bad_input_is_refused_and_stores_nothing()
    print(f"ok: server API ({MODE})")


if __name__ == "__main__":
    main()
