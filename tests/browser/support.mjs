// What the browser scripts share.
import { createHmac } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';

/**
 * Only while developing the SDK: with HERALD_TEST_SDK=path/to/herald.js the
 * page gets that file at `/herald.js` instead of the one the server has
 * compiled in (a binary built before a change to the SDK serves the old
 * one). The suite never sets it: it tests what the server serves.
 */
export async function serveSdkUnderTest(target) {
  const file = process.env.HERALD_TEST_SDK;
  if (!file) return;
  const body = await readFile(file, 'utf8');
  await target.route('**/herald.js', (route) =>
    route.fulfill({ contentType: 'text/javascript; charset=utf-8', body }));
}

/** Debian's Chromium through playwright-core from `modules`. */
export async function launch(modules) {
  const require = createRequire(`${modules}/`);
  const { chromium } = require('playwright-core');
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

export function check(condition, what) {
  if (!condition) throw new Error(what);
}

/** Waits for `condition` (sync or async) to be truthy, within a generous deadline. */
export async function until(what, condition, timeout = 30000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** An HS256 client token signed with `secret`, as `herald token` makes. */
export function mintToken(secret, { user, channels = [], publish = [], ttl = 3600 }) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: user, iat: now, exp: now + ttl, channels, publish })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * A TCP proxy between the browser and Herald that really cuts: `cut()`
 * resets every socket it carries and refuses new ones until `restore()`;
 * `to(url)` sends new connections to another server.
 */
export async function tcpProxy(target) {
  let upstream = new URL(target);
  let refusing = false;
  const sockets = new Set();
  const server = net.createServer((client) => {
    if (refusing) {
      client.resetAndDestroy();
      return;
    }
    const server = net.connect(Number(upstream.port), upstream.hostname);
    const pair = [client, server];
    for (const socket of pair) {
      sockets.add(socket);
      socket.on('error', () => pair.forEach((s) => s.destroy()));
      socket.on('close', () => {
        sockets.delete(socket);
        pair.forEach((s) => s.destroy());
      });
    }
    client.pipe(server);
    server.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      refusing = true;
      for (const socket of sockets) socket.resetAndDestroy();
    },
    restore() {
      refusing = false;
    },
    to(url) {
      upstream = new URL(url);
    },
    close() {
      this.cut();
      server.close();
    },
  };
}

/** Publishes `{n}` to `channel` through the server API, `rate` a second
 * (on a fixed schedule), to whichever server `api` currently is. */
export function publisher({ api, apiKey, channel, rate = 20 }) {
  const state = { api, n: 0, running: true, paused: false, error: null, inFlight: Promise.resolve() };
  state.done = (async () => {
    const start = Date.now();
    for (let tick = 0; state.running; tick++) {
      const wait = start + (tick * 1000) / rate - Date.now();
      if (wait > 0) await sleep(wait);
      if (state.paused) continue;
      const n = state.n + 1;
      state.inFlight = fetch(`${state.api}/api/publish`, {
        method: 'POST',
        headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ channel, data: { n } }),
      }).catch((e) => ({ ok: false, text: async () => String(e) }));
      const r = await state.inFlight;
      if (!r.ok) {
        state.error = `publish ${n}: ${await r.text()}`;
        state.running = false;
        break;
      }
      state.n = n;
    }
  })();
  /** Stops publishing; resolves once the publish under way (if any) is
   * answered, so `n` is the last one sent. */
  state.pause = async () => {
    state.paused = true;
    await state.inFlight;
  };
  state.stop = async () => {
    state.running = false;
    await state.done;
    if (state.error) throw new Error(state.error);
  };
  return state;
}
