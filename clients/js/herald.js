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
// polling, when a transport cannot be opened (blocked by a proxy, say), and
// tries WebSocket again from time to time while on a fallback. It remembers
// where each channel stands (offset and epoch) and resumes from there on
// every reconnect, whatever the transport, so nothing is missed and nothing
// is seen twice. Reconnects back off with jitter, and happen at once when
// the browser says it is online again. With `getToken`, the token is
// refreshed before it expires, in place. Close codes 4000–4499 reconnect,
// 4500–4999 stop (4509: a fresh token first, when `getToken` is given).
//
// Types: herald.d.ts beside this file; a guide: README.md.

const PROTOCOL = 'herald.v1.json';
const TRANSPORTS = ['websocket', 'sse', 'poll'];

/** The protocol's numbers: `codes.close` (WebSocket close codes, also in
 * the `disconnect` push of SSE and long polling) and `codes.error` (in
 * error replies, `HeraldError#code`). */
export const codes = Object.freeze({
  close: Object.freeze({
    /** The server is stopping or draining: reconnect (elsewhere). */
    SHUTDOWN: 4000,
    /** The client did not read fast enough: reconnect and resume. */
    SLOW_CONSUMER: 4001,
    /** The server could not go on with this connection: reconnect. */
    SERVER_ERROR: 4002,
    /** No pong (or, from the SDK, no ping): reconnect. */
    NO_PONG: 4003,
    /** The connection reached the server's age limit: reconnect, to any server. */
    CONNECTION_AGE: 4004,
    /** The client broke the protocol: do not reconnect. */
    BAD_PROTOCOL: 4500,
    /** No valid token: do not reconnect. */
    UNAUTHORIZED: 4501,
    /** The application removed the user, or the user is over a limit: do not reconnect. */
    FORBIDDEN: 4503,
    /** The token expired: reconnect with a fresh one (`getToken`). */
    TOKEN_EXPIRED: 4509,
  }),
  error: Object.freeze({
    /** The SDK's own: no connection to send it on (or it closed before the answer). */
    NOT_CONNECTED: 0,
    BAD_REQUEST: 100,
    UNAUTHORIZED: 101,
    PERMISSION_DENIED: 103,
    UNKNOWN_CHANNEL: 104,
    LIMIT_EXCEEDED: 106,
    TOO_MANY_REQUESTS: 107,
    TOKEN_EXPIRED: 109,
    /** What was asked for is no longer kept in history. */
    UNRECOVERABLE: 110,
    /** The publication was sent on and not confirmed: it may be stored;
     * publishing again with the error's `idempotencyKey` stores it once
     * (`publish` does that itself). */
    OUTCOME_UNKNOWN: 111,
    /** The server could not do it (a dependency is down); nothing was done. */
    INTERNAL: 500,
  }),
});

/** The publication was sent on and not confirmed: it may be stored. */
export const OUTCOME_UNKNOWN = codes.error.OUTCOME_UNKNOWN;

/** A tiny event emitter: `on` returns the function that removes the listener. */
class Emitter {
  #listeners = new Map();

  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  emit(event, value) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(value);
      } catch (e) {
        // One listener's bug must not stop delivery to the others.
        setTimeout(() => { throw e; });
      }
    }
  }
}

/** An error the server answered with: `code` as in `codes.error`. */
export class HeraldError extends Error {
  constructor(code, message, idempotencyKey) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    // with code 111 (outcome unknown): the key that stores it once on a retry
    if (idempotencyKey) this.idempotencyKey = idempotencyKey;
  }
}

// What the client and its transports use of a subscription, kept off its
// public face.
const RESUME = Symbol('resume');
const ACCEPT = Symbol('accept');
const STATE = Symbol('state');

/** One channel the client follows. `state`: 'subscribing' (until the
 * server confirms it, and again while reconnecting), 'subscribed',
 * 'unsubscribed' (for good). Events: `state`, `subscribing`, `subscribed`
 * ({offset, epoch, recovered}), `unsubscribed` ({code, reason}),
 * `publication`, `join`, `leave`, `typing`, `unrecoverable` (what was
 * missed is no longer kept: reload from your own store), `error`. */
export class Subscription extends Emitter {
  constructor(herald, channel, since) {
    super();
    this.herald = herald;
    this.channel = channel;
    /** Where the channel stands for this client: {offset, epoch} or null. */
    this.position = since ?? null;
    this.state = 'subscribing';
  }

  unsubscribe() {
    this.herald.unsubscribe(this.channel);
  }

  [STATE](state, info) {
    if (this.state === state || this.state === 'unsubscribed') return;
    this.state = state;
    this.emit('state', state);
    this.emit(state, info);
  }

  /** Takes a publication unless it was already seen; true when taken. */
  [ACCEPT](publication) {
    const p = this.position;
    if (p && p.epoch === publication.epoch && publication.offset <= p.offset) return false;
    this.position = { offset: publication.offset, epoch: publication.epoch };
    this.emit('publication', publication);
    return true;
  }

  /** Where the channel stands after (re)subscribing, with what was missed:
   * `unrecoverable` first when the server could not resume, then what it
   * replayed, then `subscribed`. */
  [RESUME]({ offset, epoch, recovered, publications }) {
    if (recovered === false) {
      if (this.position) this.emit('unrecoverable', { offset, epoch });
      // whatever comes now is new to this client (a new epoch starts at 1)
      this.position = null;
    }
    for (const p of publications ?? []) this[ACCEPT]({ ...p, channel: this.channel, epoch: p.epoch ?? epoch });
    const p = this.position;
    if (offset !== undefined && epoch !== undefined && (!p || p.epoch !== epoch || p.offset < offset)) {
      this.position = { offset, epoch };
    }
    this[STATE]('subscribed', {
      offset: this.position?.offset ?? offset,
      epoch: this.position?.epoch ?? epoch,
      recovered: recovered !== false,
    });
  }
}

/** A token's `exp` and `iat` (seconds), read but not verified (the server
 * does that). */
function claimsOf(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) ?? {};
  } catch {
    return {};
  }
}

/** Milliseconds until a token should be replaced: a quarter of its
 * lifetime (at most 30 s) before it expires. `null` when it does not say.
 * When the local clock disagrees with the token's own lifetime (`iat` to
 * `exp`), the lifetime wins. */
function refreshDelay(token, now = Date.now()) {
  const { exp, iat } = claimsOf(token);
  if (typeof exp !== 'number') return null;
  const seconds = now / 1000;
  const lifetime = typeof iat === 'number' && exp > iat ? exp - iat : exp - seconds;
  let left = exp - seconds;
  if (typeof iat === 'number' && exp > iat && (left > lifetime || left <= 0)) left = lifetime;
  const margin = Math.min(30, Math.max(1, lifetime / 4));
  return Math.max(1000, (left - margin) * 1000);
}

/** What a close code means for reconnecting (the protocol's ranges). */
function reconnects(code) {
  return !(code >= 4500 && code <= 4999);
}

const offline = () => globalThis.navigator?.onLine === false;

/**
 * A connection to Herald. `state`: 'disconnected' | 'connecting' |
 * 'connected'. Events: `state`, `connected` ({transport, user, client}),
 * `disconnected` ({code, reason, reconnect}), `transport` ({transport,
 * previous}: the connection moved to a better transport without a
 * disconnect), `retry` ({delay, attempt, transport}: the next attempt),
 * `message` (every push, including those of the personal `#user` channel),
 * `error`.
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
    this.minUpgradeDelay = options.minUpgradeDelay ?? 5000;
    this.maxUpgradeDelay = options.maxUpgradeDelay ?? 60000;
    this.openTimeout = options.openTimeout ?? 8000;
    this.pollTimeout = options.pollTimeout ?? 25;
    this.state = 'disconnected';
    this.transport = null;
    this.user = null;
    this.subscriptions = new Map();
    /** The user's personal `#user` channel, where `SendToUser` delivers:
     * every connection has it, and it resumes like any subscription. */
    this.personal = new Subscription(this, null);
    this.#upgradeDelay = this.minUpgradeDelay;
    this.#link = this.#makeLink();
  }

  #link;
  #preferred = 0;
  #active = null;
  #candidate = null;
  #attempt = 0;
  #opening = 0;
  #retryTimer = null;
  #refreshTimer = null;
  #upgradeTimer = null;
  #upgradeDelay;
  #stableTimer = null;
  #wanted = false;
  #unlisten = null;
  /** The last cursor an SSE or long-poll answer carried. */
  #lastCursor = '';

  /** Opens the connection (and keeps it open until `disconnect`). While
   * waiting to reconnect, tries again at once. */
  connect() {
    if (this.#wanted) {
      this.#wake();
      return;
    }
    this.#wanted = true;
    this.#listen();
    this.#open();
  }

  /** Closes the connection for good; subscriptions are kept for a later `connect`. */
  disconnect() {
    if (!this.#wanted && !this.#active) return;
    const wasConnected = this.state === 'connected';
    this.#wanted = false;
    this.#opening += 1;
    this.#unlisten?.();
    this.#unlisten = null;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#stopTimers();
    this.#candidate?.close();
    this.#candidate = null;
    this.#active?.close();
    this.#active = null;
    this.transport = null;
    this.#setState('disconnected');
    if (wasConnected) {
      this.emit('disconnected', { code: 1000, reason: 'disconnect() was called', reconnect: false });
      this.#allSubscriptions().forEach((sub) => sub[STATE]('subscribing', { code: 1000, reason: 'disconnected' }));
    }
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
    const sub = this.subscriptions.get(channel);
    if (!sub) return;
    this.subscriptions.delete(channel);
    sub[STATE]('unsubscribed', { code: 0, reason: 'unsubscribe() was called' });
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

  #setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state);
  }

  #allSubscriptions() {
    return [this.personal, ...this.subscriptions.values()];
  }

  #subscriptionOf(channel) {
    if (channel && channel === this.personal.channel) return this.personal;
    return this.subscriptions.get(channel);
  }

  /** The browser says the network is back, or the page is visible again:
   * a connection that is waiting to retry tries now, one that is dead is
   * replaced now. */
  #listen() {
    const g = globalThis;
    if (this.#unlisten || typeof g.addEventListener !== 'function') return;
    const online = () => this.#wake({ online: true });
    const visible = () => {
      if (g.document?.visibilityState === 'visible') this.#wake();
    };
    g.addEventListener('online', online);
    g.document?.addEventListener?.('visibilitychange', visible);
    this.#unlisten = () => {
      g.removeEventListener('online', online);
      g.document?.removeEventListener?.('visibilitychange', visible);
    };
  }

  #wake({ online = false } = {}) {
    if (!this.#wanted) return;
    if (this.#active && this.state === 'connected') {
      // the transport knows whether it still lives
      this.#active.check();
      return;
    }
    if (this.#active) {
      // an attempt under way; one begun before the network came back may
      // hang until its timeout: begin again
      if (!online) return;
      const attempt = this.#active;
      this.#active = null;
      attempt.close();
      this.#attempt = 0;
      this.#preferred = 0;
      this.#open();
      return;
    }
    if (this.#retryTimer === null) return; // already opening (fetching a token)
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    this.#attempt = 0;
    // the failures were the network's, not the transports'
    if (online) this.#preferred = 0;
    this.#open(this.#freshNext);
  }

  #freshNext = false;

  async #token(fresh) {
    const current = this.token;
    // a token due for its refresh is not worth connecting with
    const stale = Boolean(current) && (refreshDelay(current) ?? Infinity) <= 1000;
    if (this.getToken && (fresh || !current || stale)) this.token = await this.getToken();
    if (!this.token) throw new HeraldError(101, 'no token: give `token` or `getToken`');
    return this.token;
  }

  async #open(fresh = false) {
    if (!this.#wanted) return;
    this.#setState('connecting');
    const opening = ++this.#opening;
    let token;
    try {
      token = await this.#token(fresh);
    } catch (e) {
      if (opening !== this.#opening || !this.#wanted) return;
      this.emit('error', e);
      if (!this.getToken) {
        // nothing will ever give a token
        this.#closed(null, { code: 4501, reason: e.message, reconnect: false });
        return;
      }
      this.#schedule(this.#backoff(), true);
      return;
    }
    if (opening !== this.#opening || !this.#wanted) return;
    this.#adoptUser(token);
    const name = this.transports[this.#preferred % this.transports.length];
    const transport = new TRANSPORT_OF[name](this.#link, token);
    this.#active = transport;
    transport.start();
  }

  #adoptUser(token) {
    const user = claimsOf(token).sub ?? null;
    if (user && this.personal.channel !== `#${user}`) {
      // another user: nothing of the old personal channel applies
      this.personal.channel = `#${user}`;
      this.personal.position = null;
    }
  }

  #schedule(delay, fresh = false) {
    clearTimeout(this.#retryTimer);
    this.#freshNext = fresh;
    const transport = this.transports[this.#preferred % this.transports.length];
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null;
      this.#open(fresh);
    }, delay);
    this.emit('retry', { delay, attempt: this.#attempt, transport });
  }

  /** Exponential backoff with jitter: the n-th delay in a row is between
   * half and all of min(maxBackoff, minBackoff · 2ⁿ). */
  #backoff() {
    const ceiling = Math.min(this.maxBackoff, this.minBackoff * 2 ** this.#attempt);
    this.#attempt += 1;
    return ceiling / 2 + Math.random() * (ceiling / 2);
  }

  #stopTimers() {
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#upgradeTimer);
    clearTimeout(this.#stableTimer);
    this.#refreshTimer = this.#upgradeTimer = this.#stableTimer = null;
  }

  // ---- token refresh, in place on whatever transport

  #scheduleRefresh(delay = this.token ? refreshDelay(this.token) : null) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    if (!this.getToken || delay === null) return;
    this.#refreshTimer = setTimeout(() => this.#refresh(), delay);
  }

  async #refresh() {
    const transport = this.#active;
    if (!transport || this.state !== 'connected') return;
    let token;
    try {
      token = await this.getToken();
      if (transport !== this.#active) return;
      await transport.refresh(token);
    } catch (e) {
      if (transport !== this.#active) return;
      this.emit('error', e);
      // try again while there is time; past it the server closes with
      // 4509 and the reconnect takes a fresh token
      const left = (claimsOf(this.token).exp ?? 0) * 1000 - Date.now();
      if (left > 2000) this.#scheduleRefresh(Math.min(5000, left / 2));
      return;
    }
    if (transport !== this.#active) return;
    this.token = token;
    this.#scheduleRefresh();
  }

  // ---- back to the best transport after a fallback

  #scheduleUpgrade() {
    clearTimeout(this.#upgradeTimer);
    this.#upgradeTimer = null;
    if (!this.#active || this.#active.name === this.transports[0]) return;
    const delay = this.#upgradeDelay / 2 + Math.random() * (this.#upgradeDelay / 2);
    this.#upgradeTimer = setTimeout(() => this.#tryUpgrade(), delay);
  }

  #tryUpgrade() {
    this.#upgradeTimer = null;
    if (!this.#active || this.state !== 'connected' || this.#candidate) return;
    if (offline()) {
      this.#scheduleUpgrade();
      return;
    }
    const candidate = new TRANSPORT_OF[this.transports[0]](this.#link, this.token);
    this.#candidate = candidate;
    candidate.start();
  }

  // ---- what the transports call, through the link

  #makeLink() {
    const herald = this;
    return {
      get url() { return herald.url; },
      get openTimeout() { return herald.openTimeout; },
      get pollTimeout() { return herald.pollTimeout; },
      get personal() { return herald.personal; },
      channels: () => [...herald.subscriptions.keys()],
      subscriptions: () => [...herald.subscriptions.values()],
      subscriptionOf: (channel) => herald.#subscriptionOf(channel),
      cursor: () => herald.#cursor(),
      set lastCursor(value) { herald.#lastCursor = value; },
      emit: (event, value) => herald.emit(event, value),
      isCurrent: (t) => t === herald.#active,
      opened: (t, info) => herald.#opened(t, info),
      pushed: (t, push) => herald.#pushed(t, push),
      resumed: (t, channel, ok) => herald.#resumed(t, channel, ok),
      closed: (t, how) => herald.#closed(t, how),
      refused: (sub, error) => {
        if (herald.subscriptions.get(sub.channel) !== sub) return;
        herald.subscriptions.delete(sub.channel);
        sub[STATE]('unsubscribed', { code: error.code, reason: error.message });
      },
    };
  }

  /** The transport is open: connected. Every subscription then resumes. */
  #opened(transport, info) {
    if (transport === this.#candidate) {
      // A better transport works: it takes over, and the old one goes.
      const old = this.#active;
      this.#candidate = null;
      this.#active = transport;
      old?.close();
      this.transport = transport.name;
      this.#upgradeDelay = this.minUpgradeDelay;
      clearTimeout(this.#upgradeTimer);
      this.#upgradeTimer = null;
      this.emit('transport', { transport: transport.name, previous: old?.name ?? null });
      return true;
    }
    if (transport !== this.#active) return false;
    this.transport = transport.name;
    this.user = info.user ?? claimsOf(this.token).sub ?? this.user;
    clearTimeout(this.#stableTimer);
    // a connection that lasts is a fresh start for the backoff
    this.#stableTimer = setTimeout(() => { this.#attempt = 0; }, 5000);
    this.#setState('connected');
    this.emit('connected', { transport: transport.name, user: this.user, client: info.client });
    this.#scheduleRefresh();
    if (transport.name === this.transports[0]) this.#upgradeDelay = this.minUpgradeDelay;
    this.#scheduleUpgrade();
    return true;
  }

  /** A push from the server, on any transport. */
  #pushed(transport, push) {
    if (transport !== this.#active) return;
    this.emit('message', push);
    if (push.pub) {
      this.#subscriptionOf(push.pub.channel)?.[ACCEPT](push.pub);
      return;
    }
    if (push.unsubscribe) {
      // The server ended it (a refreshed token no longer allows it): it is
      // not subscribed again.
      const sub = this.subscriptions.get(push.unsubscribe.channel);
      if (sub) {
        this.subscriptions.delete(sub.channel);
        sub[STATE]('unsubscribed', { code: push.unsubscribe.code, reason: push.unsubscribe.reason });
      }
      return;
    }
    for (const kind of ['join', 'leave', 'typing']) {
      if (push[kind]) this.subscriptions.get(push[kind].channel)?.emit(kind, push[kind]);
    }
  }

  /** Where a channel stands after (re)subscribing, with what was missed. */
  #resumed(transport, channel, ok) {
    if (transport !== this.#active) return;
    this.#subscriptionOf(channel)?.[RESUME](ok);
  }

  /** A transport ended (or, with `transport` null, an open gave up). */
  #closed(transport, { code = 1006, reason = '', reconnect, opened = false } = {}) {
    if (transport && transport === this.#candidate) {
      // the better transport still does not work: later, then
      this.#candidate = null;
      this.#upgradeDelay = Math.min(this.maxUpgradeDelay, this.#upgradeDelay * 2);
      this.#scheduleUpgrade();
      return;
    }
    if (transport && transport !== this.#active) return;
    this.#active = null;
    this.#stopTimers();
    this.#candidate?.close();
    this.#candidate = null;
    const wasConnected = this.state === 'connected';
    this.transport = null;

    // Will it reconnect? Decided first, so that `disconnected` says so.
    let again = this.#wanted && (reconnect ?? reconnects(code));
    let fresh = false;
    if (code === 4509 || code === 109) {
      fresh = true;
      again = this.#wanted && Boolean(this.getToken);
    }
    let delay = 0;
    if (again) {
      if (opened) {
        // it worked, then dropped: start again from the best transport
        this.#preferred = 0;
        delay = fresh ? 0 : this.#backoff();
      } else if (code < 4000 && !offline()) {
        // could not open at all: the next transport at once, and back off
        // once every one has failed
        this.#preferred = (this.#preferred + 1) % this.transports.length;
        delay = this.#preferred === 0 ? this.#backoff() : 0;
      } else {
        delay = this.#backoff();
      }
    }

    if (again) {
      this.#setState('connecting');
    } else {
      this.#wanted = false;
      this.#unlisten?.();
      this.#unlisten = null;
      this.#setState('disconnected');
    }
    if (wasConnected || !again) this.emit('disconnected', { code, reason, reconnect: again });
    if (wasConnected) {
      this.#allSubscriptions().forEach((sub) => sub[STATE]('subscribing', { code, reason }));
    }
    if (again) this.#schedule(delay, fresh);
  }

  /** The cursor of SSE and long polling: the server's last one, updated
   * with where each subscription (and the personal channel) stands. */
  #cursor() {
    const last = decodeCursorParts(this.#lastCursor);
    const positions = new Map(last.entries.map(([c, e, o]) => [c, [e, o]]));
    for (const sub of this.#allSubscriptions()) {
      if (sub.channel && sub.position) positions.set(sub.channel, [sub.position.epoch, sub.position.offset]);
    }
    const entries = [...positions].map(([c, [e, o]]) => [c, e, o]);
    return entries.length ? encodeCursor(entries, last.session) : '';
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

/** Commands over HTTP, for the SSE and long-poll transports. */
async function postCommand(link, token, kind, body) {
  const response = await fetch(`${link.url}/${kind}`, {
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

/** The close code a refused `connect` stands for. */
function closeOfError(code) {
  return { 101: 4501, 109: 4509, 106: 4503 }[code] ?? 4002;
}

// Every transport: `start()`, `subscribe(sub)`, `unsubscribe(channel)`,
// `command(kind, body)`, `refresh(token)`, `check()` (replace the
// connection now if it looks dead), `close()` (quietly); it tells the
// client through the link: `opened` once, then `resumed` per channel,
// `pushed`, and `closed` once.

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
  #lastHeard = Date.now();
  #lastDisconnect = null;
  /** Set once the handshake has listed the subscriptions to restore. */
  #listed = false;
  #retries = new Map();

  constructor(link, token) {
    this.link = link;
    this.token = token;
  }

  start() {
    const url = this.link.url.replace(/^http/, 'ws') + '/ws';
    let socket;
    try {
      socket = new globalThis.WebSocket(url, PROTOCOL);
    } catch {
      queueMicrotask(() => this.#end({ code: 1006, reason: 'cannot open a WebSocket' }));
      return;
    }
    this.#socket = socket;
    this.#openTimer = setTimeout(() => this.#end({ code: 1006, reason: 'open timed out' }), this.link.openTimeout);
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
    let ok;
    try {
      const connect = { token: this.token };
      const personal = this.link.personal;
      if (personal.position) connect.personal_since = personal.position;
      ok = await this.#call('connect', connect);
    } catch (e) {
      if (e instanceof HeraldError && e.code !== 0) {
        const code = closeOfError(e.code);
        this.#end({ code, reason: e.message, reconnect: reconnects(code) });
      } else {
        this.#end({ code: 1006, reason: String(e.message ?? e) });
      }
      return;
    }
    if (this.#done) return;
    clearTimeout(this.#openTimer);
    this.#pingInterval = ok.ping_interval ?? this.#pingInterval;
    this.#alive();
    this.#opened = true;
    if (!this.link.opened(this, ok) || this.#done) return;
    const personal = this.link.personal;
    // without `personal_since` the personal channel starts live, from now
    this.link.resumed(this, personal.channel, ok.personal ?? {});
    const subs = this.link.subscriptions();
    this.#listed = true;
    for (const sub of subs) this.#subscribe(sub);
  }

  /** A new subscription: sent now, or restored by the handshake. */
  subscribe(sub) {
    if (this.#listed) this.#subscribe(sub);
  }

  async #subscribe(sub, attempt = 0) {
    const body = { channel: sub.channel };
    if (sub.position) body.since = sub.position;
    let ok;
    try {
      ok = await this.#call('subscribe', body);
    } catch (e) {
      if (this.#done || this.link.subscriptionOf(sub.channel) !== sub) return;
      if (!(e instanceof HeraldError) || e.code === 0) return; // the connection went: a reconnect resubscribes
      if (e.code === 110) {
        // Too far behind to resume: start from now and say so.
        sub.emit('unrecoverable', {});
        sub.position = null;
        this.#subscribe(sub);
        return;
      }
      if ([500, 107].includes(e.code)) {
        // the server could not now: again, a little later
        const delay = Math.min(10000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
        this.#retries.set(sub.channel, setTimeout(() => {
          this.#retries.delete(sub.channel);
          if (!this.#done && this.link.subscriptionOf(sub.channel) === sub) this.#subscribe(sub, attempt + 1);
        }, delay));
        return;
      }
      // refused (not allowed, unknown namespace, a limit): for good
      sub.emit('error', e);
      this.link.refused(sub, e);
      return;
    }
    if (this.link.subscriptionOf(sub.channel) === sub) this.link.resumed(this, sub.channel, ok);
  }

  unsubscribe(channel) {
    clearTimeout(this.#retries.get(channel));
    if (this.#listed) this.#call('unsubscribe', { channel }).catch(() => {});
  }

  command(kind, body) {
    return this.#call(kind, body);
  }

  async refresh(token) {
    await this.#call('refresh', { token });
    this.token = token;
  }

  check() {
    if (Date.now() - this.#lastHeard > (this.#pingInterval + 10) * 1000) {
      this.#end({ code: 4003, reason: 'no ping from the server' });
    }
  }

  close() {
    this.#done = true;
    this.#stop();
    try {
      this.#socket?.close(1000);
    } catch {
      // not open yet
    }
  }

  #call(kind, body) {
    return new Promise((resolve, reject) => {
      if (this.#done || this.#socket?.readyState !== 1) {
        reject(new HeraldError(0, 'not connected'));
        return;
      }
      const id = this.#nextId++;
      this.#pending.set(id, { resolve, reject });
      this.#socket.send(JSON.stringify({ id, [kind]: body }));
    });
  }

  #received(text) {
    if (this.#done) return;
    this.#alive();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.id !== undefined && frame.id !== null) {
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
      this.link.emit('error', new HeraldError(frame.error.code, frame.error.message));
      return;
    }
    if (frame.disconnect) {
      this.#lastDisconnect = frame.disconnect;
      return;
    }
    this.link.pushed(this, frame);
  }

  /** A server that sends nothing for ping_interval + 10 s is gone. */
  #alive() {
    this.#lastHeard = Date.now();
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => {
      this.#end({ code: 4003, reason: 'no ping from the server' });
    }, (this.#pingInterval + 10) * 1000);
  }

  #stop() {
    clearTimeout(this.#watchdog);
    clearTimeout(this.#openTimer);
    for (const timer of this.#retries.values()) clearTimeout(timer);
    this.#retries.clear();
    for (const { reject } of this.#pending.values()) reject(new HeraldError(0, 'connection closed'));
    this.#pending.clear();
  }

  #end(how) {
    if (this.#done) return;
    this.#done = true;
    this.#stop();
    try {
      if (this.#socket && this.#socket.readyState < 2) this.#socket.close(1000);
    } catch {
      // already going
    }
    this.link.closed(this, { opened: this.#opened, ...how });
  }
}

/** One EventSource of the SSE transport, with the channels it has not yet
 * confirmed (`event: subscribe`) and what it replayed for them meanwhile. */
class Stream {
  constructor(source, channels) {
    this.source = source;
    this.unconfirmed = new Set(channels);
    this.replayed = new Map();
  }
}

class SseTransport {
  name = 'sse';
  /** The stream that delivers… */
  #stream = null;
  /** …and the one opening to replace it (a new channel list or token). */
  #next = null;
  #opened = false;
  #done = false;
  #openTimer = null;
  #watchdog = null;
  #reopening = false;

  constructor(link, token) {
    this.link = link;
    this.token = token;
  }

  start() {
    this.#openStream();
  }

  /** Opens a stream with the current channels, token and positions. While
   * one delivers, the new one replaces it once open (make before break:
   * what both carry is told apart by offset). */
  #openStream() {
    const channels = this.link.channels();
    const params = new URLSearchParams({ channels: channels.join(','), token: this.token });
    const cursor = this.link.cursor();
    if (cursor) params.set('last_event_id', cursor);
    let source;
    try {
      source = new globalThis.EventSource(`${this.link.url}/sse?${params}`);
    } catch {
      queueMicrotask(() => this.#end({ code: 1006, reason: 'cannot open an EventSource' }));
      return;
    }
    const stream = new Stream(source, [...channels, this.link.personal.channel].filter(Boolean));
    const first = !this.#stream;
    if (first) this.#stream = stream;
    else {
      this.#next?.source.close();
      this.#next = stream;
    }
    clearTimeout(this.#openTimer);
    this.#openTimer = setTimeout(() => this.#failed(stream, 'open timed out'), this.link.openTimeout);
    const mine = () => stream === this.#stream && !this.#done;
    source.onopen = () => {
      if (this.#done) return;
      if (stream === this.#next) {
        clearTimeout(this.#openTimer);
        this.#stream.source.close();
        this.#stream = stream;
        this.#next = null;
      } else if (stream !== this.#stream) {
        return;
      }
      clearTimeout(this.#openTimer);
      this.#alive();
      if (!this.#opened) {
        this.#opened = true;
        if (!this.link.opened(this, {})) return;
      }
    };
    // EventSource would reconnect by itself, but with the token and the
    // channel list it started with; the SDK reconnects instead, with both
    // current and with its own backoff.
    source.onerror = () => this.#failed(stream, 'stream ended');
    for (const kind of ['pub', 'join', 'leave', 'typing', 'unsubscribe']) {
      source.addEventListener(kind, (event) => {
        if (!mine()) return;
        this.#alive();
        if (event.lastEventId) this.link.lastCursor = event.lastEventId;
        const body = parse(event.data);
        if (!body) return;
        if (kind === 'pub' && stream.unconfirmed.has(body.channel)) {
          // replayed before its `subscribe` event: delivered with it
          if (!stream.replayed.has(body.channel)) stream.replayed.set(body.channel, []);
          stream.replayed.get(body.channel).push(body);
          return;
        }
        this.link.pushed(this, { [kind]: body });
      });
    }
    source.addEventListener('subscribe', (event) => {
      if (!mine()) return;
      this.#alive();
      if (event.lastEventId) this.link.lastCursor = event.lastEventId;
      const ok = parse(event.data);
      if (!ok) return;
      stream.unconfirmed.delete(ok.channel);
      const publications = stream.replayed.get(ok.channel) ?? [];
      stream.replayed.delete(ok.channel);
      this.link.resumed(this, ok.channel, { ...ok, publications });
    });
    source.addEventListener('disconnect', (event) => {
      if (!mine()) return;
      const told = parse(event.data) ?? {};
      this.#end({ code: told.code ?? 4000, reason: told.reason ?? '', reconnect: told.reconnect ?? true });
    });
    source.addEventListener('message', () => {
      if (mine()) this.#alive();
    });
  }

  #failed(stream, reason) {
    if (this.#done) return;
    if (stream === this.#next || stream === this.#stream) this.#end({ code: 1006, reason });
  }

  /** A changed channel list needs a new stream; the cursor resumes it.
   * Several changes in one tick make one new stream. */
  subscribe() {
    this.#reopen();
  }

  unsubscribe() {
    this.#reopen();
  }

  #reopen() {
    if (this.#done || this.#reopening) return;
    this.#reopening = true;
    queueMicrotask(() => {
      this.#reopening = false;
      if (!this.#done) this.#openStream();
    });
  }

  /** A stream is opened with the new token; the old one goes once it is open. */
  async refresh(token) {
    this.token = token;
    this.#reopen();
  }

  command(kind, body) {
    return postCommand(this.link, this.token, kind, body);
  }

  /** A stream silent for long is replaced (if it still works, nobody notices). */
  check() {
    if (Date.now() - this.#lastHeard > 20000) this.#reopen();
  }

  close() {
    this.#done = true;
    clearTimeout(this.#openTimer);
    clearTimeout(this.#watchdog);
    this.#stream?.source.close();
    this.#next?.source.close();
  }

  #lastHeard = Date.now();

  /** `: ping` comments do not reach scripts, so a quiet stream is
   * replaced after 45 s of silence — quietly when the new one opens. */
  #alive() {
    this.#lastHeard = Date.now();
    clearTimeout(this.#watchdog);
    this.#watchdog = setTimeout(() => this.#reopen(), 45000);
  }

  #end(how) {
    if (this.#done) return;
    const opened = this.#opened;
    this.close();
    this.link.closed(this, { opened, ...how });
  }
}

class PollTransport {
  name = 'poll';
  #done = false;
  #opened = false;
  #abort = null;
  #cursor = '';
  #restartQueued = false;
  #polledAt = Date.now();
  /** Channels whose position this transport has confirmed. */
  #confirmed = new Set();

  constructor(link, token) {
    this.link = link;
    this.token = token;
  }

  start() {
    this.#cursor = this.link.cursor();
    this.#loop();
  }

  async #loop() {
    let first = true;
    while (!this.#done) {
      const channels = this.link.channels();
      // the first poll comes back soon even when there is nothing to say,
      // so that a resume with nothing missed is connected at once
      const timeout = first ? Math.min(1, this.link.pollTimeout) : this.link.pollTimeout;
      const params = new URLSearchParams({ channels: channels.join(','), timeout: String(timeout) });
      if (this.#cursor) params.set('cursor', this.#cursor);
      const abort = new AbortController();
      this.#abort = abort;
      this.#polledAt = Date.now();
      const limit = setTimeout(() => abort.abort(), (timeout + 10) * 1000);
      let response;
      let answer = null;
      try {
        response = await fetch(`${this.link.url}/poll?${params}`, {
          headers: { Authorization: `Bearer ${this.token}` },
          signal: abort.signal,
          cache: 'no-store',
        });
        if (response.status !== 204) answer = await response.json().catch(() => null);
      } catch (e) {
        clearTimeout(limit);
        if (this.#done) return;
        // cut short for a new channel list or token: the next poll (an
        // answer lost on the way is sent again: its cursor says so)
        if (abort.signal.reason === RESTART) continue;
        this.#end({ code: 1006, reason: String(e.message ?? e) });
        return;
      }
      clearTimeout(limit);
      if (this.#done) return;
      // cut short while the body was being read (the headers had come):
      // the same as before them — the next poll gets the answer again
      if (!answer && abort.signal.reason === RESTART) continue;
      if (response.status !== 204 && (!response.ok || !answer)) {
        // Herald's own refusals carry an error code; anything else (a proxy
        // in the way) is a transport that does not work here
        const error = answer?.error ?? {};
        const code = error.code === 109 ? 4509 : error.code === 101 ? 4501 : response.status === 503 ? 4000
          : error.code ? 4002 : 1006;
        this.#end({ code, reason: error.message ?? `HTTP ${response.status}`, reconnect: reconnects(code) });
        return;
      }
      first = false;
      if (!this.#opened) {
        this.#opened = true;
        if (!this.link.opened(this, {}) || this.#done) return;
      }
      if (response.status === 204) {
        // the session settled every channel of the poll where it was
        for (const channel of [...channels, this.link.personal.channel]) {
          const sub = this.link.subscriptionOf(channel);
          if (!channel || this.#confirmed.has(channel) || !sub?.position) continue;
          this.#confirmed.add(channel);
          this.link.resumed(this, channel, { ...sub.position, recovered: true });
        }
        continue;
      }
      if (!this.#deliver(answer)) return;
    }
  }

  /** One answer: messages in order, except that a channel not confirmed
   * yet (or that could not be resumed) gets what it missed with its
   * position, after the messages of the others. */
  #deliver(answer) {
    const unrecoverable = new Set(answer.unrecoverable ?? []);
    for (const channel of unrecoverable) this.#confirmed.delete(channel);
    const replayed = new Map();
    for (const push of answer.messages ?? []) {
      if (push.disconnect) {
        this.#end({ code: push.disconnect.code, reason: push.disconnect.reason, reconnect: push.disconnect.reconnect });
        return false;
      }
      const channel = push.pub?.channel;
      if (channel && !this.#confirmed.has(channel)) {
        if (!replayed.has(channel)) replayed.set(channel, []);
        replayed.get(channel).push(push.pub);
        continue;
      }
      this.link.pushed(this, push);
      if (this.#done) return false;
    }
    this.#cursor = answer.cursor ?? this.#cursor;
    this.link.lastCursor = this.#cursor;
    for (const [channel, epoch, offset] of decodeCursorParts(this.#cursor).entries) {
      if (this.#confirmed.has(channel) || !this.link.subscriptionOf(channel)) continue;
      this.#confirmed.add(channel);
      const publications = replayed.get(channel) ?? [];
      replayed.delete(channel);
      this.link.resumed(this, channel, { offset, epoch, recovered: !unrecoverable.has(channel), publications });
    }
    for (const publications of replayed.values()) {
      for (const pub of publications) this.link.pushed(this, { pub });
    }
    return !this.#done;
  }

  /** The next poll carries the new channel list; cut the held one short. */
  subscribe() {
    this.#restartPoll();
  }

  unsubscribe(channel) {
    this.#confirmed.delete(channel);
    this.#restartPoll();
  }

  /** The next poll carries the new token: the session takes it as a refresh. */
  async refresh(token) {
    this.token = token;
    this.#restartPoll();
  }

  check() {
    if (Date.now() - this.#polledAt > (this.link.pollTimeout + 10) * 1000) this.#restartPoll();
  }

  #restartPoll() {
    if (this.#done || this.#restartQueued) return;
    this.#restartQueued = true;
    queueMicrotask(() => {
      this.#restartQueued = false;
      this.#cursor = this.link.cursor();
      this.#abort?.abort(RESTART);
    });
  }

  command(kind, body) {
    return postCommand(this.link, this.token, kind, body);
  }

  close() {
    this.#done = true;
    this.#abort?.abort();
  }

  #end(how) {
    if (this.#done) return;
    this.#done = true;
    this.#abort?.abort();
    this.link.closed(this, { opened: this.#opened, ...how });
  }
}

/** Why a held poll was cut short by the client itself. */
const RESTART = 'restart';

const TRANSPORT_OF = { websocket: WebSocketTransport, sse: SseTransport, poll: PollTransport };

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
