"""Asks a presence replica, with grpcio stubs generated from proto/, about
some users and a channel, and prints one JSON line:
{"is_online": {user: [online, connections, [transports]]},
 "get_online": [users], "channel": [[user, connections]], "stats": [users, connections, channels]}

usage: presence_query.py GRPC_TARGET API_KEY CHANNEL USER...
"""

import json
import os
import subprocess
import sys
import tempfile

import grpc

TARGET, API_KEY, CHANNEL, *USERS = sys.argv[1:]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def stubs():
    out = tempfile.mkdtemp(prefix="herald-presence-stubs-")
    proto = os.path.join(ROOT, "proto")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--python_out={out}",
                    f"--grpc_python_out={out}", os.path.join(proto, "herald/presence/v1/presence.proto")],
                   check=True)
    sys.path.insert(0, out)
    from herald.presence.v1 import presence_pb2, presence_pb2_grpc
    return presence_pb2, presence_pb2_grpc


pb, pb_grpc = stubs()
META = [("authorization", f"Bearer {API_KEY}")]
with grpc.insecure_channel(TARGET) as channel:
    stub = pb_grpc.PresenceStub(channel)
    answer = {"is_online": {}, "get_online": [], "channel": [], "stats": []}
    for user in USERS:
        r = stub.IsOnline(pb.IsOnlineRequest(user=user), metadata=META, timeout=5)
        answer["is_online"][user] = [r.online, r.connections, sorted(r.transports)]
    answer["get_online"] = sorted(stub.GetOnline(pb.GetOnlineRequest(users=USERS), metadata=META, timeout=5).online)
    members = stub.ChannelPresence(pb.ChannelPresenceRequest(channel=CHANNEL), metadata=META, timeout=5).members
    answer["channel"] = sorted([m.user, m.connections] for m in members)
    s = stub.Stats(pb.StatsRequest(), metadata=META, timeout=5)
    answer["stats"] = [s.users, s.connections, s.channels]
    print(json.dumps(answer, sort_keys=True))
