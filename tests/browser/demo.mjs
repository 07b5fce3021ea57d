// The demo chat at `/` of `herald standalone` with no configuration, as a
// new user first sees it: two people join by name, see each other online,
// see each other typing, talk; one leaves, messages arrive meanwhile, and
// coming back shows them. Then the admin dashboard, opened with the
// development API key, shows both connections and every service.
//
// usage: node demo.mjs NODE_MODULES EDGE_HTTP
import { createRequire } from 'node:module';
import { serveSdkUnderTest } from './support.mjs';

const [modules, edge] = process.argv.slice(2);
const require = createRequire(`${modules}/`);
const { chromium } = require('playwright-core');

const TIMEOUT = 20000;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function join(context, user) {
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.error(`${user} page error:`, e.message));
  await page.goto(`${edge}/`);
  await page.fill('#user', user);
  await page.click('#join button');
  await page.waitForSelector('#status.connected');
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send button');
}

const messages = (page) => page.$$eval('#messages li:not(.note)', (items) =>
  items.map((li) => `${li.querySelector('.from').textContent}: ${li.childNodes[1].textContent}`));

try {
  const aliceContext = await browser.newContext();
  const bobContext = await browser.newContext();
  await serveSdkUnderTest(aliceContext);
  await serveSdkUnderTest(bobContext);
  const alice = await join(aliceContext, 'alice');
  let bob = await join(bobContext, 'bob');

  await alice.waitForFunction(() => document.querySelector('#online').textContent.includes('bob'));
  await bob.waitForFunction(() => document.querySelector('#online').textContent.includes('alice'));

  // typing shows on the other side
  await alice.locator('#text').pressSequentially('hel');
  await bob.waitForFunction(() => document.querySelector('#typing').textContent === 'alice is typing…');
  await say(alice, 'hello bob');
  await bob.waitForFunction(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes('hello bob')));
  await say(bob, 'hi alice');
  await alice.waitForFunction(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes('hi alice')));
  // (bob leaves once his own message is back on his screen: what he has
  // not seen yet would rightly be shown again when he returns)
  await bob.waitForFunction(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes('hi alice')));

  // bob leaves; alice sees it and talks on
  await bob.close();
  await alice.waitForFunction(() => !document.querySelector('#online').textContent.includes('bob'));
  await say(alice, 'are you there?');
  await say(alice, 'call me');
  await alice.waitForFunction(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes('call me')));

  // bob comes back to the page: what he missed appears, in order, once
  bob = await join(bobContext, 'bob');
  await bob.waitForFunction(() => [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes('call me')));
  const seen = await messages(bob);
  const expected = ['alice: are you there?', 'alice: call me'];
  if (JSON.stringify(seen) !== JSON.stringify(expected)) {
    throw new Error(`bob on his return saw ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
  }
  // the dashboard: a wrong key is refused, the development key opens it
  const admin = await (await browser.newContext()).newPage();
  admin.setDefaultTimeout(TIMEOUT);
  await admin.goto(`${edge}/admin`);
  await admin.fill('#key', 'not-the-key');
  await admin.click('#login button');
  await admin.waitForFunction(() => document.querySelector('#error').textContent.includes('invalid API key'));
  await admin.fill('#key', 'herald-dev-key');
  await admin.click('#login button');
  await admin.waitForFunction(() => document.querySelector('#connections').textContent === '2');
  await admin.waitForFunction(() => {
    const services = [...document.querySelectorAll('#nodes tr td:nth-child(2)')].map((td) => td.textContent);
    return ['edge', 'routing', 'presence', 'notify'].every((s) => services.includes(s));
  });
  const users = await admin.textContent('#users');
  if (users !== '2') throw new Error(`dashboard users ${users}`);
  console.log('ok: demo');
} finally {
  await browser.close();
}
