// The browser SDK (`/herald.js`) in headless Chromium. For each transport
// — WebSocket; SSE when WebSockets are blocked; long polling when SSE is
// blocked too — a publisher runs without pause while the connection is cut
// again and again, and the page must see every publication exactly once, in
// order. Then publish, presence and typing from the page.
//
// usage: node sdk.mjs NODE_MODULES EDGE_HTTP API_KEY TOKEN OTHER_TOKEN
import { createRequire } from 'node:module';
import { check, serveSdkUnderTest, until } from './support.mjs';

const [modules, edge, apiKey, token, otherToken] = process.argv.slice(2);
const require = createRequire(`${modules}/`);
const { chromium } = require('playwright-core');

const TIMEOUT = 30000;

async function publish(channel, n) {
  const r = await fetch(`${edge}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data: { n } }),
  });
  if (!r.ok) throw new Error(`publish ${r.status} ${await r.text()}`);
  return (await r.json()).offset;
}

/** Sends to the user `sdk` (its personal channel) through the server API. */
async function sendToUser(n) {
  const r = await fetch(`${edge}/api/send`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: 'sdk', data: { n } }),
  });
  if (!r.ok) throw new Error(`send ${r.status} ${await r.text()}`);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

/** A page on the edge's origin with the SDK loaded, `block` set up first. */
async function sdkPage(block) {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.error('page error:', e.message));
  const cuts = { sockets: [] };
  await serveSdkUnderTest(page);
  await block(page, cuts);
  await page.goto(`${edge}/healthz`);
  await page.evaluate(async () => {
    window.herald = await import('/herald.js');
  });
  return { page, cuts };
}

/** Resume across cuts with a continuous publisher, on one transport. */
async function resumeAcrossCuts(transport, block, cut) {
  const channel = `sdk:${transport}`;
  const { page, cuts } = await sdkPage(block);
  await page.evaluate(({ token, channel }) => {
    window.got = [];
    window.sent = [];
    window.transports = [];
    window.client = new window.herald.Herald({ token, minBackoff: 100, maxBackoff: 500 });
    window.client.on('connected', (c) => window.transports.push(c.transport));
    window.client.subscribe(channel).on('publication', (p) => window.got.push(p.offset));
    window.client.personal.on('publication', (p) => window.sent.push(p.data.n));
    window.client.connect();
  }, { token, channel });
  await until(`${transport}: connected`, () => page.evaluate(() => window.transports.length > 0));
  const chosen = await page.evaluate(() => window.transports[0]);
  check(chosen === transport, `expected the ${transport} transport, got ${chosen}`);

  let publishing = true;
  let last = 0;
  let lastSent = 0;
  const publisher = (async () => {
    for (let n = 1; publishing; n++) {
      last = await publish(channel, n);
      await new Promise((r) => setTimeout(r, 30));
    }
  })();
  // and messages to the user, which arrive on its personal channel
  const sender = (async () => {
    for (let n = 1; publishing; n++) {
      await sendToUser(n);
      lastSent = n;
      await new Promise((r) => setTimeout(r, 45));
    }
  })();
  // Live traffic flows before each cut and after the last: the page has
  // received `more` new publications and messages to the user.
  const flowing = (what, more) => page
    .evaluate(() => [window.got.length, window.sent.length])
    .then(([got, sent]) => until(`${transport}: ${what}`, () => page.evaluate(
      ({ got, sent, more }) => window.got.length >= got + more && window.sent.length >= sent + more,
      { got, sent, more })));
  for (let i = 0; i < 3; i++) {
    await flowing(`traffic before cut ${i + 1}`, 10);
    await cut(page, cuts);
    const reconnected = i + 2;
    await until(`${transport}: reconnect ${i + 1}`, () =>
      page.evaluate((n) => window.transports.length >= n, reconnected));
  }
  await flowing('traffic after the last cut', 10);
  publishing = false;
  await publisher;
  await sender;
  await until(`${transport}: offset ${last}`, () =>
    page.evaluate((last) => window.got.includes(last), last));
  await until(`${transport}: message ${lastSent} to the user`, () =>
    page.evaluate((n) => window.sent.includes(n), lastSent));
  const sent = await page.evaluate(() => window.sent);
  const expectedSent = Array.from({ length: lastSent - sent[0] + 1 }, (_, i) => sent[0] + i);
  check(JSON.stringify(sent) === JSON.stringify(expectedSent),
    `${transport}: a message to the user lost or repeated: ${JSON.stringify(sent)}`);
  check(sent.length >= 20, `${transport}: only ${sent.length} messages to the user`);
  const got = await page.evaluate(() => window.got);
  const expected = Array.from({ length: got[got.length - 1] - got[0] + 1 }, (_, i) => got[0] + i);
  check(JSON.stringify(got) === JSON.stringify(expected),
    `${transport}: a gap or a duplicate: ${JSON.stringify(got)}`);
  check(got.length >= 30, `${transport}: only ${got.length} publications`);
  const reconnects = await page.evaluate(() => window.transports);
  check(reconnects.every((t) => t === transport), `${transport}: switched: ${reconnects}`);
  console.log(`ok: ${transport} resumed across ${reconnects.length - 1} cuts, ${got.length} publications and ${sent.length} messages to the user in order`);
  await page.close();
}

const blockWebSocket = async (page) => {
  await page.routeWebSocket(/\/ws$/, (ws) => ws.close({ code: 1008, reason: 'blocked by a proxy' }));
};
const blockSse = async (page) => {
  await page.route(/\/sse\?/, (route) => route.abort('blockedbyclient'));
};

try {
  // WebSocket, through a proxy the test can cut
  await resumeAcrossCuts('websocket',
    async (page, cuts) => {
      await page.routeWebSocket(/\/ws$/, (ws) => {
        ws.connectToServer();
        cuts.sockets.push(ws);
      });
    },
    async (_page, cuts) => {
      cuts.sockets[cuts.sockets.length - 1].close({ code: 1001, reason: 'network change' });
    });

  // SSE: WebSockets are blocked; the server itself cuts every stream after
  // 2 s (HERALD_SSE_MAX_DURATION_SECS), so a cut is just waiting for it
  await resumeAcrossCuts('sse', blockWebSocket, async () => {});

  // Long polling: WebSockets and SSE are blocked; a cut aborts the held poll
  await resumeAcrossCuts('poll',
    async (page, cuts) => {
      await blockWebSocket(page);
      await blockSse(page);
      cuts.failNext = false;
      await page.route(/\/poll\?/, (route) => {
        if (cuts.failNext) {
          cuts.failNext = false;
          return route.abort('connectionreset');
        }
        return route.continue();
      });
    },
    async (page, cuts) => {
      cuts.failNext = true;
    });

  // Commands from the page, over WebSocket and over HTTP (long polling)
  for (const block of [async () => {}, async (page) => { await blockWebSocket(page); await blockSse(page); }]) {
    const { page } = await sdkPage(block);
    const result = await page.evaluate(async ({ token, otherToken }) => {
      const { Herald, HeraldError } = window.herald;
      const me = new Herald({ token });
      const other = new Herald({ token: otherToken });
      const mine = [];
      const typing = [];
      const mySub = me.subscribe('sdk:room');
      mySub.on('publication', (p) => mine.push(p.data));
      const otherSub = other.subscribe('sdk:room');
      otherSub.on('typing', (t) => typing.push(t.user));
      const connected = (h) => new Promise((resolve) => h.on('connected', resolve));
      const subscribed = (s) => new Promise((resolve) => {
        if (s.state === 'subscribed') resolve();
        else s.on('subscribed', resolve);
      });
      const both = Promise.all([connected(me), connected(other)]);
      me.connect();
      other.connect();
      const [{ transport }] = await both;
      // a publication made before the subscription stands is not this
      // client's (it started at the channel's latest offset)
      await Promise.all([subscribed(mySub), subscribed(otherSub)]);
      const published = await me.publish('sdk:room', { text: 'hello' });
      const wait = async (what, f) => {
        const deadline = Date.now() + 30000;
        while (!f()) {
          if (Date.now() > deadline) throw new Error(`no ${what}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      await wait('own publication', () => mine.length > 0);
      const users = await me.presence('sdk:room');
      await me.typing('sdk:room');
      await wait('typing', () => typing.length > 0);
      let denied = null;
      try {
        await me.publish('elsewhere:x', { text: 'no' });
      } catch (e) {
        denied = e instanceof HeraldError ? e.code : String(e);
      }
      me.disconnect();
      other.disconnect();
      return { transport, published, mine, users, typing, denied };
    }, { token, otherToken });
    check(result.published.offset >= 1, `publish answered ${JSON.stringify(result.published)}`);
    check(result.mine[0].text === 'hello', `own publication ${JSON.stringify(result.mine)}`);
    check(result.users.includes('sdk') && result.users.includes('sdk-other'), `presence ${result.users}`);
    check(result.typing[0] === 'sdk', `typing ${result.typing}`);
    check(result.denied === 103, `publish without permission: ${result.denied}`);
    console.log(`ok: commands over ${result.transport}`);
    await page.close();
  }
  console.log('ok: sdk');
} finally {
  await browser.close();
}
