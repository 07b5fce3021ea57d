// Herald browser SDK — one ES module, no build step, no dependencies.
//
//   import { Herald } from 'https://your-edge/herald.js';
//   const herald = new Herald({ url: 'https://your-edge', getToken: () => fetchToken() });
//   const room = herald.subscribe('chat:lobby');
//   room.on('publication', (p) => show(p.data));
//   herald.connect();
//   await herald.publish('chat:lobby', { text: 'hi' });
//
// It speaks WebSocket and falls back to Server-Sent Events, then to long
// polling, when a transport cannot be opened (blocked by a proxy, say). It
// remembers where each channel stands (offset and epoch) and resumes from
// there on every reconnect, whatever the transport, so nothing is missed and
// nothing is seen twice. Reconnects back off with jitter; close codes
// 4000–4499 reconnect, 4500–4999 stop (4509: a fresh token first, when
// `getToken` is given).

const PROTOCOL = 'herald.v1.json';
const TRANSPORTS = ['websocket', 'sse', 'poll'];

/** A tiny event emitter: `on` returns the function that removes the listener. */
class Emitter {
  #listeners = new Map();

  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.#listeners.get(event)?.delete(listener);
  }

  emit(event, value) {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(value);
      } catch (e) {
        // One listener's bug must not stop delivery to the others.
        setTimeout(() => { throw e; });
      }
    }
  }
}

/** An error the server answered with: `code` as in the protocol (103, 107, …). */
export class HeraldError extends Error {
  constructor(code, message, idempotencyKey) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    // with code 111 (outcome unknown): the key that stores it once on a retry
    if (idempotencyKey) this.idempotencyKey = idempotencyKey;
  }
}

/** The publication was sent on and not confirmed: it may be stored. */
export const OUTCOME_UNKNOWN = 111;

/** One channel the client follows. Events: `publication`, `join`, `leave`,
 * `typing`, `subscribed` ({offset, epoch, recovered}), `unrecoverable`
 * (what was missed is no longer kept: reload from your own store),
 * `unsubscribed` ({code, reason}: the server ended it, e.g. code 103 when a
 * refreshed token no longer allows the channel). */
export class Subscription extends Emitter {
  constructor(herald, channel, since) {
    super();
    this.herald = herald;
    this.channel = channel;
    /** Where the channel stands for this client: {offset, epoch} or null. */
    this.position = since ?? null;
  }

  unsubscribe() {
    this.herald.unsubscribe(this.channel);
  }

  /** Takes a publication unless it was already seen; true when taken. */
  accept(publication) {
    const p = this.position;
    if (p && p.epoch === publication.epoch && publication.offset <= p.offset) return false;
    this.position = { offset: publication.offset, epoch: publication.epoch };
    this.emit('publication', publication);
    return true;
  }
}

/**
 * A connection to Herald. Events: `state` ('disconnected' | 'connecting' |
 * 'connected'), `connected` ({transport, user, client}), `disconnected`
 * ({code, reason, reconnect}), `message` (every push, including those of
 * the personal `#user` channel), `error`.
 */
export class Herald extends Emitter {
  constructor(options = {}) {
    super();
    const base = options.url ?? globalThis.location?.origin;
    if (!base) throw new Error('Herald: `url` is required outside a page');
    this.url = base.replace(/\/+$/, '');
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.transports = (options.transports ?? TRANSPORTS).filter((t) => TRANSPORTS.includes(t));
    if (this.transports.length === 0) throw new Error('Herald: no known transport');
    this.minBackoff = options.minBackoff ?? 500;
    this.maxBackoff = options.maxBackoff ?? 20000;
    this.openTimeout = options.openTimeout ?? 8000;
    this.pollTimeout = options.pollTimeout ?? 25;
    this.state = 'disconnected';
    this.transport = null;
    this.user = null;
    this.subscriptions = new Map();
    /** The user's personal `#user` channel, where `SendToUser` delivers:
     * every connection has it, and it resumes like any subscription. */
    this.personal = new Subscription(this, null);
    /** The last cursor an SSE or long-poll answer carried. */
    this.lastCursor = '';
    this.#preferred = 0;
  }

  #preferred;
  #active = null;
  #attempt = 0;
  #failedInRow = 0;
  #retryTimer = null;
  #wanted = false;

  /** Opens the connection (and keeps it open until `disconnect`). */
  connect() {
    if (this.#wanted) return;
    this.#wanted = true;
    this.#open();
  }

  /** Closes the connection for good; subscriptions are kept for a later `connect`. */
  disconnect() {
    this.#wanted = false;
    clearTimeout(this.#retryTimer);
    this.#active?.close();
    this.#active = null;
    this.#setState('disconnected');
  }

  /** Follows a channel; `since` ({offset, epoch}) resumes from a stored position. */
  subscribe(channel, { since } = {}) {
    let sub = this.subscriptions.get(channel);
    if (sub) return sub;
    sub = new Subscription(this, channel, since);
    this.subscriptions.set(channel, sub);
    this.#active?.subscribe(sub);
    return sub;
  }

  unsubscribe(channel) {
    if (!this.subscriptions.delete(channel)) return;
    this.#active?.unsubscribe(channel);
  }

  /** Publishes to a channel the token allows; resolves with {offset}.
   * When the server cannot say whether it was stored (error 111), it is
   * sent again with the key the error names, so it is stored exactly once;
   * `idempotencyKey` makes your own retries safe the same way. */
  async publish(channel, data, { idempotencyKey } = {}) {
    let key = idempotencyKey;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#command('publish', key ? { channel, data, idempotency_key: key } : { channel, data });
      } catch (e) {
        if (e.code !== OUTCOME_UNKNOWN || !e.idempotencyKey || attempt >= 3) throw e;
        key = e.idempotencyKey;
      }
    }
  }

  /** Tells the channel's other subscribers that this user is typing. */
  typing(channel) {
    return this.#command('typing', { channel });
  }

  /** Who is in a channel now: resolves with an array of user names. */
  async presence(channel) {
    return (await this.#command('presence', { channel })).users;
  }

  async #command(kind, body) {
    if (this.state !== 'connected' || !this.#active) {
      await new Promise((resolve, reject) => {
        const timer = setTimeout(() => { off(); reject(new HeraldError(0, 'not connected')); }, this.openTimeout);
        const off = this.on('connected', () => { clearTimeout(timer); off(); resolve(); });
      });
    }
    return this.#active.command(kind, body);
  }

  async #currentToken(fresh) {
    if (this.getToken && (fresh || !this.token)) this.token = await this.getToken();
    if (!this.token) throw new HeraldError(101, 'no token: give `token` or `getToken`');
    return this.token;
  }

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state);
  }

  async #open(freshToken = false) {
    if (!this.#wanted) return;
    this.#setState('connecting');
    let token;
    try {
      token = await this.#currentToken(freshToken);
    } catch (e) {
      this.emit('error', e);
      this.#retry();
      return;
    }
    if (!this.#wanted) return;
    const user = userOf(token);
    if (user && this.personal.channel !== `#${user}`) {
      // another user: nothing of the old personal channel applies
      this.personal.channel = `#${user}`;
      this.personal.position = null;
    }
    const name = this.transports[this.#preferred % this.transports.length];
    const Transport = { websocket: WebSocketTransport, sse: SseTransport, poll: PollTransport }[name];
    const transport = new Transport(this, token);
    this.#active = transport;
    transport.start();
  }

  // ---- called by the transports

  /** The transport is open and every subscription is in place. */
  opened(transport, info) {
    if (transport !== this.#active) return;
    this.#attempt = 0;
    this.#failedInRow = 0;
    this.transport = transport.name;
    this.user = info.user ?? this.user;
    this.#setState('connected');
    this.emit('connected', { transport: transport.name, user: this.user, client: info.client });
  }

  /** A push from the server, on any transport. */
  pushed(transport, push) {
    if (transport !== this.#active) return;
    this.emit('message', push);
    if (push.pub) {
      this.#subscriptionOf(push.pub.channel)?.accept(push.pub);
      return;
    }
    if (push.unsubscribe) {
      // The server ended it (a refreshed token no longer allows it): it is
      // not subscribed again.
      const sub = this.subscriptions.get(push.unsubscribe.channel);
      if (sub) {
        this.subscriptions.delete(sub.channel);
        sub.emit('unsubscribed', { code: push.unsubscribe.code, reason: push.unsubscribe.reason });
      }
      return;
    }
    for (const kind of ['join', 'leave', 'typing']) {
      if (push[kind]) this.subscriptions.get(push[kind].channel)?.emit(kind, push[kind]);
    }
  }

  /** Where a channel stands after (re)subscribing, with what was missed. */
  subscribed(transport, channel, ok) {
    if (transport !== this.#active) return;
    const sub = this.#subscriptionOf(channel);
    if (!sub) return;
    if (ok.recovered === false && sub.position) sub.emit('unrecoverable', { offset: ok.offset, epoch: ok.epoch });
    for (const p of ok.publications ?? []) sub.accept({ ...p, channel, epoch: p.epoch ?? ok.epoch });
    const p = sub.position;
    if (!p || p.epoch !== ok.epoch || p.offset < ok.offset) sub.position = { offset: ok.offset, epoch: ok.epoch };
    sub.emit('subscribed', { offset: ok.offset, epoch: ok.epoch, recovered: ok.recovered !== false });
  }

  /** The transport ended; `opened` says whether it had ever worked. */
  closed(transport, { code = 1006, reason = '', reconnect = true, opened = false } = {}) {
    if (transport !== this.#active) return;
    this.#active = null;
    this.transport = null;
    if (this.state === 'connected' || code >= 4000) this.emit('disconnected', { code, reason, reconnect });
    if (!this.#wanted) return;
    if (!opened) {
      // Could not open at all: try the next transport.
      this.#failedInRow += 1;
      this.#preferred = (this.#preferred + 1) % this.transports.length;
    }
    if (code === 4509 || code === 109) {
      if (this.getToken) {
        this.#retry(true);
        return;
      }
      reconnect = false;
    }
    if (!reconnect) {
      this.#wanted = false;
      this.#setState('disconnected');
      return;
    }
    this.#retry();
  }

  #retry(freshToken = false) {
    this.#setState('connecting');
    // Straight to the next transport after a failed one; back off once
    // every transport has failed, or after a working connection ended.
    const fallingBack = this.#failedInRow > 0 && this.#failedInRow % this.transports.length !== 0;
    const delay = fallingBack ? 0 : this.#backoff();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#open(freshToken), delay);
  }

  #backoff() {
    const ceiling = Math.min(this.maxBackoff, this.minBackoff * 2 ** this.#attempt);
    this.#attempt += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #subscriptionOf(channel) {
    if (channel && channel === this.personal.channel) return this.personal;
    return this.subscriptions.get(channel);
  }

  /** The cursor of SSE and long polling: the server's last one, updated
   * with where each subscription (and the personal channel) stands. */
  cursor() {
    const last = decodeCursorParts(this.lastCursor);
    const positions = new Map(last.entries.map(([c, e, o]) => [c, [e, o]]));
    for (const sub of [...this.subscriptions.values(), this.personal]) {
      if (sub.channel && sub.position) positions.set(sub.channel, [sub.position.epoch, sub.position.offset]);
    }
    const entries = [...positions].map(([c, [e, o]]) => [c, e, o]);
    return entries.length ? encodeCursor(entries, last.session) : '';
  }
}

/** The `sub` of a JWT, read (not verified: the server does that) so the
 * personal channel is known before connecting. */
function userOf(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)).sub ?? null;
  } catch {
    return null;
  }
}

/** A cursor: base64url JSON of `[[channel, epoch, offset], …]`, or of
 * `{"s": session, "p": […]}` when a long-poll session handed it out (the
 * next poll finds that session again). SSE event ids are another, opaque
 * form: they decode to nothing here, and the positions each subscription
 * keeps stand in for them. */
function encodeCursor(entries, session) {
  const json = JSON.stringify(session ? { s: session, p: entries } : entries);
  const bytes = new TextEncoder().encode(json);
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function decodeCursorParts(text) {
  try {
    const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const value = JSON.parse(new TextDecoder().decode(bytes));
    if (Array.isArray(value)) return { session: null, entries: value };
    if (value && Array.isArray(value.p)) return { session: value.s ?? null, entries: value.p };
  } catch {
    // not a cursor of this form
  }
  return { session: null, entries: [] };
}

function decodeCursor(text) {
  return decodeCursorParts(text).entries;
}

/** What a close code means for reconnecting (the protocol's ranges). */
function reconnects(code) {
  return !(code >= 4500 && code <= 4999);
}

/** Commands over HTTP, for the SSE and long-poll transports. */
async function postCommand(herald, token, kind, body) {
  const response = await fetch(`${herald.url}/${kind}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = answer.error ?? { code: 500, message: `HTTP ${response.status}` };
    throw new HeraldError(error.code, error.message, error.idempotency_key);
  }
  return answer;
}

class WebSocketTransport {
  name = 'websocket';
  #nextId = 1;
  #pending = new Map();
  #opened = false;
  #done = false;
  #watchdog = null;
  #openTimer = null;
  #socket = null;
  #pingInterval = 25;
  #lastDisconnect = null;
  /** Set once the handshake has listed the subscriptions to restore. */
  #listed = false;

  constructor(herald, token) {
    this.herald = herald;
    this.token = token;
  }

  start() {
    const url = this.herald.url.replace(/^http/, 'ws') + '/ws';
    let socket;
    try {
      socket = new WebSocket(url, PROTOCOL);
    } catch {
      this.#end({ code: 1006, reason: 'cannot open a WebSocket' });
      return;
    }
    this.#socket = socket;
    this.#openTimer = setTimeout(() => this.#end({ code: 1006, reason: 'open timed out' }), this.herald.openTimeout);
    socket.onopen = () => this.#handshake();
    socket.onmessage = (event) => this.#received(event.data);
    socket.onclose = (event) => {
      const told = this.#lastDisconnect;
      this.#end({
        code: told?.code ?? event.code,
        reason: told?.reason ?? event.reason,
        reconnect: told ? told.reconnect : reconnects(event.code),
      });
    };
  }

  async #handshake() {
    try {
      const connect = { token: this.token };
      const personal = this.herald.personal;
      if (personal.position) connect.personal_since = personal.position;
      const ok = await this.#call('connect', connect);
      this.#pingInterval = ok.ping_interval ?? this.#pingInterval;
      if (ok.personal) this.herald.subscribed(this, personal.channel, ok.personal);
      this.#alive();
      const subs = [...this.herald.subscriptions.values()];
      this.#listed = true;
      await Promise.all(subs.map((sub) => this.#subscribe(sub)));
      clearTimeout(this.#openTimer);
      this.#opened = true;
      this.herald.opened(this, ok);
    } catch (e) {
      if (e instanceof HeraldError && (e.code === 101 || e.code === 109)) {
        this.#end({ code: e.code === 109 ? 4509 : 4501, reason: e.message, reconnect: false });
      } else {
        this.herald.emit('error', e);
        this.#end({ code: 1006, reason: String(e.message ?? e) });
      }
    }
  }

  /** A new subscription: sent now, or restored by the handshake. */
  subscribe(sub) {
    if (this.#listed) this.#subscribe(sub).catch(() => {});
  }

  async #subscribe(sub) {
    const body = { channel: sub.channel };
    if (sub.position) body.since = sub.position;
    try {
      const ok = await this.#call('subscribe', body);
      this.herald.subscribed(this, sub.channel, ok);
    } catch (e) {
      if (e instanceof HeraldError && e.code === 110) {
        // Too far behind to resume: start from now and say so.
        sub.emit('unrecoverable', {});
        sub.position = null;
        return this.#subscribe(sub);
      }
      if (e instanceof HeraldError) {
        sub.emit('error', e);
        return undefined;
      }
      throw e;
    }
    return undefined;
  }

  unsubscribe(channel) {
    if (this.#listed) this.#call('unsubscribe', { channel }).catch(() => {});
  }

  command(kind, body) {
    return this.#call(kind, body);
  }

  close() {
    this.#done = true;
    this.#stop();
    this.#socket?.close(1000);
  }

  #call(kind, body) {
    return new Promise((resolve, reject) => {
      if (this.#socket?.readyState !== WebSocket.OPEN) {
        reject(new HeraldError(0, 'not connected'));
        return;
      }
      const id = this.#nextId++;
      this.#pending.set(id, { resolve, reject });
      this.#socket.send(JSON.stringify({ id, [kind]: body }));
    });
  }

  #received(text) {
    this.#alive();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.id !== undefined) {
      const waiter = this.#pending.get(frame.id);
      if (!waiter) return;
      this.#pending.delete(frame.id);
      if (frame.error) waiter.reject(new HeraldError(frame.error.code, frame.error.message, frame.error.idempotency_key));
      else waiter.resolve(frame.ok ?? {});
      return;
    }
    if (frame.ping) {
      this.#socket.send('{"pong":{}}');
      return;
    }
    if (frame.error) {
      this.herald.emit('error', new HeraldError(frame.error.code, frame.error.message));
      return;
    }
    if (frame.disconnect) {
      this.#lastDisconnect = frame.disconnect;
      return;
    }
    this.herald.pushed(this, frame);
  }

  /** A server that sends nothing for ping_interval + 10 s is gone. */
  #alive() {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => {
      this.#end({ code: 4003, reason: 'no ping from the server' });
    }, (this.#pingInterval + 10) * 1000);
  }

  #stop() {
    clearTimeout(this.#watchdog);
    clearTimeout(this.#openTimer);
    for (const { reject } of this.#pending.values()) reject(new HeraldError(0, 'connection closed'));
    this.#pending.clear();
  }

  #end(how) {
    if (this.#done) return;
    this.#done = true;
    this.#stop();
    if (this.#socket && this.#socket.readyState < WebSocket.CLOSING) this.#socket.close(1000);
    this.herald.closed(this, { ...how, opened: this.#opened });
  }
}

class SseTransport {
  name = 'sse';
  #source = null;
  #opened = false;
  #done = false;
  #openTimer = null;
  #watchdog = null;
  #reopening = false;

  constructor(herald, token) {
    this.herald = herald;
    this.token = token;
  }

  start() {
    const channels = [...this.herald.subscriptions.keys()];
    const params = new URLSearchParams({ channels: channels.join(','), token: this.token });
    const cursor = this.herald.cursor();
    if (cursor) params.set('last_event_id', cursor);
    let source;
    try {
      source = new EventSource(`${this.herald.url}/sse?${params}`);
    } catch {
      this.#end({ code: 1006, reason: 'cannot open an EventSource' });
      return;
    }
    this.#source = source;
    this.#openTimer = setTimeout(() => this.#end({ code: 1006, reason: 'open timed out' }), this.herald.openTimeout);
    source.onopen = () => {
      clearTimeout(this.#openTimer);
      this.#alive();
      if (!this.#opened) {
        this.#opened = true;
        this.herald.opened(this, {});
      }
    };
    // EventSource would reconnect by itself, but with the token and the
    // channel list it started with; the SDK reconnects instead, with both
    // current and with its own backoff.
    source.onerror = () => {
      if (source !== this.#source) return;
      this.#end({ code: 1006, reason: 'stream ended' });
    };
    for (const kind of ['pub', 'join', 'leave', 'typing', 'unsubscribe']) {
      source.addEventListener(kind, (event) => {
        this.#alive();
        if (event.lastEventId) this.herald.lastCursor = event.lastEventId;
        const body = parse(event.data);
        if (body) this.herald.pushed(this, { [kind]: body });
      });
    }
    source.addEventListener('subscribe', (event) => {
      this.#alive();
      if (event.lastEventId) this.herald.lastCursor = event.lastEventId;
      const ok = parse(event.data);
      if (ok) this.herald.subscribed(this, ok.channel, ok);
    });
    source.addEventListener('disconnect', (event) => {
      const told = parse(event.data) ?? {};
      this.#end({ code: told.code ?? 4000, reason: told.reason ?? '', reconnect: told.reconnect ?? true });
    });
    // `: ping` comments do not reach scripts; any traffic is not required:
    // the server pings every 15 s, so 45 s of silence is a dead stream.
    source.addEventListener('message', () => this.#alive());
  }

  /** A changed channel list needs a new stream; the cursor resumes it.
   * Several changes in one tick make one new stream. */
  subscribe() {
    this.#restart();
  }

  unsubscribe() {
    this.#restart();
  }

  #restart() {
    if (this.#done || !this.#source || this.#reopening) return;
    this.#reopening = true;
    queueMicrotask(() => {
      this.#reopening = false;
      if (this.#done) return;
      this.#source.close();
      clearTimeout(this.#watchdog);
      clearTimeout(this.#openTimer);
      this.start();
    });
  }

  command(kind, body) {
    return postCommand(this.herald, this.token, kind, body);
  }

  close() {
    this.#done = true;
    clearTimeout(this.#openTimer);
    clearTimeout(this.#watchdog);
    this.#source?.close();
  }

  #alive() {
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => this.#end({ code: 4003, reason: 'stream went silent' }), 45000);
  }

  #end(how) {
    if (this.#done) return;
    const opened = this.#opened;
    this.close();
    this.herald.closed(this, { ...how, opened });
  }
}

class PollTransport {
  name = 'poll';
  #done = false;
  #opened = false;
  #abort = null;
  #cursor = '';

  constructor(herald, token) {
    this.herald = herald;
    this.token = token;
  }

  start() {
    this.#cursor = this.herald.cursor();
    this.#loop();
  }

  async #loop() {
    while (!this.#done) {
      const channels = [...this.herald.subscriptions.keys()];
      const params = new URLSearchParams({ channels: channels.join(','), timeout: String(this.herald.pollTimeout) });
      if (this.#cursor) params.set('cursor', this.#cursor);
      this.#abort = new AbortController();
      const limit = setTimeout(() => this.#abort.abort(), (this.herald.pollTimeout + 10) * 1000);
      let response;
      try {
        response = await fetch(`${this.herald.url}/poll?${params}`, {
          headers: { Authorization: `Bearer ${this.token}` },
          signal: this.#abort.signal,
          cache: 'no-store',
        });
      } catch (e) {
        clearTimeout(limit);
        if (this.#restarting) {
          this.#restarting = false;
          continue;
        }
        this.#end({ code: 1006, reason: String(e.message ?? e) });
        return;
      }
      clearTimeout(limit);
      if (response.status === 204) {
        this.#markOpen();
        continue;
      }
      const answer = await response.json().catch(() => null);
      if (!response.ok || !answer) {
        const error = answer?.error ?? {};
        const code = error.code === 109 ? 4509 : error.code === 101 ? 4501 : response.status === 503 ? 4000 : 4002;
        this.#end({ code, reason: error.message ?? `HTTP ${response.status}`, reconnect: reconnects(code) });
        return;
      }
      if (this.#done) return;
      this.#markOpen();
      const unrecoverable = new Set(answer.unrecoverable ?? []);
      for (const channel of unrecoverable) {
        const sub = this.herald.subscriptions.get(channel);
        if (sub) {
          sub.emit('unrecoverable', {});
          sub.position = null;
        }
      }
      for (const push of answer.messages ?? []) {
        if (push.disconnect) {
          this.#end({ code: push.disconnect.code, reason: push.disconnect.reason, reconnect: push.disconnect.reconnect });
          return;
        }
        this.herald.pushed(this, push);
      }
      // Then where each channel stands: channels new to the cursor learn
      // their position here (after their messages, which it covers).
      this.#cursor = answer.cursor ?? this.#cursor;
      this.herald.lastCursor = this.#cursor;
      for (const [channel, epoch, offset] of decodeCursor(this.#cursor)) {
        const sub = this.herald.subscriptions.get(channel);
        if (sub && (!sub.position || sub.position.epoch !== epoch || sub.position.offset < offset)) {
          this.herald.subscribed(this, channel, { offset, epoch, recovered: true });
        }
      }
    }
  }

  #restarting = false;

  #markOpen() {
    if (this.#opened) return;
    this.#opened = true;
    this.herald.opened(this, {});
  }

  /** The next poll carries the new channel list; cut the held one short. */
  subscribe() {
    this.#restartPoll();
  }

  unsubscribe() {
    this.#restartPoll();
  }

  #restartPoll() {
    if (this.#done || !this.#abort || this.#restarting) return;
    this.#restarting = true;
    queueMicrotask(() => {
      this.#cursor = this.herald.cursor();
      this.#abort.abort();
    });
  }

  command(kind, body) {
    return postCommand(this.herald, this.token, kind, body);
  }

  close() {
    this.#done = true;
    this.#abort?.abort();
  }

  #end(how) {
    if (this.#done) return;
    this.#done = true;
    this.#abort?.abort();
    this.herald.closed(this, { ...how, opened: this.#opened });
  }
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
