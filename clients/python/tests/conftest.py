"""A real `herald standalone` for the session (the binary named by
HERALD_BIN; tests/e2e/python_client.rs passes the one cargo built), a client
for it, and a WebSocket user to watch what the client does."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from websockets.sync.client import ClientConnection, connect

from herald_client import Herald

SECRET = "herald-test-secret-0123456789-abcdef"
API_KEY = "herald-test-key"
#: strict namespaces (104 for others), a small size limit (413 past it) and
#: a namespace keeping only two publications (for unrecoverable positions)
CONFIG = """\
strict_namespaces = true
max_message_bytes = 4096
[namespaces.api]
[namespaces.chat]
[namespaces.short]
history_size = 2
"""
#: how long a test waits for what must happen: generous, as the Rust
#: tests' (a busy machine is slow, not wrong)
WAIT = 60.0
T = TypeVar("T")


@dataclass
class Server:
    http: str
    ws: str
    log: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    binary = os.environ.get("HERALD_BIN")
    if not binary:
        pytest.fail("set HERALD_BIN to a herald binary (tests/e2e/python_client.rs does)")
    workdir = tmp_path_factory.mktemp("herald")
    (workdir / "herald.toml").write_text(CONFIG)
    # HERALD_* variables are strict: pass only ours
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_JWT_SECRET=SECRET,
        HERALD_API_KEYS=API_KEY,
        HERALD_CONFIG=str(workdir / "herald.toml"),
    )
    # --grpc on a free port too: the client does not use it, and the
    # default (50051) may be taken
    process = subprocess.Popen(
        [binary, "standalone", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    log: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            log.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    listening: dict[str, Any] | None = None
    while listening is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            pytest.fail("herald standalone did not start:\n" + "".join(log))
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message") == "listening":
            listening = entry
    addr = listening["addr"]
    yield Server(http=f"http://{addr}", ws=f"ws://{addr}/ws", log=log)
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def herald(server: Server) -> Iterator[Herald]:
    with Herald(server.http, API_KEY) as client:
        yield client


def unique(prefix: str) -> str:
    """A name no other test uses (channels, users)."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def eventually(check: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    """`check()`'s first truthy answer, asked until `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened within {timeout} s: {what} (last: {answer!r})")
        time.sleep(0.02)


class User:
    """A WebSocket client of the edge, as a browser using the SDK would be."""

    def __init__(self, ws: ClientConnection, token: str) -> None:
        self.ws = ws
        self._next_id = 0
        #: the reply to `connect` (`ok` or `error`)
        self.connected = self.command("connect", {"token": token})

    def frame(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = WAIT) -> dict[str, Any]:
        """The next frame `wanted` accepts (answering pings on the way)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = json.loads(self.ws.recv(timeout=max(0.0, deadline - time.monotonic())))
            if "ping" in frame:
                self.ws.send(json.dumps({"pong": {}}))
            elif wanted(frame):
                return frame

    def command(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Sends a command; its reply (`ok` or `error`)."""
        self._next_id += 1
        frame_id = self._next_id
        self.ws.send(json.dumps({"id": frame_id, name: args}))
        return self.frame(lambda f: f.get("id") == frame_id)

    def publication(self, channel: str) -> dict[str, Any]:
        return self.frame(lambda f: "pub" in f and f["pub"]["channel"] == channel)["pub"]


@pytest.fixture
def connect_user(server: Server) -> Iterator[Callable[[str], User]]:
    """Opens a WebSocket and sends `connect` with the token given."""
    opened: list[ClientConnection] = []

    def open_user(token: str) -> User:
        ws = connect(server.ws, subprotocols=["herald.v1.json"], open_timeout=WAIT)
        opened.append(ws)
        return User(ws, token)

    yield open_user
    for ws in opened:
        ws.close()
