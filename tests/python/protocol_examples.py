"""Every example of docs/PROTOCOL.md, sent to running servers and compared
with what the document says they answer.

usage: protocol_examples.py --configs DOC
         prints the document's server configurations as JSON
         ({"main": "<toml>", …}), for the caller to start a server with each
       protocol_examples.py DOC SECRET API_KEY NAME=URL… [--only EXCHANGE]
         runs every exchange against the servers (NAME as in the document's
         configurations, URL `http://host:port`); SECRET signs the tokens

How the document marks its examples
-----------------------------------

Every fenced block of the document is one of:

- ```` ```toml config NAME ````: the configuration of the server NAME
  (`herald standalone` with this file as `HERALD_CONFIG`);
- ```` ```json tokens ````: the tokens the examples use, by name: either the
  claims (signed HS256 with the server's secret), or
  `{"header": {…}, "claims": {…}, "secret": "…"}` for a token signed
  otherwise, or `{"literal": "…"}` for a text that is no JWT. An `exp` of
  `"<in N seconds|minutes|hours>"` or `"<N seconds ago>"` is counted from
  the moment the token is used;
- a part of an exchange. An exchange starts with the comment
  `<!-- exchange: NAME [server=NAME] -->` (server `main` unless named) and
  ends at the next exchange or heading. Its blocks are `LANG ROLE [CONN]
  [unordered]`, run in document order:
  - `json client CONN`: WebSocket frames, one per line, sent on the
    connection CONN (opened at `/ws` with the subprotocol `herald.v1.json`
    on first use; `ws` when not named). A line `close` closes it (1000);
    a line `binary TEXT` sends TEXT in a binary frame.
  - `json server CONN`: the frames CONN must receive next, one per line, in
    that order (`unordered`: in any order). A line `close CODE REASON` is
    the WebSocket close frame. A `{"ping":{}}` that is not the next frame
    expected is passed over (and answered with `{"pong":{}}` when the block
    expects no ping at all); any other frame that is not the next expected
    fails.
  - `http client CONN`: an HTTP request (`METHOD PATH`, header lines, a
    blank line, the body), sent at once; its answer is awaited by the next
    `http server CONN` block (`http` when not named).
  - `http server CONN`: the answer: `HTTP/1.1 CODE …` and the headers it
    must have (others may be there too), a blank line, then the body: JSON
    compared as JSON, an event stream compared event by event (`: ping`
    comments passed over; later `http server CONN` blocks without a status
    line expect more events of the same stream), other text as text.

Placeholders
------------

In what a client sends: `<token:NAME>` (a token of the tokens block, made
now), `<api-key>`, `<NAME>` (a value captured earlier in the exchange, as
text), `<N × TEXT>` (TEXT N times), `<base64url TEXT>` (TEXT encoded,
without padding). Inner placeholders are replaced first.

In what a server answers (names are lower case; `<JWT>` is text): a JSON
string that is only `"<any>"` matches any value; `"<NAME>"` matches any
value the first time and captures it, and must be that value again every
later time in the exchange. Inside a longer string (or an HTTP or SSE
line), `<any>` matches any text and `<NAME>` captures (or must repeat)
some. Everything else must be equal: objects have exactly the members
shown, arrays exactly the items.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import re
import sys
import time
from dataclasses import dataclass, field

import httpx
import websockets

SUBPROTOCOL = "herald.v1.json"
# How long one server block may wait for what it expects.
WAIT = 20
PLACEHOLDER = re.compile(r"<([a-z][a-z0-9_]*)>")
INNERMOST = re.compile(r"<([^<>]+)>")


class Mismatch(Exception):
    """An example's answer is not what the document says."""


# ---------------------------------------------------------------- the document

@dataclass
class Block:
    lang: str
    role: str
    conn: str | None
    flags: set
    text: str
    line: int


@dataclass
class Exchange:
    name: str
    server: str
    line: int
    blocks: list = field(default_factory=list)


def parse(doc_path):
    """The document's configurations, tokens and exchanges; raises on any
    fenced block that is none of them (an example nobody checks)."""
    configs, tokens, exchanges, errors = {}, {}, [], []
    lines = open(doc_path, encoding="utf-8").read().split("\n")
    current = None
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = re.match(r"\s*<!--\s*exchange:\s*(\S+)(.*?)-->", line)
        if marker:
            attrs = dict(a.split("=", 1) for a in marker.group(2).split())
            current = Exchange(marker.group(1), attrs.pop("server", "main"), i + 1)
            if attrs:
                errors.append(f"line {i + 1}: unknown exchange attributes {attrs}")
            if any(e.name == current.name for e in exchanges):
                errors.append(f"line {i + 1}: a second exchange named {current.name}")
            exchanges.append(current)
        elif re.match(r"#{1,6} ", line):
            current = None
        elif line.startswith("```"):
            info = line[3:].split()
            start = i + 1
            i += 1
            body = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            text = "\n".join(body)
            lang, role = (info + ["", ""])[:2]
            rest = info[2:]
            if role == "config" and rest:
                configs[rest[0]] = text + "\n"
            elif role == "tokens":
                tokens.update(json.loads(text))
            elif current is None:
                errors.append(f"line {start}: a ``` {' '.join(info)} block outside any exchange "
                              "(every example must be checked: put it in an exchange)")
            elif role not in ("client", "server"):
                errors.append(f"line {start}: block role must be client or server, not {role!r}")
            else:
                flags = {f for f in rest if f == "unordered"}
                names = [f for f in rest if f != "unordered"]
                conn = names[0] if names else None
                current.blocks.append(Block(lang, role, conn, flags, text, start))
        i += 1
    if errors:
        raise SystemExit("docs: " + "\n".join(errors))
    return configs, tokens, exchanges


# ---------------------------------------------------------------- tokens

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def relative_time(value):
    """`<in 1 hour>` / `<5 seconds ago>` → Unix seconds; others unchanged."""
    if not isinstance(value, str):
        return value
    units = {"second": 1, "minute": 60, "hour": 3600}
    m = re.fullmatch(r"<in (\d+) (second|minute|hour)s?>", value)
    if m:
        return int(time.time()) + int(m.group(1)) * units[m.group(2)]
    m = re.fullmatch(r"<(\d+) (second|minute|hour)s? ago>", value)
    if m:
        return int(time.time()) - int(m.group(1)) * units[m.group(2)]
    return value


def mint(spec, secret):
    if "literal" in spec:
        return spec["literal"]
    if "claims" in spec:
        header = spec.get("header", {"alg": "HS256", "typ": "JWT"})
        claims, key = spec["claims"], spec.get("secret", secret)
    else:
        header, claims, key = {"alg": "HS256", "typ": "JWT"}, spec, secret
    claims = {k: relative_time(v) for k, v in claims.items()}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


# ---------------------------------------------------------------- matching

class Run:
    """One exchange's state: captured values, connections."""

    def __init__(self, tokens, secret, api_key, base):
        self.tokens, self.secret, self.api_key, self.base = tokens, secret, api_key, base
        self.vars = {}
        self.ws = {}
        self.http = {}  # conn → task answering (response, event reader)
        self.streams = {}  # conn → EventReader of an open event stream

    # -------------------------------------------------- what the client sends

    def fill(self, text):
        """Replaces the placeholders of client text, innermost first."""
        def one(m):
            inner = m.group(1)
            if inner.startswith("token:"):
                name = inner[len("token:"):]
                if name not in self.tokens:
                    raise SystemExit(f"docs: no token {name!r} in the tokens block")
                return mint(self.tokens[name], self.secret)
            if inner == "api-key":
                return self.api_key
            rep = re.fullmatch(r"(\d+) × (.+)", inner)
            if rep:
                return rep.group(2) * int(rep.group(1))
            if inner.startswith("base64url "):
                return b64url(inner[len("base64url "):].encode())
            if inner in self.vars:
                value = self.vars[inner]
                return value if isinstance(value, str) else json.dumps(value)
            raise SystemExit(f"docs: nothing captured as <{inner}> before it is used")
        while True:
            filled = INNERMOST.sub(one, text)
            if filled == text:
                return filled
            text = filled

    # -------------------------------------------------- what the server says

    def match_text(self, expected, actual, captured):
        """A string with placeholders against a string; captures into
        `captured` (a scratch copy of the vars)."""
        if not isinstance(actual, str):
            return False
        pattern, names, pos = "", [], 0
        for m in PLACEHOLDER.finditer(expected):
            pattern += re.escape(expected[pos:m.start()])
            name = m.group(1)
            if name == "any":
                pattern += ".*?"
            elif name in captured:
                value = captured[name]
                pattern += re.escape(value if isinstance(value, str) else json.dumps(value))
            elif name in names:
                pattern += f"(?P={name})"
            else:
                pattern += f"(?P<{name}>.+?)"
                names.append(name)
            pos = m.end()
        pattern += re.escape(expected[pos:])
        found = re.fullmatch(pattern, actual, re.S)
        if not found:
            return False
        for name in names:
            captured[name] = found.group(name)
        return True

    def match(self, expected, actual, captured):
        if isinstance(expected, str):
            whole = PLACEHOLDER.fullmatch(expected)
            if whole:
                name = whole.group(1)
                if name == "any":
                    return True
                if name in captured:
                    return captured[name] == actual
                captured[name] = actual
                return True
            return self.match_text(expected, actual, captured)
        if isinstance(expected, dict):
            return (isinstance(actual, dict) and expected.keys() == actual.keys()
                    and all(self.match(v, actual[k], captured) for k, v in expected.items()))
        if isinstance(expected, list):
            return (isinstance(actual, list) and len(expected) == len(actual)
                    and all(self.match(e, a, captured) for e, a in zip(expected, actual)))
        if isinstance(expected, bool) or isinstance(actual, bool):
            return expected is actual
        return expected == actual

    def try_match(self, expected, actual):
        """Matches and keeps the captures only when the whole value matched."""
        scratch = dict(self.vars)
        if self.match(expected, actual, scratch):
            self.vars = scratch
            return True
        return False


# ---------------------------------------------------------------- WebSocket

def is_ping(frame):
    return frame == {"ping": {}}


async def ws_send(run, block):
    conn = block.conn or "ws"
    if conn not in run.ws:
        url = run.base.replace("http", "ws", 1) + "/ws"
        ws = await websockets.connect(url, subprotocols=[SUBPROTOCOL], max_size=None)
        if ws.subprotocol != SUBPROTOCOL:
            raise Mismatch(f"the server did not take the subprotocol {SUBPROTOCOL}: {ws.subprotocol!r}")
        run.ws[conn] = ws
    ws = run.ws[conn]
    for line in block.text.split("\n"):
        if not line.strip():
            continue
        if line.strip() == "close":
            await ws.close()
            continue
        if line.startswith("binary "):
            await ws.send(run.fill(line[len("binary "):]).encode())
            continue
        await ws.send(run.fill(line))


def expected_ws(block):
    items = []
    for line in block.text.split("\n"):
        if not line.strip():
            continue
        close = re.fullmatch(r"close (\d+) (.*)", line.strip())
        if close:
            items.append(("close", int(close.group(1)), close.group(2)))
        else:
            items.append(("frame", json.loads(line)))
    return items


async def ws_expect(run, block):
    conn = block.conn or "ws"
    ws = run.ws.get(conn)
    if ws is None:
        raise Mismatch(f"nothing was sent on {conn} before what it should receive")
    items = expected_ws(block)
    deadline = time.monotonic() + WAIT
    got = []

    async def next_frame():
        left = deadline - time.monotonic()
        try:
            text = await asyncio.wait_for(ws.recv(), max(left, 0.01))
        except asyncio.TimeoutError:
            raise Mismatch(f"{conn} received nothing more within {WAIT} s; "
                           f"still expected {describe(pending)}; received {got}")
        except websockets.ConnectionClosed as closed:
            frame = closed.rcvd
            return ("close", frame.code if frame else None, frame.reason if frame else None)
        try:
            return ("frame", json.loads(text))
        except ValueError:
            return ("text", text)

    def matches(item, received):
        if item[0] != received[0]:
            return False
        if item[0] == "close":
            return item[1] == received[1] and run.match_text(item[2], received[2] or "", dict(run.vars))
        return run.try_match(item[1], received[1])

    pending = list(items)
    expects_pings = any(i[0] == "frame" and is_ping(i[1]) for i in items)
    while pending:
        received = await next_frame()
        candidates = pending if "unordered" in block.flags else pending[:1]
        hit = next((item for item in candidates if matches(item, received)), None)
        if hit is not None:
            pending.remove(hit)
            got.append(received[1] if received[0] == "frame" else received)
            continue
        if received[0] == "frame" and is_ping(received[1]):
            if not expects_pings:
                await ws.send('{"pong":{}}')
            continue
        raise Mismatch(f"{conn} received {show(received)}\n  expected {describe(candidates)}"
                       f"\n  (received before it in this block: {got})")


def show(received):
    if received[0] == "frame":
        return json.dumps(received[1])
    if received[0] == "close":
        return f"close {received[1]} {received[2]}"
    return repr(received[1])


def describe(items):
    return " or ".join(
        json.dumps(i[1]) if i[0] == "frame" else f"close {i[1]} {i[2]}" for i in items) or "nothing"


# ---------------------------------------------------------------- HTTP

class EventReader:
    """The events of a text/event-stream answer, one at a time."""

    def __init__(self, response):
        self.lines = response.aiter_lines()

    async def next_event(self):
        fields = []
        while True:
            try:
                line = await self.lines.__anext__()
            except StopAsyncIteration:
                return None if not fields else fields
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                fields.append((":", line[1:].strip()))
                continue
            name, _, value = line.partition(":")
            fields.append((name, value[1:] if value.startswith(" ") else value))


def parse_request(text):
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, target = lines[0].split()[:2]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    return method, target, headers, body.strip()


async def http_send(run, block):
    conn = block.conn or "http"
    method, target, headers, body = parse_request(run.fill(block.text))
    client = httpx.AsyncClient(base_url=run.base, timeout=httpx.Timeout(WAIT + 70.0))
    request = client.build_request(method, target, headers=headers,
                                   content=body.encode() if body else None)

    async def send():
        response = await client.send(request, stream=True)
        return client, response

    run.http[conn] = asyncio.ensure_future(send())


def parse_expected_response(text):
    """(status, headers, body) of an expected answer; status None when the
    block continues an event stream."""
    if not text.startswith("HTTP/"):
        return None, {}, text
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def expected_events(text):
    events, fields = [], []
    for line in text.split("\n") + [""]:
        if line == "":
            if fields:
                events.append(fields)
            fields = []
            continue
        if line.startswith(":"):
            fields.append((":", line[1:].strip()))
            continue
        name, _, value = line.partition(":")
        fields.append((name, value[1:] if value.startswith(" ") else value))
    return events


def match_event(run, expected, actual):
    if actual is None or len(expected) != len(actual):
        return False
    scratch = dict(run.vars)
    for (en, ev), (an, av) in zip(expected, actual):
        if en != an:
            return False
        if en == "data" and ev[:1] in ("{", "["):
            try:
                parsed = json.loads(av)
            except ValueError:
                return False
            if not run.match(json.loads(ev), parsed, scratch):
                return False
        elif not run.match_text(ev, av, scratch):
            return False
    run.vars = scratch
    return True


def show_event(fields):
    if fields is None:
        return "the end of the stream"
    return "\n".join(f"{n}: {v}" if n != ":" else f": {v}" for n, v in fields)


async def http_expect(run, block):
    conn = block.conn or "http"
    status, headers, body = parse_expected_response(block.text)
    deadline = time.monotonic() + WAIT
    if status is not None:
        task = run.http.pop(conn, None)
        if task is None:
            raise Mismatch(f"no request was sent on {conn} before its answer")
        try:
            client, response = await asyncio.wait_for(task, WAIT)
        except asyncio.TimeoutError:
            raise Mismatch(f"{conn}: no answer within {WAIT} s")
        run.http[conn] = (client, response)
        if response.status_code != status:
            await response.aread()
            raise Mismatch(f"{conn}: status {response.status_code}, expected {status}: {response.text}")
        for name, value in headers.items():
            actual = response.headers.get(name)
            if actual is None or not run.match_text(value, actual, run.vars):
                raise Mismatch(f"{conn}: header {name}: {actual!r}, expected {value!r}")
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            run.streams[conn] = EventReader(response)
        else:
            try:
                raw = await asyncio.wait_for(response.aread(), max(deadline - time.monotonic(), 0.01))
            except asyncio.TimeoutError:
                raise Mismatch(f"{conn}: the body did not end within {WAIT} s")
            text = raw.decode()
            body = body.strip()
            if body[:1] in ("{", "["):
                try:
                    actual = json.loads(text)
                except ValueError:
                    raise Mismatch(f"{conn}: body is no JSON: {text!r}")
                if not run.try_match(json.loads(body), actual):
                    raise Mismatch(f"{conn}: body {text}\n  expected {body}")
            elif not run.match_text(body, text.strip(), run.vars):
                raise Mismatch(f"{conn}: body {text!r}\n  expected {body!r}")
            return
    reader = run.streams.get(conn)
    if reader is None:
        if body.strip():
            raise Mismatch(f"{conn}: events expected, but {conn} is no open event stream")
        return
    pending = expected_events(body)
    got = []
    while pending:
        left = deadline - time.monotonic()
        try:
            event = await asyncio.wait_for(reader.next_event(), max(left, 0.01))
        except asyncio.TimeoutError:
            raise Mismatch(f"{conn}: no event within {WAIT} s; still expected:\n"
                           + "\n\n".join(show_event(e) for e in pending)
                           + "\n  received:\n" + "\n\n".join(show_event(e) for e in got))
        candidates = pending if "unordered" in block.flags else pending[:1]
        hit = next((e for e in candidates if match_event(run, e, event)), None)
        if hit is not None:
            pending.remove(hit)
            got.append(event)
            continue
        if event is not None and all(n == ":" for n, _ in event):
            continue  # a comment (`: ping`) nobody expected
        raise Mismatch(f"{conn}: received the event\n{show_event(event)}\n  expected\n"
                       + "\n or\n".join(show_event(e) for e in candidates)
                       + "\n  (received before it in this block:\n"
                       + "\n\n".join(show_event(e) for e in got) + ")")


# ---------------------------------------------------------------- running

async def run_exchange(exchange, tokens, secret, api_key, servers):
    if exchange.server not in servers:
        raise SystemExit(f"exchange {exchange.name}: no server {exchange.server} was given")
    run = Run(tokens, secret, api_key, servers[exchange.server])
    try:
        for block in exchange.blocks:
            where = f"line {block.line}"
            try:
                if block.lang == "http":
                    await (http_send if block.role == "client" else http_expect)(run, block)
                else:
                    await (ws_send if block.role == "client" else ws_expect)(run, block)
            except Mismatch as e:
                raise Mismatch(f"{where}: {e}") from None
    finally:
        for ws in run.ws.values():
            await ws.close()
        for held in run.http.values():
            if isinstance(held, tuple):
                client, response = held
                await response.aclose()
                await client.aclose()
            else:
                held.cancel()


async def main(argv):
    if argv[:1] == ["--configs"]:
        configs, _, _ = parse(argv[1])
        print(json.dumps(configs))
        return 0
    only = None
    if "--only" in argv:
        at = argv.index("--only")
        only = argv[at + 1]
        argv = argv[:at] + argv[at + 2:]
    doc, secret, api_key = argv[:3]
    servers = dict(a.split("=", 1) for a in argv[3:])
    _, tokens, exchanges = parse(doc)
    if not exchanges:
        raise SystemExit("docs: no exchanges found")
    failures, ran = [], 0
    for exchange in exchanges:
        if only and exchange.name != only:
            continue
        ran += 1
        try:
            await run_exchange(exchange, tokens, secret, api_key, servers)
            print(f"ok: {exchange.name}")
        except Mismatch as e:
            failures.append(exchange.name)
            print(f"FAILED: exchange {exchange.name} (docs/PROTOCOL.md line {exchange.line})\n  {e}\n")
    if failures:
        print(f"{len(failures)} of the document's exchanges do not hold: {', '.join(failures)}")
        return 1
    if not ran:
        raise SystemExit(f"no exchange named {only}")
    print(f"ok: protocol examples ({ran} exchanges)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
