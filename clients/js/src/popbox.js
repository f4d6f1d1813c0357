// PopBox JavaScript client: subscribe to queues over SSE or WebSocket (one
// socket per queue, or one multiplexed socket for many), reliable delivery
// with ack(), and pop/peek/provision over fetch. No dependencies; runs in
// browsers and in Node 20+ (pass a WebSocket / EventSource implementation
// where the runtime has none). The protocol is docs/API.md of the gateway.

import {
  backoffDelay,
  encodeSegment,
  errorTransaction,
  muxFrames,
  orgPath,
  parseEventData,
  parseFrame,
  queueAckFrame,
  tokenExpiry,
  transportURL,
} from './protocol.js';

export {backoffDelay, encodeSegment, parseFrame, tokenExpiry};

// ---------------------------------------------------------------- errors

/** Base class of every error this client throws or reports. */
export class PopBoxError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = 'PopBoxError';
  }
}

/** The gateway answered with an error status. */
export class HTTPError extends PopBoxError {
  constructor(message, {status, errors, body, requestId}) {
    super(message);
    this.name = 'HTTPError';
    /** HTTP status code. */
    this.status = status;
    /** The gateway's error strings ({"errors": [...]}, or the text body). */
    this.errors = errors;
    /** The parsed answer body (object or text). */
    this.body = body;
    /** X-Request-Id of the answer ('' when none). */
    this.requestId = requestId;
  }
}

/** 401 or 403: missing or refused credentials. */
export class AuthError extends HTTPError {
  constructor(message, fields) {
    super(message, fields);
    this.name = 'AuthError';
  }
}

/** The network failed, or a stream connection was lost or refused. */
export class ConnectionError extends PopBoxError {
  constructor(message, {code = 0, reason = '', cause} = {}) {
    super(message, cause === undefined ? undefined : {cause});
    this.name = 'ConnectionError';
    /** WebSocket close code (0 when not a WebSocket close). */
    this.code = code;
    /** WebSocket close reason or the SSE end event's text. */
    this.reason = reason;
  }
}

/** An error frame of a WebSocket ({"op": "error", "queue", "error"}). */
export class ServerError extends PopBoxError {
  constructor(queue, error) {
    super(queue ? `queue ${queue}: ${error}` : error);
    this.name = 'ServerError';
    this.queue = queue;
    /** The gateway's error string. */
    this.serverError = error;
  }
}

/** An acknowledgement the gateway refused (not in flight, unknown). */
export class AckError extends PopBoxError {
  constructor(queue, transaction, error) {
    super(`ack of ${transaction} on ${queue}: ${error}`);
    this.name = 'AckError';
    this.queue = queue;
    this.transaction = transaction;
    this.serverError = error;
  }
}

function httpError(what, status, body, requestId) {
  let errors = [];
  if (body && typeof body === 'object' && Array.isArray(body.errors)) errors = body.errors.map(String);
  else if (typeof body === 'string' && body.trim()) errors = [body.trim().slice(0, 500)];
  const msg = `${what}: HTTP ${status}` + (errors.length ? `: ${errors.join('; ')}` : '');
  const fields = {status, errors, body, requestId};
  return status === 401 || status === 403 ? new AuthError(msg, fields) : new HTTPError(msg, fields);
}

function abortReason(signal) {
  return signal.reason ?? new DOMException('The operation was aborted.', 'AbortError');
}

// ---------------------------------------------------------------- tokens

// TokenSource hands out the bearer token: a fixed string, or the result of
// the application's function, called on every (re)connect of a stream and,
// for fetch calls, again when the cached token comes within the refresh
// margin of its expiry (the JWT "exp" claim).
class TokenSource {
  constructor(token, margin) {
    this.source = token;
    this.margin = margin;
    this.value = typeof token === 'string' ? token : '';
    this.exp = tokenExpiry(this.value);
    this.inflight = null;
  }

  get dynamic() {
    return typeof this.source === 'function';
  }

  // get returns the token for a request; fresh forces a call of the
  // application's function (a (re)connect).
  async get(fresh) {
    if (!this.dynamic) return this.value;
    const valid = this.value && (this.exp === 0 || Date.now() < this.exp - this.margin);
    if (!fresh && valid) return this.value;
    if (!this.inflight) {
      // One call at a time; concurrent callers share it.
      const call = (async () => {
        const v = await this.source();
        if (v !== undefined && v !== null && typeof v !== 'string') {
          throw new TypeError('the token function must return a string');
        }
        this.value = v || '';
        this.exp = tokenExpiry(this.value);
        return this.value;
      })();
      this.inflight = call;
      const clear = () => {
        if (this.inflight === call) this.inflight = null;
      };
      call.then(clear, clear);
    }
    return this.inflight;
  }

  // refreshIn is how long a connection opened with token may live before
  // it reconnects with a fresh one (-1: never).
  refreshIn(token) {
    if (!this.dynamic) return -1;
    const exp = tokenExpiry(token);
    if (!exp) return -1;
    const left = exp - Date.now();
    return Math.max(1000, left - Math.min(this.margin, left / 2));
  }
}

// ---------------------------------------------------------------- reconnects

// Driver keeps one stream connection up: it opens it, and when it is lost
// waits a jittered exponential backoff and opens it again (asking for a
// fresh token each time), until stopped. A connection opened with an
// expiring token is replaced shortly before the token expires. open(token,
// hooks) returns the connection ({close()}) and calls hooks.opened() /
// hooks.lost(err) for that connection only.
class Driver {
  constructor(client, open, onState, onError) {
    this.client = client;
    this.open = open;
    this.onState = onState;
    this.onError = onError;
    this.attempt = 0;
    this.timer = 0;
    this.refreshTimer = 0;
    this.conn = null;
    this.stopped = false;
    this.everOpened = false;
  }

  start() {
    this.connect();
  }

  async connect() {
    this.timer = 0;
    if (this.stopped) return;
    this.onState(this.everOpened || this.attempt > 0 ? 'reconnecting' : 'connecting');
    let token;
    try {
      token = await this.client._token.get(true);
    } catch (e) {
      if (this.stopped) return;
      this.onError(new PopBoxError(`token function failed: ${e?.message ?? e}`, {cause: e}));
      this.retry();
      return;
    }
    if (this.stopped) return;
    let conn = null;
    const hooks = {
      opened: () => {
        if (this.conn !== conn || this.stopped) return;
        this.attempt = 0;
        this.everOpened = true;
        const ttl = this.client._token.refreshIn(token);
        if (ttl >= 0) this.refreshTimer = setTimeout(() => this.replace(), ttl);
      },
      lost: (err) => {
        if (this.conn !== conn || this.stopped) return;
        this.conn = null;
        clearTimeout(this.refreshTimer);
        if (err) this.onError(err);
        this.retry();
      },
    };
    try {
      conn = this.open(token, hooks);
    } catch (e) {
      this.onError(e instanceof PopBoxError ? e : new ConnectionError(String(e?.message ?? e), {cause: e}));
      this.retry();
      return;
    }
    this.conn = conn;
  }

  retry() {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt++, this.client._backoff);
    this.onState('reconnecting');
    this.timer = setTimeout(() => this.connect(), delay);
  }

  // replace swaps the connection for one with a fresh token (before the
  // current token expires). Nothing is lost: messages taken for the old
  // connection and not written go back to the head of the queue.
  replace() {
    if (this.stopped || !this.conn) return;
    const c = this.conn;
    this.conn = null;
    c.close();
    this.connect();
  }

  // reconnect drops the connection and opens a new one after a backoff.
  reconnect(err) {
    if (this.stopped || !this.conn) return;
    const c = this.conn;
    this.conn = null;
    clearTimeout(this.refreshTimer);
    c.close();
    if (err) this.onError(err);
    this.retry();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.refreshTimer);
    if (this.conn) {
      const c = this.conn;
      this.conn = null;
      c.close();
    }
  }
}

// ---------------------------------------------------------------- messages

const STATES = new Set(['connecting', 'connected', 'reconnecting', 'closed', 'error']);

// Message is one delivery to a subscription or a pop.
class Message {
  constructor(owner, queue, f, reliable) {
    this.queue = queue;
    this.data = f.data;
    this.transaction = f.transaction;
    this.priority = f.priority || '';
    this.reliable = reliable;
    this._owner = owner;
    this._acked = null;
  }

  /**
   * Acknowledges a reliable delivery (a no-op for plain ones). Calling it
   * again returns the first call's promise.
   */
  ack(options = {}) {
    if (!this.reliable) return Promise.resolve();
    if (!this._acked) {
      this._acked = this._owner._ack([this.transaction], options).then(() => undefined);
      this._acked.catch(() => {
        this._acked = null; // may be retried
      });
    }
    return this._acked;
  }

  /** The payload parsed as JSON. */
  json() {
    return JSON.parse(this.data);
  }
}

// ---------------------------------------------------------------- subscriptions

/** One queue subscription; made by PopBox.subscribe. */
export class Subscription {
  constructor(client, queue, o) {
    this.client = client;
    /** The queue id. */
    this.queue = queue;
    /** 'sse' | 'ws' | 'mux' */
    this.transport = o.transport;
    this.reliable = !!o.reliable;
    this.timeoutACK = o.timeoutACK;
    this._onMessage = o.onMessage;
    this._onStatus = o.onStatus;
    this._onError = o.onError;
    this._state = 'connecting';
    this._waiters = [];
    this._pending = new Map(); // tid -> Message: reliable deliveries not yet acked
    this._link = null; // open per-queue WebSocket ({send}) when transport is ws
    this._driver = null;
    this._signal = o.signal;
    this._onAbort = () => this.close();
  }

  /** 'connecting' | 'connected' | 'reconnecting' | 'closed' | 'error' */
  get state() {
    return this._state;
  }

  /** Transaction ids of reliable deliveries not acknowledged yet. */
  get pending() {
    return [...this._pending.keys()];
  }

  /**
   * Resolves when the subscription is connected (at once if it is);
   * rejects when it is closed or failed first, or when signal aborts.
   */
  ready({signal} = {}) {
    if (this._state === 'connected') return Promise.resolve(this);
    if (this._state === 'closed' || this._state === 'error') {
      return Promise.reject(new PopBoxError(`subscription to ${this.queue} is ${this._state}`));
    }
    return new Promise((resolve, reject) => {
      const w = {resolve, reject};
      this._waiters.push(w);
      if (signal) {
        if (signal.aborted) reject(abortReason(signal));
        signal.addEventListener('abort', () => {
          this._waiters = this._waiters.filter((x) => x !== w);
          reject(abortReason(signal));
        }, {once: true});
      }
    });
  }

  /**
   * Acknowledges reliable deliveries by transaction id: in-band on a
   * WebSocket (the promise resolves when the frame is sent; a refusal is
   * reported to onError as an AckError), else with POST /queue/{id}/ack
   * (rejects with an AckError for the first refused id).
   */
  ack(transactions, options = {}) {
    const tids = Array.isArray(transactions) ? transactions : [transactions];
    return this._ack(tids.map(String), options);
  }

  /** Ends the subscription (messages not yet written go back to the queue). */
  close() {
    if (this._state === 'closed') return;
    this._finish('closed');
  }

  // ---- internal

  _start() {
    if (this._signal) {
      if (this._signal.aborted) {
        this._finish('closed');
        return;
      }
      this._signal.addEventListener('abort', this._onAbort, {once: true});
    }
    if (this.transport === 'mux') {
      this.client._muxFor().add(this);
      return;
    }
    const open = this.transport === 'sse' ? (t, h) => this._openSSE(t, h) : (t, h) => this._openWS(t, h);
    this._driver = new Driver(this.client, open, (s) => this._setState(s), (e) => this._error(e));
    this._driver.start();
  }

  _finish(state, err) {
    if (this._driver) this._driver.stop();
    if (this.transport === 'mux') this.client._muxFor().remove(this, state === 'closed');
    this._link = null;
    this._pending.clear();
    if (this._signal) this._signal.removeEventListener('abort', this._onAbort);
    this.client._subs.delete(this);
    if (err) this._error(err);
    this._setState(state);
  }

  _setState(s, detail) {
    if (!STATES.has(s) || this._state === s || this._state === 'closed' || this._state === 'error') return;
    this._state = s;
    if (s === 'connected') {
      for (const w of this._waiters.splice(0)) w.resolve(this);
    } else if (s === 'closed' || s === 'error') {
      for (const w of this._waiters.splice(0)) w.reject(new PopBoxError(`subscription to ${this.queue} is ${s}`));
    }
    if (s !== 'connected') this._link = null;
    if (this._onStatus) this._call(this._onStatus, s, detail);
  }

  _error(err) {
    if (this._onError) this._call(this._onError, err);
    else this.client._reportError(err);
  }

  _call(fn, ...args) {
    try {
      const r = fn(...args);
      if (r && typeof r.catch === 'function') r.catch((e) => this.client._reportError(e));
    } catch (e) {
      this.client._reportError(e);
    }
  }

  _deliver(f) {
    if (this._state === 'closed' || this._state === 'error') return;
    const m = new Message(this, this.queue, f, this.reliable);
    if (this.reliable) this._pending.set(m.transaction, m);
    if (this._onMessage) this._call(this._onMessage, m);
  }

  // _connectionLost forgets the deliveries of a lost connection: unacked
  // ones go back to the queue after their ack timeout and come again.
  _connectionLost() {
    this._link = null;
    this._pending.clear();
  }

  async _ack(tids, {signal} = {}) {
    if (signal?.aborted) throw abortReason(signal);
    tids = tids.filter((t) => t);
    if (!tids.length) return;
    if (this._link && this._state === 'connected' && this._link.send(tids)) {
      for (const t of tids) this._pending.delete(t);
      return;
    }
    const results = await this.client.ack(this.queue, tids, {signal});
    for (const r of results) if (r.ok) this._pending.delete(r.transaction);
    const bad = results.find((r) => !r.ok);
    if (bad) throw new AckError(this.queue, bad.transaction, bad.error);
  }

  _ackRefused(error) {
    const tid = errorTransaction(error);
    if (tid) this._pending.delete(tid);
    this._error(tid ? new AckError(this.queue, tid, error) : new ServerError(this.queue, error));
  }

  _query(token) {
    return {
      reliable: this.reliable ? 1 : undefined,
      timeoutACK: this.reliable ? this.timeoutACK : undefined,
      access_token: token || undefined,
    };
  }

  _openSSE(token, hooks) {
    const ES = this.client._EventSource;
    if (!ES) throw new PopBoxError('no EventSource implementation: pass options.EventSource (or use transport "ws")');
    const url = transportURL(this.client.url, this.client._path(`queue/${encodeSegment(this.queue)}/events`), this._query(token));
    const es = new ES(url);
    let opened = false;
    let done = false;
    const lost = (err) => {
      if (done) return;
      done = true;
      es.close();
      this._connectionLost();
      hooks.lost(err);
    };
    es.onopen = () => {
      if (done) return;
      opened = true;
      hooks.opened();
      this._setState('connected');
    };
    es.addEventListener('message', (ev) => {
      if (done) return;
      const f = parseEventData(ev.data);
      if (f) this._deliver(f);
    });
    // The gateway's last word on shutdown or ack timeout; reconnect with
    // our backoff (and a fresh token) rather than EventSource's own.
    es.addEventListener('end', (ev) => lost(new ConnectionError(`stream of ${this.queue} ended by the gateway: ${ev.data}`, {reason: String(ev.data ?? '')})));
    es.onerror = () => lost(new ConnectionError(opened ? `SSE connection to ${this.queue} lost` : `SSE connection to ${this.queue} failed`));
    return {
      close: () => {
        done = true;
        es.close();
      },
    };
  }

  _openWS(token, hooks) {
    const path = this.client._path(`queue/${encodeSegment(this.queue)}/ws`);
    const ws = this.client._socket(transportURL(this.client.url, path, this._query(token), true));
    let done = false;
    // send reports whether the frame went out (false: the socket is
    // closing, and the ack goes over HTTP instead).
    const link = {send: (tids) => ws.readyState === 1 && (ws.send(queueAckFrame(tids)), true)};
    ws.onopen = () => {
      if (done) return;
      hooks.opened();
      this._setState('connected');
      this._link = link;
    };
    ws.onmessage = (ev) => {
      if (done || typeof ev.data !== 'string') return;
      const f = parseFrame(ev.data);
      if (f.type === 'message') this._deliver(f);
      else if (f.type === 'error') this._ackRefused(f.error);
    };
    ws.onerror = () => {}; // a close event follows
    ws.onclose = (ev) => {
      if (done) return;
      done = true;
      this._connectionLost();
      hooks.lost(closeError(`WebSocket of ${this.queue}`, ev));
    };
    return {
      close: () => {
        done = true;
        ws.close(1000, 'closed by the client');
      },
    };
  }
}

function closeError(what, ev) {
  const code = ev?.code ?? 0;
  const reason = ev?.reason ?? '';
  return new ConnectionError(`${what} closed (${code}${reason ? `: ${reason}` : ''})`, {code, reason});
}

// Mux is the one multiplexed WebSocket (GET /ws) of a client: it opens
// with the first mux subscription, subscribes every queue again after a
// reconnect, and closes with the last one.
class Mux {
  constructor(client) {
    this.client = client;
    this.subs = new Map(); // queue -> Subscription
    this.driver = null;
    this.ws = null; // open socket, or null
  }

  add(sub) {
    if (this.subs.has(sub.queue)) {
      sub._finish('error', new PopBoxError(`already subscribed to ${sub.queue} on the multiplexed connection`));
      return;
    }
    this.subs.set(sub.queue, sub);
    if (!this.driver) {
      this.driver = new Driver(this.client, (t, h) => this.open(t, h), (s) => this.state(s), (e) => this.error(e));
      this.driver.start();
    } else if (this.ws) {
      this.send(muxFrames.subscribe(sub.queue, sub.reliable, sub.timeoutACK));
    }
  }

  remove(sub, unsubscribe) {
    if (this.subs.get(sub.queue) !== sub) return;
    this.subs.delete(sub.queue);
    if (this.subs.size === 0) {
      const d = this.driver;
      this.driver = null;
      this.ws = null;
      if (d) d.stop();
    } else if (unsubscribe && this.ws) {
      this.send(muxFrames.unsubscribe(sub.queue));
    }
  }

  send(frame) {
    if (this.ws) this.ws.send(frame);
  }

  state(s) {
    // The connection's state reaches the subscriptions, except
    // "connected": each one is connected by its "subscribed" frame.
    if (s === 'connected') return;
    for (const sub of this.subs.values()) sub._setState(s);
  }

  error(err) {
    for (const sub of this.subs.values()) sub._error(err);
    if (!this.subs.size) this.client._reportError(err);
  }

  open(token, hooks) {
    const url = transportURL(this.client.url, this.client._path('ws'), {access_token: token || undefined}, true);
    const ws = this.client._socket(url);
    let done = false;
    ws.onopen = () => {
      if (done) return;
      this.ws = ws;
      hooks.opened();
      for (const sub of this.subs.values()) ws.send(muxFrames.subscribe(sub.queue, sub.reliable, sub.timeoutACK));
    };
    ws.onmessage = (ev) => {
      if (done || typeof ev.data !== 'string') return;
      const f = parseFrame(ev.data);
      const sub = f.queue ? this.subs.get(f.queue) : undefined;
      switch (f.type) {
        case 'message':
          if (sub) sub._deliver(f);
          break;
        case 'subscribed':
          if (sub) {
            sub._setState('connected');
            sub._link = {send: (tids) => this.ws === ws && ws.readyState === 1 && (ws.send(muxFrames.ack(sub.queue, tids)), true)};
          }
          break;
        case 'error':
          if (!sub) {
            this.error(new ServerError(f.queue, f.error));
          } else if (sub.state !== 'connected') {
            // The gateway refused the subscription (bad id, not allowed,
            // too many): it will not succeed by retrying.
            sub._finish('error', new ServerError(f.queue, f.error));
          } else {
            sub._ackRefused(f.error);
          }
          break;
        default:
          break;
      }
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (done) return;
      done = true;
      this.ws = null;
      for (const sub of this.subs.values()) sub._connectionLost();
      hooks.lost(closeError('multiplexed WebSocket', ev));
    };
    return {
      close: () => {
        done = true;
        if (this.ws === ws) this.ws = null;
        for (const sub of this.subs.values()) sub._connectionLost();
        ws.close(1000, 'closed by the client');
      },
    };
  }
}

// ---------------------------------------------------------------- client

/** A PopBox gateway client. */
export class PopBox {
  /**
   * @param {string|URL} url the gateway's root URL (http(s)://host:port,
   *   with a path prefix if a proxy adds one); relative URLs resolve
   *   against the page's location in a browser.
   * @param {import('./popbox.js').PopBoxOptions} [options]
   */
  constructor(url, options = {}) {
    const base = typeof location !== 'undefined' ? new URL(String(url), location.href) : new URL(String(url));
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    base.search = '';
    base.hash = '';
    /** The API root, ending in "/". */
    this.url = base.toString();
    /** The org whose queues this client uses ('' for none). */
    this.org = options.org || '';
    orgPath(this.org); // validates
    this._token = new TokenSource(options.token, options.tokenRefreshMargin ?? 30000);
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._EventSource = options.EventSource ?? globalThis.EventSource;
    this._backoff = {min: options.backoff?.min ?? 500, max: options.backoff?.max ?? 20000, random: options.backoff?.random};
    this._headers = options.headers || {};
    this._onError = options.onError;
    this._subs = new Set();
    this._mux = null;
  }

  // ---- fetch calls

  /**
   * Sends a request to the gateway and returns the parsed JSON answer;
   * error statuses throw HTTPError (AuthError for 401/403), network
   * failures ConnectionError.
   */
  async request(method, path, {query, body, headers, signal} = {}) {
    if (!this._fetch) throw new PopBoxError('no fetch implementation: pass options.fetch');
    if (signal?.aborted) throw abortReason(signal);
    const h = {Accept: 'application/json', ...this._headers, ...headers};
    const token = await this._token.get(false);
    if (token) h.Authorization = `Bearer ${token}`;
    let payload;
    if (body !== undefined) {
      h['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const url = transportURL(this.url, path, query);
    const what = `${method} ${new URL(url).pathname}`;
    let res;
    let text;
    try {
      res = await this._fetch(url, {method, headers: h, body: payload, signal});
      text = await res.text();
    } catch (e) {
      if (signal?.aborted) throw abortReason(signal);
      throw new ConnectionError(`${what}: ${e?.message ?? e}`, {cause: e});
    }
    let data = text;
    if ((res.headers.get('Content-Type') || '').includes('json') || /^\s*[[{]/.test(text)) {
      try {
        data = JSON.parse(text);
      } catch {
        // keep the text
      }
    }
    if (!res.ok) throw httpError(what, res.status, data, res.headers.get('X-Request-Id') || '');
    return data;
  }

  /**
   * Provisions a message (POST /trans) and returns its transaction id.
   * @param {import('./popbox.js').ProvisionRequest} msg
   */
  async provision(msg, {delay, idempotencyKey, signal} = {}) {
    const body = {...(msg.metadata || {}), payload: msg.payload, priority: msg.priority || 'H'};
    if (msg.queues) body.queue = msg.queues.map((id) => ({id: String(id)}));
    if (msg.groups) body.groups = msg.groups.map(String);
    for (const k of ['callback', 'expirationDate', 'expirationDelay']) if (msg[k] !== undefined) body[k] = msg[k];
    const headers = idempotencyKey ? {'Idempotency-Key': idempotencyKey} : undefined;
    const r = await this.request('POST', this._path('trans'), {body, headers, signal, query: {delay}});
    if (!r || typeof r.data !== 'string') throw new PopBoxError('provision: the answer holds no transaction id');
    return r.data;
  }

  /**
   * Pops up to max messages (long poll of up to timeout seconds). With
   * reliable, each must be acknowledged within timeoutACK seconds.
   */
  async pop(queue, {max, timeout, reliable, timeoutACK, signal} = {}) {
    const route = reliable ? 'poprel' : 'pop';
    const r = await this.request('POST', this._path(`queue/${encodeSegment(queue)}/${route}`), {
      query: {max, timeout, timeoutACK: reliable ? timeoutACK : undefined},
      signal,
    });
    return this._messages(queue, r, !!reliable);
  }

  /** Returns up to max messages of the queue without taking them. */
  async peek(queue, {max, signal} = {}) {
    const r = await this.request('GET', this._path(`queue/${encodeSegment(queue)}/peek`), {query: {max}, signal});
    return this._messages(queue, r, false);
  }

  /**
   * Acknowledges reliable deliveries (POST /queue/{id}/ack); one result
   * per id: {transaction, ok, error}.
   */
  async ack(queue, transactions, {signal} = {}) {
    const r = await this.request('POST', this._path(`queue/${encodeSegment(queue)}/ack`), {
      body: {transactions: transactions.map(String)},
      signal,
    });
    const list = Array.isArray(r) ? r : [];
    return transactions.map((t, i) => {
      const e = list[i] || {};
      return e.err ? {transaction: String(t), ok: false, error: String(e.err)} : {transaction: String(t), ok: true, error: ''};
    });
  }

  /** GET /queue/{id}: size, blocked, lastPop, high/low entries. */
  queueInfo(queue, {signal} = {}) {
    return this.request('GET', this._path(`queue/${encodeSegment(queue)}`), {signal});
  }

  // ---- subscriptions

  /**
   * Subscribes to a queue over SSE ("sse"), a WebSocket of its own
   * ("ws") or the client's one multiplexed WebSocket ("mux", the
   * default). The subscription reconnects by itself until closed.
   * @param {string} queue
   * @param {import('./popbox.js').SubscribeOptions} [options]
   */
  subscribe(queue, options = {}) {
    const transport = options.transport || 'mux';
    if (!['sse', 'ws', 'mux'].includes(transport)) throw new TypeError(`unknown transport ${transport}: use sse, ws or mux`);
    encodeSegment(queue); // validates
    if (transport !== 'sse' && !this._WebSocket) {
      throw new PopBoxError('no WebSocket implementation: pass options.WebSocket');
    }
    if (transport === 'sse' && !this._EventSource) {
      throw new PopBoxError('no EventSource implementation: pass options.EventSource');
    }
    const sub = new Subscription(this, String(queue), {...options, transport});
    this._subs.add(sub);
    sub._start();
    return sub;
  }

  /** Closes every subscription of this client. */
  close() {
    for (const s of [...this._subs]) s.close();
  }

  // ---- internal

  _path(p) {
    return orgPath(this.org) + p;
  }

  _socket(url) {
    return new this._WebSocket(url);
  }

  _muxFor() {
    if (!this._mux) this._mux = new Mux(this);
    return this._mux;
  }

  _reportError(err) {
    if (this._onError) {
      try {
        this._onError(err);
      } catch {
        // the application's handler failed: nothing left to tell
      }
    }
  }

  _messages(queue, r, reliable) {
    const data = Array.isArray(r?.data) ? r.data : [];
    const tids = Array.isArray(r?.transactions) ? r.transactions : [];
    const owner = {_ack: (t, o) => this.ack(queue, t, o).then((res) => {
      const bad = res.find((x) => !x.ok);
      if (bad) throw new AckError(queue, bad.transaction, bad.error);
    })};
    return data.map((d, i) => new Message(owner, queue, {data: typeof d === 'string' ? d : JSON.stringify(d), transaction: String(tids[i] ?? '')}, reliable));
  }
}
