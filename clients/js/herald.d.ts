// Types of the Herald browser SDK (herald.js). The guide is README.md.

/** Where a channel stands for a client: the last offset seen, in its epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A transport the SDK can use, best first. */
export type TransportName = 'websocket' | 'sse' | 'poll';

/** The connection: `connecting` while opening or waiting to reconnect. */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected';

/** A subscription: `subscribing` until the server confirms it (again after
 * every reconnect), `subscribed`, then `unsubscribed` for good. */
export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/** The protocol's numbers. */
export declare const codes: {
  /** WebSocket close codes, also carried by the `disconnect` push of SSE
   * and long polling: 4000–4499 reconnect, 4500–4999 do not. */
  readonly close: {
    /** The server is stopping or draining: reconnect (elsewhere). */
    readonly SHUTDOWN: 4000;
    /** The client did not read fast enough: reconnect and resume. */
    readonly SLOW_CONSUMER: 4001;
    /** The server could not go on with this connection: reconnect. */
    readonly SERVER_ERROR: 4002;
    /** No pong (or, from the SDK, no ping from the server): reconnect. */
    readonly NO_PONG: 4003;
    /** The connection reached the server's age limit: reconnect, to any server. */
    readonly CONNECTION_AGE: 4004;
    /** The client broke the protocol: no reconnect. */
    readonly BAD_PROTOCOL: 4500;
    /** No valid token: no reconnect. */
    readonly UNAUTHORIZED: 4501;
    /** The application removed the user, or the user is over a limit: no reconnect. */
    readonly FORBIDDEN: 4503;
    /** The token expired: a reconnect with a fresh one when `getToken` is given. */
    readonly TOKEN_EXPIRED: 4509;
  };
  /** Error codes of error replies (`HeraldError#code`). */
  readonly error: {
    /** The SDK's own: no connection to send the command on (or it closed before the answer). */
    readonly NOT_CONNECTED: 0;
    readonly BAD_REQUEST: 100;
    readonly UNAUTHORIZED: 101;
    readonly PERMISSION_DENIED: 103;
    readonly UNKNOWN_CHANNEL: 104;
    readonly LIMIT_EXCEEDED: 106;
    readonly TOO_MANY_REQUESTS: 107;
    readonly TOKEN_EXPIRED: 109;
    /** What was asked for is no longer kept in history. */
    readonly UNRECOVERABLE: 110;
    /** The publication was sent on and not confirmed: it may be stored;
     * publishing again with `idempotencyKey` stores it once (`publish`
     * does that itself, up to 3 times). */
    readonly OUTCOME_UNKNOWN: 111;
    /** The server could not do it (a dependency is down); nothing was done. */
    readonly INTERNAL: 500;
  };
};

/** `codes.error.OUTCOME_UNKNOWN`. */
export declare const OUTCOME_UNKNOWN: 111;

/** An error the server answered with (or `code` 0: not connected). */
export declare class HeraldError extends Error {
  constructor(code: number, message: string, idempotencyKey?: string);
  readonly name: 'HeraldError';
  /** One of `codes.error`. */
  readonly code: number;
  /** With code 111: the key that stores the publication once on a retry. */
  readonly idempotencyKey?: string;
}

/** A publication of a channel. */
export interface Publication<T = unknown> {
  channel: string;
  offset: number;
  epoch: string;
  data: T;
  /** The user who published it, for publications of clients. */
  from?: string;
  /** When it was stored, ms since the epoch. */
  ts: number;
}

export interface ChannelUser {
  channel: string;
  user: string;
}

/** Why a connection or a subscription ended. */
export interface Closed {
  /** A close code (`codes.close`), 1000 when the app asked, 1006 when the
   * connection broke; for a subscription, the error code the server gave
   * (103 when a refreshed token no longer allows it), 0 for `unsubscribe()`. */
  code: number;
  reason: string;
}

export interface Disconnected extends Closed {
  /** True exactly when the SDK will reconnect by itself. */
  reconnect: boolean;
}

export interface Connected {
  transport: TransportName;
  user: string | null;
  /** The server's id of this connection (WebSocket only). */
  client?: string;
}

export interface Resumed {
  /** Where the channel stands now (undefined for the personal channel on a
   * fresh WebSocket connection: it starts live). */
  offset?: number;
  epoch?: string;
  /** False when what was missed could not be replayed (`unrecoverable`
   * came first). */
  recovered: boolean;
}

/** A push as the server sent it (every kind, the personal channel's too). */
export interface Push {
  pub?: Publication;
  join?: ChannelUser;
  leave?: ChannelUser;
  typing?: ChannelUser;
  unsubscribe?: { channel: string; code: number; reason: string };
}

type Listener<T> = (value: T) => void;

declare class Emitter<Events> {
  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void;
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void;
}

export interface SubscriptionEvents<T = unknown> {
  /** The state changed. */
  state: SubscriptionState;
  /** The server confirmed it (after every reconnect too), after what it
   * replayed. */
  subscribed: Resumed;
  /** Waiting for the connection (it dropped, or is opening). */
  subscribing: Closed;
  /** Ended for good: by `unsubscribe()`, or by the server. */
  unsubscribed: Closed;
  /** A publication not seen before, in offset order. */
  publication: Publication<T>;
  join: ChannelUser;
  leave: ChannelUser;
  typing: ChannelUser;
  /** What was missed is no longer kept (or the channel's history started
   * over, a new epoch): reload from your own store. What the server still
   * has (a new epoch from its offset 1) follows. */
  unrecoverable: Partial<Position>;
  /** The server refused the subscription (it is then unsubscribed). */
  error: HeraldError;
}

/** One channel the client follows. */
export declare class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  readonly herald: Herald;
  /** The channel; for `herald.personal`, `#<user>` (null before a token is known). */
  readonly channel: string | null;
  /** Where the channel stands for this client; store it to resume later
   * with `subscribe(channel, { since })`. */
  position: Position | null;
  readonly state: SubscriptionState;
  unsubscribe(): void;
}

export interface HeraldEvents {
  /** The connection's state changed. */
  state: ConnectionState;
  /** Connected: `herald.transport` is set before this, and before anything
   * is delivered. Each subscription then resumes. */
  connected: Connected;
  /** A connected connection ended, or the SDK stopped trying. */
  disconnected: Disconnected;
  /** The connection moved to a better transport in place (back to
   * WebSocket after a fallback): no disconnect, nothing missed. */
  transport: { transport: TransportName; previous: TransportName | null };
  /** The next attempt to connect, in `delay` ms, over `transport`. */
  retry: { delay: number; attempt: number; transport: TransportName };
  /** Every push, the personal channel's included. */
  message: Push;
  error: Error;
}

export interface HeraldOptions {
  /** The edge, e.g. `https://push.example.com`; default: the page's origin. */
  url?: string;
  /** A token (JWT) for the user; enough when it outlives the page. */
  token?: string;
  /** Gives a fresh token: called to connect, before the current one
   * expires (the token is refreshed in place, without a disconnect), and
   * after a 4509. */
  getToken?: () => string | Promise<string>;
  /** The transports to use, best first. Default all three. */
  transports?: TransportName[];
  /** Backoff between reconnects, ms: the n-th in a row waits between half
   * and all of min(maxBackoff, minBackoff·2ⁿ). Default 500 and 20000. */
  minBackoff?: number;
  maxBackoff?: number;
  /** After a fallback, the best transport is tried again after about this
   * long (ms), doubling up to the max while it fails. Default 5000 and 60000. */
  minUpgradeDelay?: number;
  maxUpgradeDelay?: number;
  /** A transport that does not open within this (ms) counts as failed. Default 8000. */
  openTimeout?: number;
  /** How long a long poll is held, seconds. Default 25. */
  pollTimeout?: number;
}

/** A connection to Herald. */
export declare class Herald extends Emitter<HeraldEvents> {
  constructor(options?: HeraldOptions);
  readonly url: string;
  /** The token in use (replaced by refreshes). */
  token: string | null;
  readonly state: ConnectionState;
  /** The transport in use while connected, else null. */
  readonly transport: TransportName | null;
  /** The user, once connected. */
  readonly user: string | null;
  readonly subscriptions: ReadonlyMap<string, Subscription>;
  /** The user's personal `#user` channel (where `SendToUser` delivers). */
  readonly personal: Subscription;
  /** Connects and stays connected until `disconnect()`; while waiting to
   * reconnect, tries again at once. */
  connect(): void;
  /** Closes the connection; subscriptions are kept for a later `connect()`. */
  disconnect(): void;
  /** Follows a channel (the same Subscription when already followed);
   * `since` resumes from a stored position. */
  subscribe<T = unknown>(channel: string, options?: { since?: Position }): Subscription<T>;
  unsubscribe(channel: string): void;
  /** Publishes to a channel the token allows; resolves with its offset.
   * Retries an outcome unknown (111) with its idempotency key. */
  publish(channel: string, data: unknown, options?: { idempotencyKey?: string }): Promise<{ offset: number }>;
  /** Tells the channel's other subscribers that this user is typing. */
  typing(channel: string): Promise<unknown>;
  /** Who is in a channel now. */
  presence(channel: string): Promise<string[]>;
}
