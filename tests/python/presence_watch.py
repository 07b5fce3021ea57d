"""Watches one user on a presence replica and exits 0 once it has seen the
user come online and then go offline (printing each event).

usage: presence_watch.py GRPC_TARGET API_KEY USER
"""

import os
import subprocess
import sys
import tempfile

import grpc

TARGET, API_KEY, USER = sys.argv[1:4]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

out = tempfile.mkdtemp(prefix="herald-watch-stubs-")
proto = os.path.join(ROOT, "proto")
subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
                f"--grpc_python_out={out}", os.path.join(proto, "herald/presence/v1/presence.proto")], check=True)
sys.path.insert(0, out)
from herald.presence.v1 import presence_pb2 as pb, presence_pb2_grpc as pb_grpc  # noqa: E402

with grpc.insecure_channel(TARGET) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = pb_grpc.PresenceStub(channel)
    seen = []
    events = stub.Watch(pb.WatchRequest(users=[USER]), metadata=[("authorization", f"Bearer {API_KEY}")],
                        timeout=30)
    print("watching", flush=True)
    for event in events:
        kind = pb.PresenceEvent.Kind.Name(event.kind)
        print(kind, event.user, event.channel, flush=True)
        if event.user != USER:
            raise SystemExit(f"event for another user: {event}")
        if kind in ("KIND_ONLINE", "KIND_OFFLINE"):
            seen.append(kind)
        if seen[-2:] == ["KIND_ONLINE", "KIND_OFFLINE"]:
            print("ok: online then offline", flush=True)
            break
