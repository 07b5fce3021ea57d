// What a user might run instead of Herald: a Node broadcast server on the
// `ws` package (8.x), one process, speaking the subset of Herald's protocol
// v1 that `herald bench` uses, so the same tools drive both:
//
//   WebSocket /ws   {"id":1,"connect":{"token":JWT}}   (HS256, exp checked)
//                   {"id":2,"subscribe":{"channel":C}} (the token's patterns)
//                   {"ping":{}} every 25 s, answered {"pong":{}}
//   SSE       /sse?channels=C   (Authorization: Bearer JWT)
//   POST /api/publish {"channel","data"}  (Authorization: Bearer API key)
//
// Each publication is serialized once and the same buffer written to every
// subscriber, as Herald does. No history, no resume, no presence: the
// cheapest server that does the job, which is what Herald is measured
// against. GET /stats answers {"connections":N}.
//
// usage: node ws-server.mjs PORT   (HERALD_JWT_SECRET, HERALD_API_KEYS)
// `ws` comes from NODE_PATH (scripts/js-env.sh prints a node_modules with it).

import { createHmac, timingSafeEqual, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] ?? 8090);
const secret = process.env.HERALD_JWT_SECRET ?? "";
const apiKeys = (process.env.HERALD_API_KEYS ?? "").split(",").filter(Boolean);
const epoch = randomBytes(6).toString("hex");
/** channel → { offset, ws: Set<WebSocket>, sse: Set<ServerResponse> } */
const channels = new Map();
let connections = 0;

function channel(name) {
  let c = channels.get(name);
  if (!c) {
    c = { offset: 0, ws: new Set(), sse: new Set() };
    channels.set(name, c);
  }
  return c;
}

/** The claims of an HS256 token signed with the secret, or null. */
function verify(token) {
  const parts = String(token ?? "").split(".");
  if (parts.length !== 3) return null;
  const expected = createHmac("sha256", secret).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  try {
    const header = JSON.parse(Buffer.from(parts[0], "base64url"));
    const claims = JSON.parse(Buffer.from(parts[1], "base64url"));
    if (header.alg !== "HS256" || typeof claims.sub !== "string") return null;
    if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) return null;
    return claims;
  } catch {
    return null;
  }
}

function allowed(claims, name) {
  return (claims.channels ?? []).some((p) =>
    p.endsWith("*") ? name.startsWith(p.slice(0, -1)) : p === name,
  );
}

function bearer(req) {
  const h = req.headers.authorization ?? "";
  return h.startsWith("Bearer ") ? h.slice(7) : null;
}

function reply(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function publish(req, res) {
  if (!apiKeys.includes(bearer(req))) return reply(res, 401, { error: { code: 101, message: "unauthorized" } });
  const chunks = [];
  let size = 0;
  req.on("data", (c) => {
    size += c.length;
    if (size > 1 << 20) req.destroy();
    else chunks.push(c);
  });
  req.on("end", () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks));
    } catch {
      return reply(res, 400, { error: { code: 100, message: "bad JSON" } });
    }
    if (typeof body.channel !== "string") return reply(res, 400, { error: { code: 100, message: "channel" } });
    const c = channel(body.channel);
    c.offset += 1;
    const pub = { channel: body.channel, offset: c.offset, epoch, data: body.data ?? null, ts: Date.now() };
    // serialized once, the same bytes to everyone
    const frame = Buffer.from(JSON.stringify({ pub }));
    for (const ws of c.ws) ws.send(frame, { binary: false });
    if (c.sse.size > 0) {
      const event = Buffer.concat([
        Buffer.from(`event: pub\nid: ${c.offset}\ndata: `),
        Buffer.from(JSON.stringify(pub)),
        Buffer.from("\n\n"),
      ]);
      for (const sse of c.sse) sse.write(event);
    }
    reply(res, 200, { offset: c.offset, epoch });
  });
}

function sse(req, res, url) {
  const claims = verify(bearer(req) ?? url.searchParams.get("token"));
  if (!claims) return reply(res, 401, { error: { code: 101, message: "bad token" } });
  const names = (url.searchParams.get("channels") ?? "").split(",").filter(Boolean);
  if (names.length === 0 || !names.every((n) => allowed(claims, n))) {
    return reply(res, 403, { error: { code: 103, message: "not allowed" } });
  }
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
  connections += 1;
  for (const name of names) {
    const c = channel(name);
    c.sse.add(res);
    res.write(`event: subscribe\ndata: ${JSON.stringify({ channel: name, offset: c.offset, epoch, recovered: true })}\n\n`);
  }
  const ping = setInterval(() => res.write(": ping\n\n"), 15000);
  res.on("close", () => {
    clearInterval(ping);
    connections -= 1;
    for (const name of names) channel(name).sse.delete(res);
  });
}

const server = createServer((req, res) => {
  const url = new URL(req.url, "http://peer");
  if (req.method === "POST" && url.pathname === "/api/publish") return publish(req, res);
  if (req.method === "GET" && url.pathname === "/sse") return sse(req, res, url);
  if (req.method === "GET" && url.pathname === "/healthz") return reply(res, 200, { status: "ok" });
  if (req.method === "GET" && url.pathname === "/stats") return reply(res, 200, { connections });
  reply(res, 404, { error: { code: 404, message: "not found" } });
});

const wss = new WebSocketServer({
  server,
  path: "/ws",
  handleProtocols: (protocols) => (protocols.has("herald.v1.json") ? "herald.v1.json" : false),
});

wss.on("connection", (ws) => {
  connections += 1;
  let claims = null;
  const mine = new Set();
  let answered = true;
  const ping = setInterval(() => {
    if (!answered) return ws.terminate();
    answered = false;
    ws.send('{"ping":{}}');
  }, 25000);
  const answer = (id, ok) => ws.send(JSON.stringify({ id, ok }));
  const refuse = (id, code, message) => ws.send(JSON.stringify({ id, error: { code, message } }));
  ws.on("message", (data) => {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return ws.close(4002, "bad frame");
    }
    if (frame.pong) {
      answered = true;
    } else if (frame.connect) {
      claims = verify(frame.connect.token);
      if (!claims) return ws.close(4003, "bad token");
      answer(frame.id, { client: randomBytes(8).toString("hex"), user: claims.sub });
    } else if (frame.subscribe) {
      const name = frame.subscribe.channel;
      if (!claims) return refuse(frame.id, 101, "connect first");
      if (typeof name !== "string" || !allowed(claims, name)) return refuse(frame.id, 103, "not allowed");
      const c = channel(name);
      c.ws.add(ws);
      mine.add(name);
      answer(frame.id, { offset: c.offset, epoch, recovered: true, publications: [] });
    }
  });
  ws.on("close", () => {
    clearInterval(ping);
    connections -= 1;
    for (const name of mine) channel(name).ws.delete(ws);
  });
});

server.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
process.on("SIGTERM", () => process.exit(0));
