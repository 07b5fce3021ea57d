// A typed use of the SDK, checked by `tsc -p clients/js` against
// herald.d.ts (imported by the package's name, through its `exports`).
import { codes, Herald, HeraldError, type Position, type Publication } from '@herald-push/client';

interface ChatMessage {
  text: string;
}

async function fetchToken(): Promise<string> {
  const response = await fetch('/my-app/herald-token', { method: 'POST' });
  return ((await response.json()) as { token: string }).token;
}

const herald = new Herald({ url: 'https://push.example.com', getToken: fetchToken });

// saved where the page left off, to resume without loss
const saved: Position | null = JSON.parse(localStorage.getItem('lobby') ?? 'null');
const room = herald.subscribe<ChatMessage>('chat:lobby', saved ? { since: saved } : {});

room.on('publication', (p: Publication<ChatMessage>) => {
  const text: string = p.data.text;
  console.log(p.offset, p.epoch, text, p.from ?? '?');
  if (room.position) localStorage.setItem('lobby', JSON.stringify(room.position));
});
room.on('unrecoverable', () => console.log('some messages are gone: reload them from the app'));
room.on('subscribed', ({ recovered, offset }) => console.log('caught up', recovered, offset));
room.on('unsubscribed', ({ code, reason }) => {
  if (code === codes.error.PERMISSION_DENIED) console.log('no longer allowed:', reason);
});
room.on('state', (state) => {
  const s: 'unsubscribed' | 'subscribing' | 'subscribed' = state;
  console.log(s);
});

herald.on('state', (state) => {
  document.title = state === 'connected' ? `connected (${herald.transport})` : state;
});
herald.on('connected', ({ transport, user }) => console.log(transport, user));
herald.on('disconnected', ({ code, reason, reconnect }) => {
  if (!reconnect) console.log('gave up:', code, reason);
  if (code === codes.close.FORBIDDEN) console.log('removed by the app');
});
herald.on('retry', ({ delay, transport }) => console.log(`next try in ${Math.round(delay)} ms over ${transport}`));
herald.on('transport', ({ transport, previous }) => console.log(`moved from ${previous} to ${transport}`));
const off = herald.personal.on('publication', (p) => console.log('to me:', p.data));
off();

herald.connect();

async function send(text: string): Promise<number> {
  try {
    const { offset } = await herald.publish('chat:lobby', { text });
    return offset;
  } catch (e) {
    if (e instanceof HeraldError && e.code === codes.error.OUTCOME_UNKNOWN) {
      console.log('maybe stored; retry with', e.idempotencyKey);
    }
    throw e;
  }
}

const users: Promise<string[]> = herald.presence('chat:lobby');
void users;
void send('hi');
void herald.typing('chat:lobby');

// what the types refuse
// @ts-expect-error not an event of a Herald
herald.on('publication', () => {});
// @ts-expect-error not a transport
new Herald({ transports: ['carrier-pigeon'] });
// @ts-expect-error a close code is a number of codes.close
const wrong: 'x' = codes.close.SHUTDOWN;
void wrong;
