// Unit tests of the browser SDK (clients/js/herald.js) in node, against
// the fake server of fake.mjs: transport choice and fallback, backoff,
// dedupe by offset, resume and recovery (a new epoch included), token
// refresh in place, what `disconnected` says, the browser's online and
// visibility events, the way back to WebSocket, and one event order on
// every transport.
//
//   node --test tests/js/
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';

import { browser, FakeHerald, fakeToken, until } from './fake.mjs';
import { codes, Herald, HeraldError } from '../../clients/js/herald.js';

const TRANSPORTS = ['websocket', 'sse', 'poll'];
/** What to block so that the SDK falls back to `transport`… */
const BLOCK = { websocket: [], sse: ['websocket'], poll: ['websocket', 'sse'] };
/** …and so that it can use no other. */
const ONLY = Object.fromEntries(TRANSPORTS.map((t) => [t, TRANSPORTS.filter((other) => other !== t)]));

let cleanup = [];
afterEach(async () => {
  for (const f of cleanup.reverse()) await f();
  cleanup = [];
  browser.online();
});

async function fake() {
  const server = await FakeHerald.start();
  cleanup.push(() => server.stop());
  return server;
}

/** A client of `server` following `channel`, and what it saw, in order. */
function client(server, { channel = 'room', since, ...options } = {}) {
  const herald = new Herald({
    url: server.url,
    getToken: async () => fakeToken(),
    minBackoff: 10,
    maxBackoff: 40,
    pollTimeout: 1,
    ...options,
  });
  cleanup.push(() => herald.disconnect());
  const log = [];
  const at = () => herald.transport;
  herald.on('state', (state) => log.push({ e: 'state', state }));
  herald.on('connected', (c) => log.push({ e: 'connected', transport: c.transport, at: at() }));
  herald.on('disconnected', (d) => log.push({ e: 'disconnected', ...d, state: herald.state }));
  herald.on('retry', (r) => log.push({ e: 'retry', ...r }));
  herald.on('transport', (t) => log.push({ e: 'transport', ...t, at: at() }));
  const sub = herald.subscribe(channel, { since });
  sub.on('publication', (p) => log.push({ e: 'pub', offset: p.offset, epoch: p.epoch, data: p.data, at: at() }));
  sub.on('subscribed', (s) => log.push({ e: 'subscribed', ...s, at: at() }));
  sub.on('unrecoverable', (u) => log.push({ e: 'unrecoverable', ...u }));
  const of = (e) => log.filter((x) => x.e === e);
  /** Waits, and on failure tells what the client saw. */
  const wait = (what, condition) => until(what, condition).catch((e) => {
    throw new Error(`${e.message}; the client saw ${JSON.stringify(log.slice(-30))}`);
  });
  return {
    herald,
    sub,
    log,
    of,
    data: () => of('pub').map((x) => x.data),
    connected: (n = 1) => wait(`${n} connects`, () => of('connected').length >= n),
    subscribed: (n = 1) => wait(`${n} subscribes`, () => of('subscribed').length >= n),
  };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('transport choice', () => {
  test('WebSocket when it works', async () => {
    const server = await fake();
    const c = client(server);
    c.herald.connect();
    await c.connected();
    assert.equal(c.herald.transport, 'websocket');
    assert.equal(c.herald.state, 'connected');
  });

  test('SSE when WebSocket cannot be opened, long polling when SSE cannot either, at once', async () => {
    for (const transport of ['sse', 'poll']) {
      const server = await fake();
      BLOCK[transport].forEach((t) => server.blocked.add(t));
      const c = client(server, { minBackoff: 3600000 });
      c.herald.connect();
      await c.connected();
      assert.equal(c.herald.transport, transport);
      // the fallback is immediate: no backoff before the next transport
      assert.deepEqual(c.of('retry').map((r) => [r.transport, r.delay]),
        BLOCK[transport].map((_, i) => [TRANSPORTS[i + 1], 0]));
    }
  });

  test('only the transports asked for', async () => {
    const server = await fake();
    const c = client(server, { transports: ['poll'] });
    c.herald.connect();
    await c.connected();
    assert.equal(c.herald.transport, 'poll');
  });

  test('back to WebSocket after a fallback, in place, once it works', async () => {
    const server = await fake();
    server.blocked.add('websocket');
    const c = client(server, { minUpgradeDelay: 20, maxUpgradeDelay: 40 });
    c.herald.connect();
    await c.subscribed();
    assert.equal(c.herald.transport, 'sse');
    server.publish('room', 1);
    await until('1 over SSE', () => c.data().length === 1);
    // a probe that fails changes nothing…
    await until('a failed probe', () => server.count('upgrade') >= 2);
    server.blocked.delete('websocket');
    // …one that works takes over
    await until('on WebSocket', () => c.herald.transport === 'websocket');
    await until('the SSE stream closed', () => server.live('sse') === 0);
    server.publish('room', 2);
    await until('2 over WebSocket', () => c.data().length === 2);
    assert.deepEqual(c.data(), [1, 2]);
    assert.deepEqual(c.of('transport').map((t) => [t.transport, t.previous, t.at]), [['websocket', 'sse', 'websocket']]);
    assert.equal(c.of('disconnected').length, 0);
    assert.equal(c.of('connected').length, 1);
  });

  test('after a fallback drops, WebSocket is tried first', async () => {
    const server = await fake();
    server.blocked.add('websocket');
    const c = client(server, { minUpgradeDelay: 3600000 });
    c.herald.connect();
    await c.connected();
    assert.equal(c.herald.transport, 'sse');
    server.blocked.delete('websocket');
    server.drop();
    await c.connected(2);
    assert.deepEqual(c.of('connected').map((x) => x.transport), ['sse', 'websocket']);
  });

  test('a network that is down is no reason to fall back', async () => {
    const server = await fake();
    const c = client(server);
    c.herald.connect();
    await c.connected();
    browser.offline();
    TRANSPORTS.forEach((t) => server.blocked.add(t));
    server.drop();
    await until('retries while offline', () => c.of('retry').length >= 4);
    assert.ok(c.of('retry').every((r) => r.transport === 'websocket'), JSON.stringify(c.of('retry')));
    server.blocked.clear();
    browser.online();
    await c.connected(2);
    assert.equal(c.herald.transport, 'websocket');
  });
});

describe('backoff', () => {
  test('exponential, with jitter, between half and all of min(max, min·2ⁿ)', async () => {
    const server = await fake();
    server.blocked.add('websocket');
    const c = client(server, { transports: ['websocket'], minBackoff: 8, maxBackoff: 64 });
    c.herald.connect();
    await until('12 retries', () => c.of('retry').length >= 12);
    const delays = c.of('retry').map((r) => r.delay).slice(0, 12);
    delays.forEach((delay, n) => {
      const ceiling = Math.min(64, 8 * 2 ** n);
      assert.ok(delay >= ceiling / 2 && delay <= ceiling, `retry ${n}: ${delay} ms, not within ${ceiling / 2}–${ceiling}`);
    });
    const capped = delays.slice(3);
    assert.ok(new Set(capped).size > 1, `no jitter: ${capped}`);
    assert.equal(c.herald.state, 'connecting');
    assert.equal(c.of('disconnected').length, 0, 'it never connected: nothing to say disconnected');
  });

  test('every transport failed: a backoff, then WebSocket again', async () => {
    const server = await fake();
    TRANSPORTS.forEach((t) => server.blocked.add(t));
    const c = client(server, { minBackoff: 8, maxBackoff: 16 });
    c.herald.connect();
    await until('two rounds', () => c.of('retry').length >= 6);
    const round = c.of('retry').slice(0, 6).map((r) => [r.transport, r.delay > 0]);
    assert.deepEqual(round, [['sse', false], ['poll', false], ['websocket', true],
      ['sse', false], ['poll', false], ['websocket', true]]);
  });
});

for (const transport of TRANSPORTS) {
  describe(`over ${transport}`, () => {
    async function connected(options) {
      const server = await fake();
      ONLY[transport].forEach((t) => server.blocked.add(t));
      const c = client(server, options);
      c.herald.connect();
      await c.subscribed();
      assert.equal(c.herald.transport, transport);
      return { server, c };
    }

    /** The network goes; `meanwhile` happens; it comes back. */
    async function away(server, c, meanwhile) {
      const connects = c.of('connected').length;
      TRANSPORTS.forEach((t) => server.blocked.add(t));
      server.drop();
      await until('the client noticed', () => c.herald.state === 'connecting');
      await meanwhile();
      server.blocked.clear();
      ONLY[transport].forEach((t) => server.blocked.add(t));
      await c.connected(connects + 1);
    }

    test('resumes where it stood: what was published meanwhile, once', async () => {
      const { server, c } = await connected();
      for (const n of [1, 2, 3]) server.publish('room', n);
      await until('1–3', () => c.data().length === 3);
      await away(server, c, async () => {
        for (const n of [4, 5]) server.publish('room', n);
      });
      await until('1–5', () => c.data().length === 5);
      server.publish('room', 6);
      await until('1–6', () => c.data().length === 6);
      assert.deepEqual(c.data(), range(1, 6));
      assert.deepEqual(c.sub.position, { offset: 6, epoch: server.resume('room').epoch });
      // it said where it stood: offset 3
      const resumes = {
        websocket: () => server.seen.filter((s) => s.kind === 'subscribe').map((s) => s.since?.offset),
        sse: () => server.seen.filter((s) => s.kind === 'sse').map((s) => s.cursor.find(([ch]) => ch === 'room')?.[2]),
        poll: () => server.seen.filter((s) => s.kind === 'poll').map((s) => s.cursor.find(([ch]) => ch === 'room')?.[2]),
      }[transport]();
      assert.ok(resumes.includes(3), `resumed from ${resumes}`);
    });

    test('drops what it has already seen, by offset', async () => {
      const { server, c } = await connected();
      server.sloppy = true; // every resume replays the whole history
      for (const n of [1, 2, 3]) server.publish('room', n);
      await until('1–3', () => c.data().length === 3);
      await away(server, c, async () => server.publish('room', 4));
      server.publish('room', 5);
      await until('5', () => c.data().includes(5));
      assert.deepEqual(c.data(), range(1, 5));
    });

    test('a new epoch: unrecoverable, then the new epoch from its offset 1', async () => {
      const { server, c } = await connected();
      for (const n of [1, 2, 3]) server.publish('room', n);
      await until('1–3', () => c.data().length === 3);
      const old = c.sub.position.epoch;
      await away(server, c, async () => {
        server.restart();
        for (const n of [4, 5, 6, 7]) server.publish('room', n);
      });
      await until('4–7', () => c.data().length === 7);
      assert.deepEqual(c.data(), range(1, 7));
      const after = c.log.slice(c.log.findIndex((x) => x.e === 'unrecoverable'));
      assert.equal(after[0].e, 'unrecoverable');
      assert.deepEqual(after.filter((x) => x.e === 'pub').map((x) => x.offset), [1, 2, 3, 4]);
      assert.notEqual(c.sub.position.epoch, old);
      const resumed = after.find((x) => x.e === 'subscribed');
      assert.equal(resumed.recovered, false);
      assert.ok(after.indexOf(resumed) > after.findLastIndex((x) => x.e === 'pub'), 'subscribed after the replay');
    });

    test('one event order: connected (transport set), the replay, subscribed', async () => {
      const server = await fake();
      ONLY[transport].forEach((t) => server.blocked.add(t));
      for (const n of [1, 2, 3]) server.publish('room', n);
      const c = client(server, { since: { offset: 0, epoch: '' } });
      c.herald.connect();
      await c.subscribed();
      await away(server, c, async () => server.publish('room', 4));
      await c.subscribed(2);
      const events = c.log.filter((x) => x.e !== 'retry').map((x) => (x.e === 'state' ? x.state : x.e === 'pub' ? x.offset : x.e));
      assert.deepEqual(events, [
        'connecting', 'connected', 'connected', 1, 2, 3, 'subscribed',
        'connecting', 'disconnected', 'connected', 'connected', 4, 'subscribed',
      ]);
      assert.ok(c.log.filter((x) => 'at' in x).every((x) => x.at === transport), JSON.stringify(c.log));
      assert.deepEqual(c.of('disconnected').map((d) => [d.reconnect, d.state]), [[true, 'connecting']]);
    });

    test('refreshes the token before it expires, in place', async () => {
      let tokens = 0;
      // 3 s tokens: each refreshed a second before it expires
      const { server, c } = await connected({ getToken: async () => { tokens += 1; return fakeToken('alice', 3); } });
      await until('2 refreshes', () => tokens >= 3, 15000);
      server.publish('room', 1);
      await until('a publication', () => c.data().length === 1);
      assert.equal(c.of('disconnected').length, 0, JSON.stringify(c.of('disconnected')));
      assert.equal(c.of('connected').length, 1);
      const used = {
        websocket: () => server.count('refresh'),
        sse: () => new Set(server.seen.filter((s) => s.kind === 'sse').map((s) => s.token)).size - 1,
        poll: () => new Set(server.seen.filter((s) => s.kind === 'poll').map((s) => s.token)).size - 1,
      }[transport];
      await until('the server got 2 refreshed tokens', () => used() >= 2);
      if (transport === 'sse') await until('one stream left', () => server.live('sse') === 1);
    });

    test('closed for an expired token: a fresh one, and disconnected says it reconnects', async () => {
      let tokens = 0;
      const { server, c } = await connected({ getToken: async () => { tokens += 1; return fakeToken(); } });
      server.closeAll(codes.close.TOKEN_EXPIRED, 'token expired', true);
      await c.connected(2);
      assert.equal(tokens, 2);
      assert.deepEqual(c.of('disconnected').map((d) => [d.code, d.reconnect, d.state]), [[4509, true, 'connecting']]);
    });

    test('without getToken, an expired token ends it, and disconnected says so', async () => {
      const { server, c } = await connected({ getToken: null, token: fakeToken() });
      const retries = c.of('retry').length;
      server.closeAll(codes.close.TOKEN_EXPIRED, 'token expired', true);
      await until('disconnected', () => c.of('disconnected').length === 1);
      assert.deepEqual(c.of('disconnected').map((d) => [d.code, d.reconnect, d.state]), [[4509, false, 'disconnected']]);
      assert.equal(c.herald.state, 'disconnected');
      assert.equal(c.of('retry').length, retries, 'no retry');
    });

    test('disconnected says reconnect exactly when it reconnects', async () => {
      const { server, c } = await connected();
      server.closeAll(codes.close.SHUTDOWN, 'shutdown', true);
      await c.connected(2);
      const retries = c.of('retry').length;
      server.closeAll(codes.close.FORBIDDEN, 'forbidden', false);
      await until('stopped', () => c.herald.state === 'disconnected');
      assert.deepEqual(c.of('disconnected').map((d) => [d.code, d.reconnect]), [[4000, true], [4503, false]]);
      assert.equal(c.of('retry').length, retries, 'no retry after 4503');
      assert.equal(c.sub.state, 'subscribing');
    });

    test('back online: reconnects at once instead of waiting out its backoff', async () => {
      const { server, c } = await connected({ minBackoff: 3600000, maxBackoff: 3600000 });
      const waits = () => c.of('retry').filter((r) => r.delay >= 1800000).length;
      browser.offline();
      server.drop();
      await until('waiting an hour', () => waits() === 1);
      browser.online();
      await c.connected(2);
      // and visible again, the same
      server.drop();
      await until('waiting again', () => waits() === 2);
      browser.hidden();
      browser.visible();
      await c.connected(3);
      // a connection that works is left alone
      const retries = c.of('retry').length;
      browser.online();
      browser.visible();
      assert.equal(c.herald.state, 'connected');
      assert.equal(c.of('retry').length, retries);
    });
  });
}

describe('the browser', () => {
  test('back online: an attempt begun before is begun again, not waited out', async () => {
    const server = await fake();
    const c = client(server, { openTimeout: 3600000 });
    c.herald.connect();
    await c.connected();
    server.hang = true;
    server.drop();
    await until('an attempt that hangs', () => server.count('upgrade') >= 2);
    server.hang = false;
    browser.online();
    await c.connected(2);
    assert.equal(c.herald.transport, 'websocket');
  });
});

describe('subscriptions', () => {
  test('states: subscribing, subscribed, subscribing while reconnecting, unsubscribed', async () => {
    const server = await fake();
    const c = client(server);
    const states = [];
    c.sub.on('state', (s) => states.push(s));
    assert.equal(c.sub.state, 'subscribing');
    c.herald.connect();
    await c.subscribed();
    server.drop();
    await c.subscribed(2);
    c.sub.unsubscribe();
    assert.deepEqual(states, ['subscribed', 'subscribing', 'subscribed', 'unsubscribed']);
    assert.equal(c.herald.subscriptions.has('room'), false);
  });

  test('commands wait for the connection; refused ones are HeraldErrors with the code', async () => {
    const server = await fake();
    const c = client(server);
    const answer = c.herald.publish('room', { text: 'hi' });
    c.herald.connect();
    assert.deepEqual(await answer, { offset: 1 });
    await assert.rejects(c.herald.typing('room'), (e) => e instanceof HeraldError && e.code === codes.error.BAD_REQUEST);
  });
});
