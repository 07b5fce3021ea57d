// Headless Chromium (Debian's, driven by playwright-core) talks to Herald
// with the browser's own WebSocket and EventSource. EventSource must
// reconnect by itself with Last-Event-ID after the server ends the stream
// and get what was published meanwhile.
//
// usage: node transports.mjs NODE_MODULES EDGE_HTTP API_HTTP API_KEY TOKEN
import { createRequire } from 'node:module';

const [modules, edge, api, apiKey, token] = process.argv.slice(2);
const require = createRequire(`${modules}/`);
const { chromium } = require('playwright-core');

const TIMEOUT = 20000;

async function publish(channel, n) {
  const r = await fetch(`${api}/api/publish`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data: { n } }),
  });
  if (!r.ok) throw new Error(`publish ${r.status} ${await r.text()}`);
  return (await r.json()).offset;
}

function same(a, b, what) {
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    throw new Error(`${what}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`);
  }
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  // Same origin as the edge, as a page served next to it would be.
  await page.goto(`${edge}/healthz`);

  // ---- WebSocket
  const protocol = await page.evaluate(async (token) => {
    window.ws = { offsets: [], data: [] };
    const socket = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws', 'herald.v1.json');
    window.socket = socket;
    await new Promise((resolve, reject) => {
      socket.onerror = () => reject(new Error('websocket error'));
      socket.onopen = () => socket.send(JSON.stringify({ id: 1, connect: { token } }));
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        if (frame.id === 1) socket.send(JSON.stringify({ id: 2, subscribe: { channel: 'browser:ws' } }));
        if (frame.id === 2) resolve();
        if (frame.ping) socket.send(JSON.stringify({ pong: {} }));
        if (frame.pub) { window.ws.offsets.push(frame.pub.offset); window.ws.data.push(frame.pub.data.n); }
      };
    });
    return socket.protocol;
  }, token);
  same(protocol, 'herald.v1.json', 'negotiated subprotocol');
  for (let n = 1; n <= 3; n++) await publish('browser:ws', n);
  await page.waitForFunction(() => window.ws.offsets.length >= 3);
  same(await page.evaluate(() => window.ws.data), [1, 2, 3], 'WebSocket data');
  same(await page.evaluate(() => window.ws.offsets), [1, 2, 3], 'WebSocket offsets');

  // ---- EventSource, with its automatic reconnect
  await page.evaluate((token) => {
    window.sse = { offsets: [], opens: 0, errors: 0, ids: [], subscribed: [] };
    const source = new EventSource(`/sse?channels=browser:sse&token=${encodeURIComponent(token)}`);
    source.onopen = () => { window.sse.opens += 1; };
    source.onerror = () => { window.sse.errors += 1; };
    source.addEventListener('subscribe', (e) => window.sse.subscribed.push(JSON.parse(e.data)));
    source.addEventListener('pub', (e) => {
      window.sse.offsets.push(JSON.parse(e.data).offset);
      window.sse.ids.push(e.lastEventId);
    });
  }, token);
  await page.waitForFunction(() => window.sse.subscribed.length >= 1);
  for (let n = 1; n <= 5; n++) await publish('browser:sse', n);
  await page.waitForFunction(() => window.sse.offsets.length >= 5);
  // The server ends the stream (sse_max_duration_secs); while the browser
  // waits to reconnect, five more are published.
  await page.waitForFunction(() => window.sse.errors >= 1);
  for (let n = 6; n <= 10; n++) await publish('browser:sse', n);
  await page.waitForFunction(() => window.sse.opens >= 2 && window.sse.offsets.length >= 10);
  same(await page.evaluate(() => window.sse.offsets), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'EventSource offsets');
  const resumed = await page.evaluate(() => window.sse.subscribed[window.sse.subscribed.length - 1]);
  same(resumed.recovered, true, 'recovered after the reconnect');
  const ids = await page.evaluate(() => window.sse.ids);
  if (new Set(ids).size !== ids.length || ids.some((id) => !id)) throw new Error(`bad event ids: ${ids}`);
  console.log('ok: browser WebSocket and EventSource (with reconnect and Last-Event-ID)');
} finally {
  await browser.close();
}
