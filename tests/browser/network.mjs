// The browser SDK (`/herald.js`) in headless Chromium with its network
// really cut: a TCP proxy between the browser and Herald resets every
// connection and refuses new ones for 3 s while the browser is offline,
// five times, with a publisher at 20/s through the server API — and with
// the default history (100 publications) and the SDK's default settings
// nothing may be missed, repeated or reordered. Then the server "restarts"
// (the proxy moves to a second server, a new epoch) while publications
// go on there: the SDK must deliver those too. Then, with WebSockets
// blocked, the SDK falls back to SSE; unblocked, it must come back to
// WebSocket by itself, without a disconnect and without loss.
//
// usage: node network.mjs NODE_MODULES EDGE_A EDGE_B API_KEY SECRET
import { check, launch, mintToken, publisher, serveSdkUnderTest, sleep, tcpProxy, until } from './support.mjs';

const [modules, edgeA, edgeB, apiKey, secret] = process.argv.slice(2);
const TIMEOUT = 30000;
const OUTAGE_MS = 3000;

const browser = await launch(modules);
const proxy = await tcpProxy(edgeA);

/** A page on `origin` whose SDK follows `channel`, logging what it sees. */
async function sdkPage(context, origin, channel, setup = async () => {}) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.error('page error:', e.message));
  await page.exposeFunction('mintToken', () => mintToken(secret, { user: 'net', channels: ['net:*'] }));
  await setup(page);
  await page.goto(`${origin}/healthz`);
  await page.evaluate(async (channel) => {
    const { Herald } = await import('/herald.js');
    const log = [];
    window.log = log;
    // the defaults: backoff, timeouts, transports
    const herald = new Herald({ getToken: () => window.mintToken() });
    window.client = herald;
    herald.on('connected', (c) => log.push({ e: 'connected', transport: c.transport }));
    herald.on('disconnected', (d) => log.push({ e: 'disconnected', ...d, state: herald.state }));
    herald.on('transport', (t) => log.push({ e: 'transport', ...t }));
    const sub = herald.subscribe(channel);
    sub.on('publication', (p) => log.push({ e: 'pub', n: p.data.n, offset: p.offset, epoch: p.epoch, transport: herald.transport }));
    sub.on('subscribed', (s) => log.push({ e: 'subscribed', ...s, transport: herald.transport }));
    sub.on('unrecoverable', () => log.push({ e: 'unrecoverable' }));
    herald.connect();
  }, channel);
  const count = (e) => page.evaluate((e) => window.log.filter((x) => x.e === e).length, e);
  const ns = () => page.evaluate(() => window.log.filter((x) => x.e === 'pub').map((x) => x.n));
  /** Live traffic: `more` new publications arrive. */
  const flowing = async (what, more = 10) => {
    const had = (await ns()).length;
    await until(what, async () => (await ns()).length >= had + more);
  };
  await until('subscribed', async () => (await count('subscribed')) > 0);
  return { page, count, ns, flowing, log: () => page.evaluate(() => window.log) };
}

/** Everything published, once each, in order. */
function allOnce(got, last, what) {
  const expected = Array.from({ length: last }, (_, i) => i + 1);
  if (JSON.stringify(got) === JSON.stringify(expected)) return;
  const seen = new Set();
  const repeated = got.filter((n) => seen.has(n) || !seen.add(n));
  const missing = expected.filter((n) => !seen.has(n));
  throw new Error(`${what}: ${got.length} of ${last}; missing ${JSON.stringify(missing)}; `
    + `repeated ${JSON.stringify(repeated)}; order ${JSON.stringify(got)}`);
}

/** After each disconnect, `connected` comes before any publication or `subscribed`. */
function connectedFirst(log, what) {
  let waiting = true;
  for (const entry of log) {
    if (entry.e === 'disconnected') waiting = true;
    if (entry.e === 'connected') waiting = false;
    if ((entry.e === 'pub' || entry.e === 'subscribed') && (waiting || !entry.transport)) {
      throw new Error(`${what}: ${entry.e} before connected: ${JSON.stringify(entry)}`);
    }
  }
}

try {
  // ---- five real cuts of 3 s, then a restart onto a new epoch
  const context = await browser.newContext();
  await serveSdkUnderTest(context);
  const sdk = await sdkPage(context, proxy.url, 'net:main');
  const pub = publisher({ api: edgeA, apiKey, channel: 'net:main' });

  /** The network goes for `OUTAGE_MS` (the scenario's length, not a wait
   * for something): the browser is offline and every connection to Herald
   * is reset, new ones refused; `meanwhile` runs during it. */
  const outage = async (meanwhile = async () => {}) => {
    const connects = await sdk.count('connected');
    await context.setOffline(true);
    proxy.cut();
    await Promise.all([sleep(OUTAGE_MS), meanwhile()]);
    proxy.restore();
    await context.setOffline(false);
    await until('reconnected', async () => (await sdk.count('connected')) > connects);
  };

  for (let i = 1; i <= 5; i++) {
    await sdk.flowing(`traffic before cut ${i}`);
    await outage();
  }
  await sdk.flowing('traffic after the cuts');

  // The server restarts: what it had is gone (a new epoch), and it stores
  // 30 publications before the client is back.
  await pub.pause();
  const lastOfA = pub.n;
  await until('everything of the first server', async () => (await sdk.ns()).includes(lastOfA));
  await outage(async () => {
    proxy.to(edgeB);
    pub.api = edgeB;
    pub.paused = false;
    await until('30 publications on the new server', () => pub.n >= lastOfA + 30);
  });
  await sdk.flowing('traffic after the restart');
  await pub.stop();
  await until(`publication ${pub.n}`, async () => (await sdk.ns()).includes(pub.n));

  const log = await sdk.log();
  allOnce(await sdk.ns(), pub.n, 'across 5 cuts and a restart');
  connectedFirst(log, 'across 5 cuts and a restart');
  const disconnects = log.filter((x) => x.e === 'disconnected');
  check(disconnects.length === 6, `6 disconnects expected: ${JSON.stringify(disconnects)}`);
  check(disconnects.every((d) => d.reconnect === true && d.state === 'connecting'),
    `every disconnect reconnects, and says so: ${JSON.stringify(disconnects)}`);
  const lost = log.filter((x) => x.e === 'unrecoverable').length;
  check(lost === 1, `the restart is told as unrecoverable once, not ${lost} times`);
  const restart = log.findIndex((x) => x.e === 'unrecoverable');
  const firstOfB = log.slice(restart).find((x) => x.e === 'pub');
  check(firstOfB.n === lastOfA + 1 && firstOfB.offset === 1,
    `after the restart the new epoch from its offset 1: ${JSON.stringify(firstOfB)}`);
  const transports = log.filter((x) => x.e === 'connected').map((x) => x.transport);
  check(transports.every((t) => t === 'websocket'), `a cut network is no reason to leave WebSocket: ${transports}`);
  console.log(`ok: ${pub.n} publications once each, in order, across 5 cuts of ${OUTAGE_MS} ms and a restart`);
  await context.close();

  // ---- back to WebSocket after a fallback
  const blocked = { ws: true };
  const upgrade = await browser.newContext();
  await serveSdkUnderTest(upgrade);
  const sdk2 = await sdkPage(upgrade, edgeB, 'net:upgrade', async (page) => {
    await page.routeWebSocket(/\/ws$/, (ws) => {
      if (blocked.ws) ws.close({ code: 1008, reason: 'blocked by a proxy' });
      else ws.connectToServer();
    });
  });
  const first = (await sdk2.log()).find((x) => x.e === 'connected');
  check(first.transport === 'sse', `WebSocket blocked: SSE expected, got ${first.transport}`);
  const pub2 = publisher({ api: edgeB, apiKey, channel: 'net:upgrade' });
  await sdk2.flowing('traffic over SSE');
  blocked.ws = false;
  await until('back on WebSocket', () => sdk2.page.evaluate(() => window.client.transport === 'websocket'), 90000);
  await sdk2.flowing('traffic over WebSocket');
  await pub2.stop();
  await until(`publication ${pub2.n}`, async () => (await sdk2.ns()).includes(pub2.n));
  const log2 = await sdk2.log();
  allOnce(await sdk2.ns(), pub2.n, 'across the move back to WebSocket');
  check(!log2.some((x) => x.e === 'disconnected'), `moving back is no disconnect: ${JSON.stringify(log2.filter((x) => x.e !== 'pub'))}`);
  const moved = log2.filter((x) => x.e === 'transport');
  check(moved.length === 1 && moved[0].previous === 'sse', `one move from SSE: ${JSON.stringify(moved)}`);
  // and the SSE stream is gone: only the WebSocket is left on the server
  await until('the SSE stream closed', async () => {
    const stats = await (await fetch(`${edgeB}/stats`)).json();
    return stats.connections === 1;
  });
  console.log(`ok: from SSE back to WebSocket by itself, ${pub2.n} publications once each, in order`);
  console.log('ok: network');
} finally {
  proxy.close();
  await browser.close();
}
