// Type declarations of the PopBox JavaScript client (hand-written; keep in
// step with popbox.js).

/** A constructor compatible with the WHATWG WebSocket. */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

/** The part of a WebSocket the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => unknown) | null;
  onmessage: ((ev: {data: unknown}) => unknown) | null;
  onerror: ((ev: unknown) => unknown) | null;
  onclose: ((ev: {code: number; reason: string}) => unknown) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A constructor compatible with the WHATWG EventSource. */
export interface EventSourceConstructor {
  new (url: string): EventSourceLike;
}

/** The part of an EventSource the client uses. */
export interface EventSourceLike {
  onopen: ((ev: unknown) => unknown) | null;
  onerror: ((ev: unknown) => unknown) | null;
  addEventListener(type: string, listener: (ev: {data: string}) => unknown): void;
  close(): void;
}

/** A bearer token, or a function that supplies one (called on every
 * (re)connect of a stream, and for fetch calls when the cached token is
 * about to expire). */
export type TokenSupplier = string | (() => string | Promise<string>);

export interface BackoffOptions {
  /** First reconnect delay in ms before jitter (default 500). */
  min?: number;
  /** Largest delay in ms (default 20000). */
  max?: number;
  /** Random source in [0, 1) (default Math.random). */
  random?: () => number;
}

export interface PopBoxOptions {
  /** Use the queues of this org (routes under /org/{org}). */
  org?: string;
  /** JWT for Authorization: Bearer (and ?access_token= on streams). */
  token?: TokenSupplier;
  /** How long before a token's exp it is replaced, in ms (default 30000). */
  tokenRefreshMargin?: number;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
  /** EventSource implementation (default globalThis.EventSource). */
  EventSource?: EventSourceConstructor;
  /** Reconnect backoff. */
  backoff?: BackoffOptions;
  /** Extra headers of every fetch call (e.g. Basic credentials). */
  headers?: Record<string, string>;
  /** Errors not tied to a subscription. */
  onError?: (err: PopBoxError) => void;
}

export type Priority = 'H' | 'L';

export interface ProvisionRequest {
  /** The message (other JSON values are stored as compact JSON text). */
  payload: unknown;
  /** Default 'H'. */
  priority?: Priority;
  /** Queue ids. */
  queues?: string[];
  /** Group names. */
  groups?: string[];
  /** Absolute http(s) URL POSTed when the message is delivered. */
  callback?: string;
  /** Unix seconds. */
  expirationDate?: number;
  /** Seconds from now. */
  expirationDelay?: number;
  /** Other fields, kept as metadata of the transaction. */
  metadata?: Record<string, unknown>;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface ProvisionOptions extends CallOptions {
  /** Provision in this many seconds (?delay=). */
  delay?: number;
  /** Idempotency-Key header: a repeat answers the first call's id. */
  idempotencyKey?: string;
}

export interface PopOptions extends CallOptions {
  /** At most this many messages (default 1000). */
  max?: number;
  /** Wait up to this many seconds for a message (default 5). */
  timeout?: number;
  /** Reliable pop: each message must be acknowledged. */
  reliable?: boolean;
  /** Seconds to acknowledge a reliable message (default 20). */
  timeoutACK?: number;
}

export interface PeekOptions extends CallOptions {
  max?: number;
}

export interface AckResult {
  transaction: string;
  ok: boolean;
  /** The gateway's error string when not ok. */
  error: string;
}

/** One delivered (or peeked) message. */
export interface Message {
  readonly queue: string;
  /** The payload. */
  readonly data: string;
  readonly transaction: string;
  /** 'H' or 'L' on streams; '' from pop and peek. */
  readonly priority: string;
  /** Whether the delivery must be acknowledged. */
  readonly reliable: boolean;
  /** Acknowledges a reliable delivery (no-op for plain ones); repeat calls
   * return the first call's promise. */
  ack(options?: CallOptions): Promise<void>;
  /** The payload parsed as JSON. */
  json<T = unknown>(): T;
}

export type Transport = 'sse' | 'ws' | 'mux';

export type SubscriptionState = 'connecting' | 'connected' | 'reconnecting' | 'closed' | 'error';

export interface SubscribeOptions {
  /** Default 'mux' (the client's one multiplexed WebSocket). */
  transport?: Transport;
  /** Reliable delivery: acknowledge each message with ack(). */
  reliable?: boolean;
  /** Seconds to acknowledge before the stream ends (default 20). */
  timeoutACK?: number;
  /** Closes the subscription when aborted. */
  signal?: AbortSignal;
  onMessage?: (msg: Message) => unknown;
  onStatus?: (state: SubscriptionState) => unknown;
  /** Connection losses (ConnectionError), refused acks (AckError), error
   * frames (ServerError). Without it they go to PopBoxOptions.onError. */
  onError?: (err: PopBoxError) => unknown;
}

export declare class Subscription {
  readonly queue: string;
  readonly transport: Transport;
  readonly reliable: boolean;
  readonly state: SubscriptionState;
  /** Transaction ids of reliable deliveries not yet acknowledged on the
   * current connection. */
  readonly pending: string[];
  /** Resolves once connected; rejects if closed or failed first. */
  ready(options?: CallOptions): Promise<Subscription>;
  /** Acknowledges reliable deliveries by transaction id. */
  ack(transactions: string | string[], options?: CallOptions): Promise<void>;
  close(): void;
}

export declare class PopBox {
  constructor(url: string | URL, options?: PopBoxOptions);
  /** The API root, ending in "/". */
  readonly url: string;
  readonly org: string;
  request<T = unknown>(
    method: string,
    path: string,
    options?: CallOptions & {query?: Record<string, string | number | boolean | undefined>; body?: unknown; headers?: Record<string, string>},
  ): Promise<T>;
  provision(msg: ProvisionRequest, options?: ProvisionOptions): Promise<string>;
  pop(queue: string, options?: PopOptions): Promise<Message[]>;
  peek(queue: string, options?: PeekOptions): Promise<Message[]>;
  ack(queue: string, transactions: string[], options?: CallOptions): Promise<AckResult[]>;
  queueInfo(queue: string, options?: CallOptions): Promise<Record<string, unknown>>;
  subscribe(queue: string, options?: SubscribeOptions): Subscription;
  /** Closes every subscription. */
  close(): void;
}

export declare class PopBoxError extends Error {}

export declare class HTTPError extends PopBoxError {
  readonly status: number;
  /** The gateway's error strings. */
  readonly errors: string[];
  readonly body: unknown;
  readonly requestId: string;
}

/** 401 or 403. */
export declare class AuthError extends HTTPError {}

export declare class ConnectionError extends PopBoxError {
  /** WebSocket close code, 0 otherwise. */
  readonly code: number;
  readonly reason: string;
}

export declare class ServerError extends PopBoxError {
  readonly queue: string;
  readonly serverError: string;
}

export declare class AckError extends PopBoxError {
  readonly queue: string;
  readonly transaction: string;
  readonly serverError: string;
}

/** Reconnect delay of an attempt (0-based) in ms, with equal jitter. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions): number;

/** A parsed WebSocket frame. */
export type Frame =
  | {type: 'message'; queue: string; data: string; transaction: string; priority: string}
  | {type: 'subscribed' | 'unsubscribed'; queue: string}
  | {type: 'error'; queue: string; error: string}
  | {type: 'unknown'; raw: string};

export declare function parseFrame(text: string): Frame;

/** Percent-encodes a queue id or org as one URL path segment (throws a
 * TypeError for "", "." and ".."). */
export declare function encodeSegment(segment: string): string;

/** A JWT's exp in ms since the epoch (0 if none). */
export declare function tokenExpiry(token: string): number;
