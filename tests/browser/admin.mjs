// The admin page at `/admin` of a standalone, in Chromium, as an operator
// uses it in their first hour: signs in with the API key; sees one node
// with its services, charts with axes on a fixed minute, connections by
// transport, publish → deliver latency and the busiest channels filling in
// while messages flow; publishes (JSON and text), reads the history back
// (and a refused `since`), sees who is on a channel, disconnects a user
// (their WebSocket closes with 4503), looks up a user's devices and a test
// push's status; is told when the server API is not reachable. Then the
// demo chat's small things: the token command on one line, messages from
// the server API shown as from "server", a favicon on both pages.
//
// usage: node admin.mjs NODE_MODULES EDGE_HTTP API_KEY WATCHER_TOKEN DEMO_TOKEN
//          [--serve-working-copy] [--screenshots DIR]
// WATCHER_TOKEN: user `watcher`, may subscribe to `ops:*`; DEMO_TOKEN: user
// `dana`, `chat:*` to subscribe and publish.
// --serve-working-copy (development only): the pages come from web/ of this
// checkout instead of the binary (which compiles them in when it is built).
import { createRequire } from 'node:module';
import { readFileSync, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const args = process.argv.slice(2);
const take = (name, withValue) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const [, value] = args.splice(i, withValue ? 2 : 1);
  return value ?? '';
};
const workingCopy = take('--serve-working-copy', false) !== undefined;
// where screenshots go ('' or a failure: a new temporary directory)
let shots = take('--screenshots', true);
const [modules, edge, apiKey, watcherToken, demoToken] = args;
const require = createRequire(`${modules}/`);
const { chromium } = require('playwright-core');

const TIMEOUT = 20000;
const CHANNEL = 'ops:admin';

function check(condition, what) {
  if (!condition) throw new Error(what);
}

async function api(path, body) {
  const response = await fetch(`${edge}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${text}`);
  return JSON.parse(text);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         // a page fulfilled by the script is not known to come from 127.0.0.1:
         // Chromium would then refuse its WebSocket to a local address
         ...(workingCopy ? ['--disable-features=LocalNetworkAccessChecks'] : [])],
});

async function newPage(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  if (workingCopy) {
    const serve = (file) => (route) => route.fulfill({
      contentType: 'text/html; charset=utf-8',
      body: readFileSync(new URL(`../../web/${file}`, import.meta.url)),
    });
    await context.route((url) => url.pathname === '/admin', serve('admin.html'));
    await context.route((url) => url.pathname === '/', serve('index.html'));
  }
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.error(`${name} page error:`, e.message));
  return page;
}

const pages = [];
async function screenshot(page, name) {
  if (shots === undefined) return;
  if (shots === '') shots = mkdtempSync(join(tmpdir(), 'herald-admin-'));
  mkdirSync(shots, { recursive: true });
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
}

/** Waits until `attempt()` answers true, trying again every 100 ms. */
async function eventually(what, attempt) {
  const deadline = Date.now() + TIMEOUT;
  while (!(await attempt())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${TIMEOUT} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Submits an action's form and answers its result's text once it came. */
async function act(page, form, result) {
  await page.$eval(`#${result}`, (e) => e.replaceChildren());
  await page.click(`#${form} button`);
  await page.waitForFunction((id) => document.getElementById(id).childElementCount > 0, result);
  return resultText(page, result);
}

const text = (page, selector) => page.textContent(selector);
const resultText = async (page, id) => (await page.textContent(`#${id}`)).replace(/\s+/g, ' ');

try {
  // ---- a client: a WebSocket of user `watcher` subscribed to ops:admin
  const client = await newPage('client');
  await client.goto(`${edge}/healthz`);
  await client.evaluate(async (token) => {
    window.received = [];
    window.closeCode = null;
    const socket = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws', 'herald.v1.json');
    socket.onclose = (event) => { window.closeCode = event.code; };
    await new Promise((resolve, reject) => {
      socket.onerror = () => reject(new Error('websocket error'));
      socket.onopen = () => socket.send(JSON.stringify({ id: 1, connect: { token } }));
      socket.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        if (frame.id === 1) socket.send(JSON.stringify({ id: 2, subscribe: { channel: 'ops:admin' } }));
        if (frame.id === 2) resolve();
        if (frame.ping) socket.send(JSON.stringify({ pong: {} }));
        if (frame.pub) window.received.push(frame.pub.data);
      };
    });
  }, watcherToken);

  // ---- sign in
  const admin = await newPage('admin');
  pages.push(admin);
  await admin.goto(`${edge}/admin`);
  const icon = await admin.$eval('link[rel="icon"]', (l) => l.getAttribute('href')).catch(() => null);
  check(icon?.startsWith('data:image/svg+xml'), `admin page favicon: ${icon}`);
  await admin.fill('#key', 'not-the-key');
  await admin.click('#login button');
  await admin.waitForFunction(() => document.querySelector('#error').textContent.includes('invalid API key'));
  await admin.fill('#key', apiKey);
  await admin.click('#login button');

  // ---- a standalone is one node, with its services under it
  await admin.waitForFunction(() => document.querySelector('#live').textContent.startsWith('1 node (standalone)'));
  await admin.waitForFunction(() => document.querySelectorAll('#nodes tr:not(.node-head)').length === 4);
  const nodes = await admin.$$eval('#nodes tr', (rows) => rows.map((r) => ({
    head: r.classList.contains('node-head'), node: r.dataset.node, text: r.textContent, service: r.cells[1]?.textContent,
  })));
  const heads = nodes.filter((r) => r.head);
  check(heads.length === 1, `one node heading, got ${JSON.stringify(nodes)}`);
  const services = nodes.filter((r) => !r.head).map((r) => r.service).sort();
  check(JSON.stringify(services) === JSON.stringify(['edge', 'notify', 'presence', 'routing']), `services ${services}`);
  check(new Set(nodes.filter((r) => !r.head).map((r) => r.node)).size === 1, 'every service row under the one node');
  check(heads[0].text.includes('one process: edge, notify, presence, routing'), `node heading: ${heads[0].text}`);

  // ---- the cards: labels on one line, whole; the watcher's WebSocket counted
  await admin.waitForFunction(() => document.querySelector('#connections').textContent === '1');
  const labels = await admin.$$eval('.card .label, .card .value', (els) => els.map((e) => ({
    text: e.textContent,
    lines: Math.round(e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight)),
    cut: e.scrollWidth > e.clientWidth,
  })));
  for (const l of labels) check(l.lines === 1 && !l.cut, `card text "${l.text}" wraps or is cut: ${JSON.stringify(l)}`);
  await admin.waitForFunction(() => document.querySelector('#transport-ws').textContent === '1'
    && document.querySelector('#connections').textContent === '1');
  check(await text(admin, '#transport-sse') === '0' && await text(admin, '#transport-poll') === '0', 'no SSE or polling connection');

  // ---- charts: a y axis with its maximum, a time axis of a fixed minute
  // whose right edge is the latest sample from the first seconds on
  await admin.waitForFunction(() => document.querySelector('#connections-chart polyline'));
  const charts = await admin.$$eval('svg.chart', (svgs) => svgs.map((svg) => {
    const width = svg.getBoundingClientRect().width;
    const dots = [...svg.querySelectorAll('.now-dot')].map((c) => Number(c.getAttribute('cx')));
    const points = [...svg.querySelectorAll('polyline')].flatMap((p) => p.getAttribute('points').split(' ').map((xy) => Number(xy.split(',')[0])));
    return {
      id: svg.id, width, dots, points,
      max: svg.querySelector('.y-max')?.textContent,
      times: [...svg.querySelectorAll('.x-label')].map((t) => t.textContent),
    };
  }));
  check(charts.length === 8, `8 charts, got ${charts.map((c) => c.id)}`);
  for (const c of charts) {
    check(/^\d/.test(c.max ?? ''), `${c.id}: no y-axis maximum (${c.max})`);
    check(JSON.stringify(c.times) === JSON.stringify(['−60 s', '−30 s', 'now']), `${c.id}: time axis ${c.times}`);
  }
  const connections = charts.find((c) => c.id === 'connections-chart');
  check(connections.max === '1', `connections chart scale: ${connections.max}`);
  const right = Math.max(...connections.points);
  check(Math.abs(right - connections.width) < 1, `latest sample at x=${right}, not at the right edge ${connections.width}`);
  check(Math.min(...connections.points) > connections.width / 2,
    `the first samples at x=${Math.min(...connections.points)}: squeezed to the left of a ${connections.width} wide chart`);

  // ---- publish: JSON as typed, text as a string, and JSON that is not
  await admin.fill('#publish-channel', CHANNEL);
  await admin.fill('#publish-data', '{"text": "hello from admin", "n": 1}');
  await admin.click('#publish-form button');
  await admin.waitForFunction(() => document.querySelector('#publish-result').textContent.includes('offset 1'));
  await admin.check('input[name="publish-as"][value="text"]');
  await admin.fill('#publish-data', 'plain words');
  await admin.click('#publish-form button');
  await admin.waitForFunction(() => document.querySelector('#publish-result').textContent.includes('offset 2'));
  await admin.check('input[name="publish-as"][value="json"]');
  await admin.fill('#publish-data', 'not json');
  await admin.click('#publish-form button');
  await admin.waitForFunction(() => document.querySelector('#publish-result .error')?.textContent.includes('not JSON'));
  await client.waitForFunction(() => window.received.length >= 2);
  const received = await client.evaluate(() => window.received);
  check(JSON.stringify(received) === JSON.stringify([{ text: 'hello from admin', n: 1 }, 'plain words']), `the client got ${JSON.stringify(received)}`);

  // ---- history shows them, from the server; a `since` no longer kept is refused
  await admin.fill('#history-channel', CHANNEL);
  await admin.click('#history-form button');
  await admin.waitForSelector('#history-result table');
  const history = await admin.$$eval('#history-result tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
  check(history.length === 2, `history rows ${JSON.stringify(history)}`);
  check(history[0][0] === '1' && history[0][1] === '{"text":"hello from admin","n":1}' && history[0][2] === 'server' && history[0][3] !== '',
    `history row 1: ${JSON.stringify(history[0])}`);
  check(history[1][0] === '2' && history[1][1] === '"plain words"' && history[1][2] === 'server', `history row 2: ${JSON.stringify(history[1])}`);
  check((await resultText(admin, 'history-result')).includes('at offset 2'), 'history names the channel\'s offset');
  await screenshot(admin, 'history');
  await admin.fill('#history-since', '0');
  await admin.fill('#history-epoch', 'an-old-epoch');
  await admin.click('#history-form button');
  await admin.waitForSelector('#history-result .error');
  const refused = await resultText(admin, 'history-result');
  check(refused.includes('error 110') && refused.includes('HTTP 410') && refused.includes('no longer kept'), `history since: ${refused}`);
  await admin.fill('#history-since', '');
  await admin.fill('#history-epoch', '');

  // ---- while messages flow: latency, the busiest channel, the rates
  let publishing = true;
  const publisher = (async () => {
    for (let n = 0; publishing; n++) {
      await api('/api/publish', { channel: CHANNEL, data: { n } });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    await admin.waitForFunction(() => document.querySelector('#latency-p50').textContent !== '–'
      && document.querySelector('#latency-p99').textContent !== '–'
      && [...document.querySelectorAll('#top-channels tr td:first-child')].some((td) => td.textContent === 'ops:admin')
      && document.querySelector('#published').textContent !== '0'
      && document.querySelector('#delivered').textContent !== '0'
      && document.querySelectorAll('#latency-chart polyline').length === 2);
  } finally {
    publishing = false;
    await publisher;
  }
  const p50 = Number((await text(admin, '#latency-p50')).replace(/,/g, ''));
  const p99 = Number((await text(admin, '#latency-p99')).replace(/,/g, ''));
  check(Number.isFinite(p50) && Number.isFinite(p99) && p50 <= p99, `latency p50 ${p50}, p99 ${p99}`);
  check(await admin.$eval('#top-channels-empty', (e) => e.hidden), 'top channels: "nothing published" still shown');
  await screenshot(admin, 'dashboard');

  // ---- presence: the watcher is on the channel
  await admin.fill('#presence-channel', CHANNEL);
  let present;
  await eventually('the watcher on presence', async () => {
    await act(admin, 'presence-form', 'presence-result');
    present = await admin.$$eval('#presence-result li', (items) => items.map((li) => li.dataset.user));
    return present.length > 0;
  });
  check(JSON.stringify(present) === '["watcher"]', `presence ${JSON.stringify(present)}`);

  // ---- disconnect: the watcher's WebSocket closes with 4503
  await admin.fill('#disconnect-user', 'watcher');
  await admin.click('#disconnect-form button');
  await admin.waitForFunction(() => document.querySelector('#disconnect-result .ok')?.textContent.includes('watcher'));
  await client.waitForFunction(() => window.closeCode !== null);
  const code = await client.evaluate(() => window.closeCode);
  check(code === 4503, `the watcher's socket closed with ${code}`);
  await eventually('nobody on presence once the watcher is gone',
    async () => (await act(admin, 'presence-form', 'presence-result')).includes(`Nobody is subscribed to ${CHANNEL} now`));

  // ---- devices and a push's status
  const device = await api('/api/devices', { user: 'erin', platform: 'fcm', token: 'erin-phone:fcm-token-1', locale: 'en-US' });
  await admin.fill('#devices-user', 'erin');
  await admin.click('#devices-form button');
  await admin.waitForSelector('#devices-result table');
  const devices = await admin.$$eval('#devices-result tbody tr', (rows) => rows.map((r) => ({
    id: r.cells[0].title, cells: [...r.cells].map((c) => c.textContent),
  })));
  check(devices.length === 1 && devices[0].id === device.id, `devices ${JSON.stringify(devices)}`);
  check(devices[0].cells[1] === 'fcm' && devices[0].cells[2] === 'default' && devices[0].cells[4] === 'erin-phone:fcm-token-1',
    `device row ${JSON.stringify(devices[0].cells)}`);
  await admin.click('#devices-result button');
  // standalone has no FCM credentials for the app: the push fails, and says why
  await admin.waitForFunction(() => document.querySelector('#status-result .state')?.textContent === 'failed');
  const status = await admin.$$eval('#status-result tbody tr', (rows) => rows.map((r) => ({
    device: r.cells[0].title, cells: [...r.cells].map((c) => c.textContent),
  })));
  check(status.length === 1 && status[0].device === device.id, `statuses ${JSON.stringify(status)}`);
  check(status[0].cells[1] === 'fcm' && status[0].cells[3].includes('no credentials for app') && status[0].cells[4] === '1',
    `status row ${JSON.stringify(status[0].cells)}`);
  const pushId = await admin.inputValue('#status-id');
  check(/^[0-9a-f]{32}$/.test(pushId), `the push's id in the status field: ${pushId}`);
  await screenshot(admin, 'actions');
  await admin.fill('#devices-user', 'nobody-here');
  await admin.click('#devices-form button');
  await admin.waitForFunction(() => document.querySelector('#devices-result').textContent.includes('nobody-here has 0 devices'));

  // ---- a server API that is not there, or not at that address
  await admin.fill('#api-url', 'http://127.0.0.1:9');
  await admin.fill('#publish-data', '{}');
  await admin.click('#publish-form button');
  await admin.waitForFunction(() => document.querySelector('#publish-result .error')?.textContent.includes('is not reachable from this page'));
  await admin.fill('#api-url', `${edge}/not-the-api`);
  await admin.click('#publish-form button');
  await admin.waitForFunction(() => document.querySelector('#publish-result .error')?.textContent.includes('/not-the-api does not serve /api/publish'));
  check((await resultText(admin, 'publish-result')).includes('HTTP 404'), 'the 404 is named');
  await admin.fill('#api-url', '');
  await admin.fill('#publish-channel', 'not a channel!');
  await admin.click('#publish-form button');
  await admin.waitForFunction(() => /error 100 · HTTP 400: ./.test(document.querySelector('#publish-result .error')?.textContent ?? ''));
  await screenshot(admin, 'errors');

  // ---- the demo chat: the token command unbroken, the server's messages
  const demo = await newPage('demo');
  pages.push(demo);
  await demo.goto(`${edge}/`);
  const demoIcon = await demo.$eval('link[rel="icon"]', (l) => l.getAttribute('href')).catch(() => null);
  check(demoIcon?.startsWith('data:image/svg+xml'), `demo page favicon: ${demoIcon}`);
  await demo.fill('#user', 'dana');
  await demo.click('#join button');
  await demo.waitForSelector('#token-help:not([hidden])');
  const command = await demo.$eval('#token-command', (e) => ({ text: e.textContent, lines: e.getClientRects().length }));
  check(command.text === "herald token --user dana --channels 'chat:*' --publish 'chat:*'" && command.lines === 1,
    `the token command: ${JSON.stringify(command)}`);
  const inside = await demo.$eval('#token-command', (e) => {
    const [pre, form] = [e.closest('pre'), e.closest('form')].map((x) => x.getBoundingClientRect());
    return pre.left >= form.left && pre.right <= form.right;
  });
  check(inside, 'the token command sticks out of the form');
  await screenshot(demo, 'demo-token');
  await demo.fill('#token', demoToken);
  await demo.click('#join button');
  await demo.waitForSelector('#status.connected');
  await api('/api/publish', { channel: 'chat:lobby', data: { text: 'maintenance at noon' } });
  await demo.fill('#text', 'hello');
  await demo.click('#send button');
  await demo.waitForFunction(() => document.querySelectorAll('#messages li:not(.note)').length === 2);
  const lines = await demo.$$eval('#messages li:not(.note)', (items) => items.map((li) => ({
    from: li.querySelector('.from').textContent, server: li.querySelector('.from').classList.contains('server'), text: li.childNodes[1].textContent,
  })));
  check(JSON.stringify(lines) === JSON.stringify([
    { from: 'server', server: true, text: 'maintenance at noon' },
    { from: 'dana', server: false, text: 'hello' },
  ]), `demo messages ${JSON.stringify(lines)}`);
  await screenshot(demo, 'demo-chat');
  console.log('ok: admin');
} catch (e) {
  // what the pages showed, for a step that timed out
  for (const page of pages) {
    const shown = await page.$$eval('.result, #live, .card .value, #error, #messages, #token-help', (els) => els
      .filter((el) => el.textContent.trim())
      .map((el) => `${el.id || el.className}: ${el.textContent.replace(/\s+/g, ' ').trim()}`)).catch(() => []);
    console.error(`--- ${page.url()}\n${shown.join('\n')}`);
  }
  if (shots === undefined) shots = '';
  for (const [i, page] of pages.entries()) await screenshot(page, `failed-${i}`).catch(() => {});
  throw e;
} finally {
  await browser.close();
}
