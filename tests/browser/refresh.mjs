// The browser SDK (`/herald.js`) in headless Chromium with tokens that
// live 8 s, on each transport at once (WebSocket; SSE with WebSockets
// blocked; long polling with SSE blocked too) while a publisher runs: the
// SDK refreshes the token in place before it expires, again and again,
// and the page sees no disconnect, and every publication once, in order.
// Each page starts by resuming from the beginning, so its first connect
// replays what was published before: on every transport the client is
// `connected` (with its transport set) before anything is delivered, the
// replay comes next, then `subscribed`.
//
// usage: node refresh.mjs NODE_MODULES EDGE_HTTP API_KEY SECRET
import { check, launch, mintToken, publisher, serveSdkUnderTest, until } from './support.mjs';

const [modules, edge, apiKey, secret] = process.argv.slice(2);
const TIMEOUT = 30000;
const TTL = 8;
const REFRESHES = 3;

const browser = await launch(modules);

const blockWebSocket = async (page) => {
  await page.routeWebSocket(/\/ws$/, (ws) => ws.close({ code: 1008, reason: 'blocked by a proxy' }));
};
const blockSse = async (page) => {
  await page.route(/\/sse\?/, (route) => route.abort('blockedbyclient'));
};
const BLOCKS = {
  websocket: async () => {},
  sse: blockWebSocket,
  poll: async (page) => { await blockWebSocket(page); await blockSse(page); },
};

async function refreshing(transport) {
  const channel = `fresh:${transport}`;
  const pub = publisher({ api: edge, apiKey, channel });
  await until(`${transport}: published before connecting`, () => pub.n >= 10);
  const context = await browser.newContext();
  await serveSdkUnderTest(context);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.error('page error:', e.message));
  let tokens = 0;
  await page.exposeFunction('mintToken', () => {
    tokens += 1;
    return mintToken(secret, { user: `fresh-${transport}`, channels: ['fresh:*'], ttl: TTL });
  });
  await BLOCKS[transport](page);
  await page.goto(`${edge}/healthz`);
  await page.evaluate(async (channel) => {
    const { Herald } = await import('/herald.js');
    const log = [];
    window.log = log;
    const herald = new Herald({ getToken: () => window.mintToken() });
    window.client = herald;
    herald.on('connected', (c) => log.push({ e: 'connected', transport: c.transport }));
    herald.on('disconnected', (d) => log.push({ e: 'disconnected', ...d }));
    // from the very beginning: what was published so far is replayed
    const sub = herald.subscribe(channel, { since: { offset: 0, epoch: '' } });
    sub.on('publication', (p) => log.push({ e: 'pub', n: p.data.n, offset: p.offset, transport: herald.transport }));
    sub.on('subscribed', (s) => log.push({ e: 'subscribed', ...s, transport: herald.transport }));
    herald.connect();
  }, channel);
  await until(`${transport}: ${REFRESHES} refreshes`, () => tokens > REFRESHES, (REFRESHES + 2) * TTL * 1000);
  const ns = () => page.evaluate(() => window.log.filter((x) => x.e === 'pub').map((x) => x.n));
  await pub.stop();
  await until(`${transport}: publication ${pub.n}`, async () => (await ns()).includes(pub.n));

  const log = await page.evaluate(() => window.log);
  const got = await ns();
  const expected = Array.from({ length: pub.n }, (_, i) => i + 1);
  check(JSON.stringify(got) === JSON.stringify(expected), `${transport}: a gap or a duplicate: ${JSON.stringify(got)}`);
  const dropped = log.filter((x) => x.e === 'disconnected');
  check(dropped.length === 0, `${transport}: a refresh is no disconnect: ${JSON.stringify(dropped)}`);
  const connected = log.filter((x) => x.e === 'connected');
  check(connected.length === 1 && connected[0].transport === transport,
    `${transport}: connected once, on ${transport}: ${JSON.stringify(connected)}`);
  // the one event order: connected, the replay, subscribed
  check(log[0].e === 'connected', `${transport}: connected first, not ${JSON.stringify(log[0])}`);
  check(log.every((x) => x.e === 'connected' || x.transport === transport),
    `${transport}: delivered with herald.transport unset: ${JSON.stringify(log.find((x) => x.transport !== transport))}`);
  const at = log.findIndex((x) => x.e === 'subscribed');
  const subscribed = log[at];
  const replay = log.slice(1, at);
  check(replay.length >= 10 && replay.every((x) => x.e === 'pub' && x.offset <= subscribed.offset),
    `${transport}: the replay before subscribed: ${JSON.stringify(log.slice(0, at + 1))}`);
  check(log.filter((x) => x.e === 'subscribed').length === 1, `${transport}: subscribed once`);
  console.log(`ok: ${transport}: ${tokens - 1} refreshes in place, ${got.length} publications once each, in order`);
  await context.close();
}

try {
  await Promise.all(Object.keys(BLOCKS).map(refreshing));
  console.log('ok: refresh');
} finally {
  await browser.close();
}
