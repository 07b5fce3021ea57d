// A fake Herald for the SDK's unit tests: protocol v1 over WebSocket, SSE
// and long polling, enough of it to drive the SDK — channel histories with
// offsets and epochs, resume, token expiry and refresh — and handles a
// test pulls: block a transport, drop every connection, restart onto new
// epochs. Tokens are read, not verified: `fakeToken` makes them.
//
// Also the browser globals the SDK needs in node: `WebSocket` (from `ws`),
// a small `EventSource`, and `online` / `visibilitychange` events.
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const modules = process.env.HERALD_TEST_JS_MODULES
  ?? execFileSync(`${root}/scripts/js-env.sh`, { encoding: 'utf8' }).trim();
const require = createRequire(`${modules}/`);
const { WebSocket: WsClient, WebSocketServer } = require('ws');

// ---------------------------------------------------------------- globals

/** `ws`'s client, quiet about errors as a browser's is (it tells `onclose`). */
class TestWebSocket extends WsClient {
  constructor(...args) {
    super(...args);
    this.on('error', () => {});
  }
}

/** Enough of EventSource: `onopen`, `onerror`, named events with `data`
 * and `lastEventId`, `close()`; no reconnect of its own (the SDK closes it
 * on error anyway). */
class TestEventSource {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.lastEventId = '';
    this.onopen = null;
    this.onerror = null;
    this.listeners = new Map();
    this.request = http.get(url, (response) => {
      if (response.statusCode !== 200 || this.readyState === 2) {
        response.resume();
        this.#fail();
        return;
      }
      this.readyState = 1;
      this.onopen?.({});
      let buffer = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => {
        buffer += chunk;
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          this.#dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      });
      response.on('end', () => this.#fail());
      response.on('error', () => this.#fail());
    });
    this.request.on('error', () => this.#fail());
  }

  addEventListener(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(listener);
  }

  close() {
    this.readyState = 2;
    this.request.destroy();
  }

  #dispatch(block) {
    let type = 'message';
    const data = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'event') type = value;
      if (field === 'data') data.push(value);
      if (field === 'id') this.lastEventId = value;
    }
    if (data.length === 0 || this.readyState !== 1) return;
    const event = { data: data.join('\n'), lastEventId: this.lastEventId };
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }

  #fail() {
    if (this.readyState === 2) return;
    this.readyState = 2;
    this.onerror?.({});
  }
}

/** The window's events and state the SDK listens to. */
const windowEvents = new EventTarget();
const documentEvents = new EventTarget();
export const browser = {
  online() {
    globalThis.navigator.onLine = true;
    windowEvents.dispatchEvent(new Event('online'));
  },
  offline() {
    globalThis.navigator.onLine = false;
    windowEvents.dispatchEvent(new Event('offline'));
  },
  visible() {
    globalThis.document.visibilityState = 'visible';
    documentEvents.dispatchEvent(new Event('visibilitychange'));
  },
  hidden() {
    globalThis.document.visibilityState = 'hidden';
    documentEvents.dispatchEvent(new Event('visibilitychange'));
  },
};
globalThis.WebSocket = TestWebSocket;
globalThis.EventSource = TestEventSource;
globalThis.addEventListener = windowEvents.addEventListener.bind(windowEvents);
globalThis.removeEventListener = windowEvents.removeEventListener.bind(windowEvents);
Object.defineProperty(globalThis, 'navigator', { value: { onLine: true }, writable: true, configurable: true });
globalThis.document = {
  visibilityState: 'visible',
  addEventListener: documentEvents.addEventListener.bind(documentEvents),
  removeEventListener: documentEvents.removeEventListener.bind(documentEvents),
};

// ---------------------------------------------------------------- tokens

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** A token the fake accepts: `sub`, `iat`, `exp` (seconds from now). */
export function fakeToken(user = 'alice', ttl = 3600) {
  const now = Math.floor(Date.now() / 1000);
  return `${b64({ alg: 'none' })}.${b64({ sub: user, iat: now, exp: now + ttl })}.x`;
}

function claimsOf(token) {
  try {
    return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- cursors

function encodeCursor(entries) {
  return Buffer.from(JSON.stringify(entries)).toString('base64url');
}

/** [[channel, epoch, offset], …] from either cursor form the SDK sends. */
function decodeCursor(text) {
  if (!text) return [];
  try {
    const value = JSON.parse(Buffer.from(text, 'base64url').toString());
    return Array.isArray(value) ? value : value.p ?? [];
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------- the server

let epochs = 0;
const newEpoch = () => `epoch${++epochs}`;

export class FakeHerald {
  /** Every command and request seen: {kind, …}. */
  seen = [];
  blocked = new Set();
  /** Replay everything on every resume, whatever the position (a server
   * that repeats itself: the SDK must drop what it saw). */
  sloppy = false;
  /** WebSocket upgrades are left unanswered. */
  hang = false;
  #histories = new Map();
  #epoch = newEpoch();
  #connections = new Set();
  #hung = new Set();
  #http;
  #wss;

  static async start() {
    const fake = new FakeHerald();
    await fake.#listen();
    return fake;
  }

  get url() {
    return `http://127.0.0.1:${this.#http.address().port}`;
  }

  count(kind) {
    return this.seen.filter((s) => s.kind === kind).length;
  }

  /** Stores a publication and delivers it to every live subscriber. */
  publish(channel, data) {
    const history = this.#history(channel);
    const pub = { channel, offset: history.pubs.length + 1, epoch: history.epoch, data, ts: Date.now() };
    history.pubs.push(pub);
    for (const connection of this.#connections) connection.deliver(pub);
    return pub;
  }

  /** Every connection goes at once, as when the network is cut (a
   * long-poll client between two polls: its next poll). */
  drop() {
    this.#toAll((connection) => connection.kill(), (response) => response.destroy());
  }

  /** Closes every connection with a close code (and its `disconnect` push). */
  closeAll(code, reason = 'closed', reconnect = code < 4500) {
    this.#toAll((connection) => connection.close(code, reason, reconnect), (response) => {
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ messages: [{ disconnect: { code, reason, reconnect } }], cursor: '' }));
    });
  }

  #toAll(action, nextPoll) {
    const connections = [...this.#connections];
    connections.forEach(action);
    if (!connections.some((c) => c.transport === 'poll')) this.nextPoll = nextPoll;
  }

  /** A restart without its history: every channel starts a new epoch. */
  restart() {
    this.drop();
    this.#epoch = newEpoch();
    this.#histories.clear();
  }

  live(transport) {
    return [...this.#connections].filter((c) => c.transport === transport).length;
  }

  async stop() {
    this.drop();
    for (const socket of this.#hung) socket.destroy();
    this.#http.closeAllConnections();
    this.#wss.close();
    await new Promise((resolve) => this.#http.close(resolve));
  }

  #history(channel) {
    if (!this.#histories.has(channel)) this.#histories.set(channel, { epoch: this.#epoch, pubs: [] });
    return this.#histories.get(channel);
  }

  /** Where a subscriber starts, and what it missed (the server's rule). */
  resume(channel, since) {
    const { epoch, pubs } = this.#history(channel);
    const offset = pubs.length;
    if (!since) return { offset, epoch };
    if (this.sloppy) return { offset, epoch, recovered: true, publications: pubs };
    const fromStart = since.offset === 0 && since.epoch === '';
    if (fromStart || since.epoch === epoch) {
      return { offset, epoch, recovered: true, publications: pubs.filter((p) => p.offset > since.offset) };
    }
    // another epoch: what it had is gone, the new epoch is all new to it
    return { offset, epoch, recovered: false, publications: pubs };
  }

  async #listen() {
    this.#wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => [...protocols][0] });
    this.#http = http.createServer((request, response) => this.#request(request, response));
    this.#http.on('upgrade', (request, socket, head) => {
      this.seen.push({ kind: 'upgrade' });
      if (this.hang) {
        // a network that swallows the attempt
        socket.on('error', () => {});
        this.#hung.add(socket);
        return;
      }
      if (this.blocked.has('websocket')) {
        socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      this.#wss.handleUpgrade(request, socket, head, (ws) => this.#connections.add(new WsConnection(this, ws)));
    });
    await new Promise((resolve) => this.#http.listen(0, '127.0.0.1', resolve));
  }

  #request(request, response) {
    const url = new URL(request.url, 'http://fake');
    const transport = { '/sse': 'sse', '/poll': 'poll' }[url.pathname];
    if (!transport) {
      response.writeHead(404).end();
      return;
    }
    const fate = transport === 'poll' ? this.nextPoll : null;
    if (transport === 'poll') this.nextPoll = null;
    if (this.blocked.has(transport)) {
      response.writeHead(403).end();
      return;
    }
    const token = url.searchParams.get('token') ?? request.headers.authorization?.replace(/^Bearer /, '');
    const claims = token && claimsOf(token);
    const channels = (url.searchParams.get('channels') ?? '').split(',').filter(Boolean);
    if (!claims || claims.exp * 1000 < Date.now()) {
      response.writeHead(401, { 'Content-Type': 'application/json' });
      response.end(JSON.stringify({ error: { code: claims ? 109 : 101, message: 'bad token' } }));
      return;
    }
    const all = [...channels, `#${claims.sub}`];
    if (transport === 'sse') {
      const cursor = decodeCursor(url.searchParams.get('last_event_id'));
      this.seen.push({ kind: 'sse', token, channels, cursor });
      this.#connections.add(new SseConnection(this, response, claims, all, cursor));
    } else {
      const cursor = decodeCursor(url.searchParams.get('cursor'));
      this.seen.push({ kind: 'poll', token, channels, cursor });
      if (fate) fate(response);
      else new PollConnection(this, request, response, all, cursor, Number(url.searchParams.get('timeout') ?? 25));
    }
  }

  /** Called by connections. */
  forget(connection) {
    this.#connections.delete(connection);
  }

  hold(connection) {
    this.#connections.add(connection);
  }
}

class WsConnection {
  transport = 'websocket';
  #channels = new Set();
  #expiry = null;

  constructor(fake, ws) {
    this.fake = fake;
    this.ws = ws;
    ws.on('message', (text) => this.#command(JSON.parse(String(text))));
    ws.on('close', () => this.#gone());
    ws.on('error', () => this.#gone());
  }

  #send(frame) {
    if (this.ws.readyState === 1) this.ws.send(JSON.stringify(frame));
  }

  #expires(claims) {
    clearTimeout(this.#expiry);
    this.#expiry = setTimeout(() => this.close(4509, 'token expired', true), claims.exp * 1000 - Date.now());
  }

  #command(frame) {
    const { id } = frame;
    const [kind] = Object.keys(frame).filter((k) => k !== 'id');
    const body = frame[kind];
    this.fake.seen.push({ kind, transport: 'websocket', ...body });
    const ok = (value) => this.#send({ id, ok: value });
    if (kind === 'connect' || kind === 'refresh') {
      const claims = claimsOf(body.token);
      if (!claims || claims.exp * 1000 < Date.now()) {
        this.#send({ id, error: { code: 109, message: 'token expired' } });
        if (kind === 'connect') this.close(4509, 'token expired', true);
        return;
      }
      this.#expires(claims);
      if (kind === 'refresh') {
        ok({ exp: claims.exp });
        return;
      }
      const personal = `#${claims.sub}`;
      this.#channels.add(personal);
      const reply = { client: 'c1', user: claims.sub, ping_interval: 25 };
      if (body.personal_since) reply.personal = this.fake.resume(personal, body.personal_since);
      ok(reply);
    } else if (kind === 'subscribe') {
      this.#channels.add(body.channel);
      ok(this.fake.resume(body.channel, body.since));
    } else if (kind === 'unsubscribe') {
      this.#channels.delete(body.channel);
      ok({});
    } else if (kind === 'publish') {
      ok({ offset: this.fake.publish(body.channel, body.data).offset });
    } else if (kind !== 'pong') {
      this.#send({ id, error: { code: 100, message: `unknown command ${kind}` } });
    }
  }

  deliver(pub) {
    if (this.#channels.has(pub.channel)) this.#send({ pub });
  }

  close(code, reason, reconnect) {
    this.#send({ disconnect: { code, reason, reconnect } });
    this.ws.close(code, reason);
    this.#gone();
  }

  kill() {
    this.ws.terminate();
    this.#gone();
  }

  #gone() {
    clearTimeout(this.#expiry);
    this.fake.forget(this);
  }
}

class SseConnection {
  transport = 'sse';
  #expiry;
  #events = 0;

  constructor(fake, response, claims, channels, cursor) {
    this.fake = fake;
    this.response = response;
    this.channels = new Set(channels);
    response.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    response.write('retry: 3000\n\n');
    const positions = new Map(cursor.map(([c, e, o]) => [c, { epoch: e, offset: o }]));
    for (const channel of channels) {
      const ok = this.fake.resume(channel, positions.get(channel));
      for (const pub of ok.publications ?? []) this.deliver(pub, true);
      const { publications, ...where } = ok;
      this.#event('subscribe', { channel, ...where, recovered: ok.recovered ?? true });
    }
    this.#expiry = setTimeout(() => this.close(4509, 'token expired', true), claims.exp * 1000 - Date.now());
    response.on('close', () => this.#gone());
  }

  #event(kind, body) {
    // ids stay opaque to the SDK, as the real server's `h1.…` ones
    this.response.write(`event: ${kind}\ndata: ${JSON.stringify(body)}\nid: h1.fake.${++this.#events}\n\n`);
  }

  deliver(pub, replay = false) {
    if (replay || this.channels.has(pub.channel)) this.#event('pub', pub);
  }

  close(code, reason, reconnect) {
    this.#event('disconnect', { code, reason, reconnect });
    this.response.end();
    this.#gone();
  }

  kill() {
    this.response.destroy();
    this.#gone();
  }

  #gone() {
    clearTimeout(this.#expiry);
    this.fake.forget(this);
  }
}

/** One poll, answered from the cursor: a session-less long poll (the real
 * server keeps sessions; the SDK does not depend on that). */
class PollConnection {
  transport = 'poll';
  #messages = [];
  #timer;

  constructor(fake, request, response, channels, cursor, timeout) {
    this.fake = fake;
    this.response = response;
    const positions = new Map(cursor.map(([c, e, o]) => [c, { epoch: e, offset: o }]));
    this.positions = new Map();
    const unrecoverable = [];
    let news = false;
    for (const channel of channels) {
      const since = positions.get(channel);
      const ok = this.fake.resume(channel, since);
      if (ok.recovered === false) unrecoverable.push(channel);
      for (const pub of ok.publications ?? []) this.#messages.push({ pub });
      this.positions.set(channel, { epoch: ok.epoch, offset: ok.offset });
      if (!since || since.epoch !== ok.epoch || since.offset !== ok.offset) news = true;
    }
    this.unrecoverable = unrecoverable;
    this.news = news;
    if (news) {
      this.#answer();
      return;
    }
    fake.hold(this);
    this.#timer = setTimeout(() => this.#answer(), timeout * 1000);
    request.on('close', () => this.#gone());
  }

  deliver(pub) {
    if (!this.positions.has(pub.channel)) return;
    this.positions.set(pub.channel, { epoch: pub.epoch, offset: pub.offset });
    this.#messages.push({ pub });
    this.news = true;
    this.#answer();
  }

  #answer() {
    this.#gone();
    if (this.response.writableEnded) return;
    if (this.#messages.length === 0 && !this.news) {
      this.response.writeHead(204).end();
      return;
    }
    const cursor = encodeCursor([...this.positions].map(([c, { epoch, offset }]) => [c, epoch, offset]));
    const answer = { messages: this.#messages, cursor };
    if (this.unrecoverable.length) answer.unrecoverable = this.unrecoverable;
    this.response.writeHead(200, { 'Content-Type': 'application/json' });
    this.response.end(JSON.stringify(answer));
  }

  close(code, reason, reconnect) {
    this.#messages.push({ disconnect: { code, reason, reconnect } });
    this.#answer();
  }

  kill() {
    this.#gone();
    this.response.destroy();
  }

  #gone() {
    clearTimeout(this.#timer);
    this.fake.forget(this);
  }
}

/** Waits for `condition` to be truthy, within a generous deadline. */
export async function until(what, condition, timeout = 10000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
