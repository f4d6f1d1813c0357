// PopBox wire protocol: pure functions, no I/O (docs/API.md part 2).
// popbox.js builds the client on top of these; the tests drive them
// directly.

/**
 * Reconnect delay for the given attempt (0 = first retry): exponential
 * growth from min, capped at max, with "equal jitter" (half fixed, half
 * random) so that many clients cut off at once do not come back in
 * lock-step, and no retry comes sooner than half the exponential delay.
 * @param {number} attempt
 * @param {{min?: number, max?: number, random?: () => number}} [o]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, o = {}) {
  const min = o.min ?? 500;
  const max = o.max ?? 20000;
  const random = o.random ?? Math.random;
  const n = Math.max(0, Math.floor(attempt) || 0);
  // 2 ** 31 is far past any max: cap the exponent so it never overflows.
  const exp = Math.min(max, min * 2 ** Math.min(n, 31));
  return Math.round(exp / 2 + random() * (exp / 2));
}

/**
 * Percent-encodes one path segment (a queue id or an org), keeping the
 * sub-delimiters that are legal in a path literal readable (":" "@" "$"
 * "&" "+" "," ";" "="). The gateway decodes path segments once.
 * @param {string} seg
 * @returns {string}
 */
export function encodeSegment(seg) {
  seg = String(seg);
  if (seg === '' || seg === '.' || seg === '..') {
    throw new TypeError(`"${seg}" cannot be used as a path segment`);
  }
  return encodeURIComponent(seg).replace(/%(?:3A|40|24|26|2B|2C|3B|3D)/gi, decodeURIComponent);
}

/**
 * The path of the API root for an org: "" or "org/<org>/" (relative, no
 * leading slash, so it resolves against a base URL with a path prefix).
 * @param {string} [org]
 */
export function orgPath(org) {
  return org ? `org/${encodeSegment(org)}/` : '';
}

/**
 * Parses one text frame of a per-queue WebSocket (GET /queue/{id}/ws) or
 * of the multiplexed one (GET /ws) into a tagged object:
 *   {type: 'message', queue, data, transaction, priority}
 *   {type: 'subscribed' | 'unsubscribed', queue}
 *   {type: 'error', queue, error}
 *   {type: 'unknown', raw}
 * Per-queue message frames carry no "op" (they are the SSE data JSON).
 * @param {string} text
 */
export function parseFrame(text) {
  let f;
  try {
    f = JSON.parse(text);
  } catch {
    return {type: 'unknown', raw: text};
  }
  if (!f || typeof f !== 'object' || Array.isArray(f)) return {type: 'unknown', raw: text};
  const str = (v) => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));
  switch (f.op) {
    case undefined:
    case 'message':
      if (typeof f.transaction !== 'string' || !f.transaction) return {type: 'unknown', raw: text};
      return {type: 'message', queue: str(f.queue), data: str(f.data), transaction: f.transaction, priority: str(f.priority)};
    case 'subscribed':
    case 'unsubscribed':
      return {type: f.op, queue: str(f.queue)};
    case 'error':
      return {type: 'error', queue: str(f.queue), error: str(f.error)};
    default:
      return {type: 'unknown', raw: text};
  }
}

/**
 * Parses the data of an SSE "message" event (same JSON as a per-queue
 * WebSocket frame); null when it is not a message.
 * @param {string} data
 */
export function parseEventData(data) {
  const f = parseFrame(data);
  return f.type === 'message' ? f : null;
}

/**
 * Finds which transaction an error frame is about: the gateway names it
 * at the start ("<tid>/<queue> does not exist", "<tid> is not in flight
 * on this connection's queues"). "" when the error names none.
 * @param {string} error
 */
export function errorTransaction(error) {
  const m = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:\/| )/i.exec(String(error));
  return m ? m[1].toLowerCase() : '';
}

/** Client frames of the multiplexed WebSocket. */
export const muxFrames = {
  subscribe(queue, reliable, timeoutACK) {
    const f = {op: 'subscribe', queue, reliable: !!reliable};
    if (reliable && timeoutACK) f.timeoutACK = timeoutACK;
    return JSON.stringify(f);
  },
  unsubscribe(queue) {
    return JSON.stringify({op: 'unsubscribe', queue});
  },
  ack(queue, transactions) {
    return JSON.stringify({op: 'ack', queue, transactions});
  },
};

/** The ack frame of a per-queue WebSocket. */
export function queueAckFrame(transactions) {
  return JSON.stringify({ack: transactions});
}

/**
 * The expiry of a JWT (its "exp" claim) in milliseconds since the epoch,
 * or 0 when the token is not a JWT or has no numeric exp. The signature
 * is not checked: this only tells when to ask for a fresh token.
 * @param {string} token
 */
export function tokenExpiry(token) {
  const parts = String(token || '').split('.');
  if (parts.length !== 3) return 0;
  try {
    let b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    b64 += '='.repeat((4 - (b64.length % 4)) % 4);
    const json = decodeURIComponent(Array.from(atob(b64), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
    const claims = JSON.parse(json);
    return typeof claims.exp === 'number' && isFinite(claims.exp) ? claims.exp * 1000 : 0;
  } catch {
    return 0;
  }
}

/**
 * The URL of a consumer transport: http(s) base + path, with the query
 * parameters given, and ws(s) for WebSockets.
 * @param {string|URL} base API root, ending in "/"
 * @param {string} path relative path ("queue/q1/events")
 * @param {Record<string, string|number|boolean|undefined>} [query]
 * @param {boolean} [ws]
 */
export function transportURL(base, path, query, ws) {
  const u = new URL(path, base);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '' && v !== false) u.searchParams.set(k, String(v));
  }
  if (ws) u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}
