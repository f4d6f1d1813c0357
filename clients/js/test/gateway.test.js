// The client against a real gateway (POPBOX_TEST_URL, started with
// POPBOX_JWT_SECRET=$POPBOX_TEST_JWT_SECRET and POPBOX_REQUIRE_AUTH=true by
// the Go test in clients/js, which runs this file). Node's own WebSocket
// (undici; global from Node 22, --experimental-websocket on Node 20).
import {test} from 'node:test';
import assert from 'node:assert/strict';
import {createHmac, randomUUID} from 'node:crypto';

import {AckError, AuthError, ConnectionError, HTTPError, PopBox, ServerError} from '../src/popbox.js';

const URL_ = process.env.POPBOX_TEST_URL;
const SECRET = process.env.POPBOX_TEST_JWT_SECRET;
const skip = !URL_ || !SECRET ? 'needs a gateway: POPBOX_TEST_URL and POPBOX_TEST_JWT_SECRET (go test ./clients/js/ starts one)' : false;
// Node 18 (Debian 12's nodejs) has no WebSocket: those tests need Node 20+.
const wsSkip = skip || (typeof globalThis.WebSocket !== 'function' ? `no WebSocket in Node ${process.versions.node} (20: --experimental-websocket, 22+: built in)` : false);

// jwt mints an HS256 token allowing every queue for ttl seconds.
function jwt(ttl = 300, claims = {}) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({alg: 'HS256', typ: 'JWT'})}.${b64({queues: ['*'], exp: Math.floor(Date.now() / 1000) + ttl, ...claims})}`;
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`;
}

// Records every WebSocket the client opens (still the real one).
function recordingWebSocket() {
  const sockets = [];
  class Recording extends globalThis.WebSocket {
    constructor(url) {
      super(url);
      sockets.push({url, ws: this});
    }
  }
  return {Recording, sockets};
}

function client(opts = {}) {
  return new PopBox(URL_, {token: () => jwt(), backoff: {min: 50, max: 400}, ...opts});
}

// until polls cond (an async predicate) until it holds, or fails after 10 s.
async function until(what, cond) {
  const end = Date.now() + 10000;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// inbox collects the messages of a subscription.
function inbox() {
  const got = [];
  return {got, onMessage: (m) => got.push(m), has: (tid) => got.some((m) => m.transaction === tid)};
}

function q(name) {
  return `${name}-${randomUUID().slice(0, 8)}`;
}

// states reads a transaction's per-queue states. With POPBOX_REQUIRE_AUTH on,
// reading a transaction needs provisioning rights (API.md section 0), which
// the queue token of pb does not carry: the read goes with a provision token.
let reader;
async function states(_pb, tid) {
  reader ??= new PopBox(URL_, {token: () => jwt(300, {scope: 'provision'})});
  const r = await reader.request('GET', `trans/${tid}/state`);
  return r.data;
}

test('provision, peek, pop and typed errors over fetch', {skip}, async () => {
  const pb = client();
  const queue = q('fetch');
  const tid = await pb.provision({payload: 'hello', priority: 'L', queues: [queue]});
  assert.match(tid, /^[0-9a-f-]{36}$/);
  const peeked = await pb.peek(queue);
  assert.deepEqual(peeked.map((m) => [m.data, m.transaction]), [['hello', tid]]);
  const popped = await pb.pop(queue, {timeout: 1});
  assert.deepEqual(popped.map((m) => [m.data, m.transaction, m.reliable]), [['hello', tid, false]]);
  assert.deepEqual(await pb.pop(queue, {timeout: 1}), []);

  // 400 with the gateway's error strings.
  const bad = await pb.provision({payload: 'x', priority: 'Z', queues: [queue]}).catch((e) => e);
  assert.ok(bad instanceof HTTPError, String(bad));
  assert.equal(bad.status, 400);
  assert.deepEqual(bad.errors, ['invalid priority']);
  assert.match(bad.requestId, /\S/);

  // 401 without a token (the gateway requires one), as an AuthError.
  const anon = new PopBox(URL_);
  const denied = await anon.peek(queue).catch((e) => e);
  assert.ok(denied instanceof AuthError, String(denied));
  assert.equal(denied.status, 401);

  // Nobody listening: a network failure is a ConnectionError.
  const dead = new PopBox('http://127.0.0.1:9/');
  assert.ok((await dead.peek(queue).catch((e) => e)) instanceof ConnectionError);
});

test('an aborted long poll rejects with the signal reason and takes nothing', {skip}, async () => {
  const pb = client();
  const queue = q('abort');
  const ctl = new AbortController();
  const polling = pb.pop(queue, {timeout: 30, signal: ctl.signal});
  // The gateway counts the waiting poll as a consumer: wait for it.
  await until('the poll to wait', async () => (await pb.queueInfo(queue)).blocked === true);
  ctl.abort(new Error('user gave up'));
  await assert.rejects(polling, /user gave up/);
  await until('the poll to end', async () => (await pb.queueInfo(queue)).blocked === false);
  const tid = await pb.provision({payload: 'after', queues: [queue]});
  assert.deepEqual((await pb.peek(queue)).map((m) => m.transaction), [tid]);
  // A signal aborted before the call: nothing is sent.
  await assert.rejects(pb.peek(queue, {signal: AbortSignal.abort()}), {name: 'AbortError'});
});

test('reliable pop: ack marks Delivered, a second ack is refused', {skip}, async () => {
  const pb = client();
  const queue = q('poprel');
  const tid = await pb.provision({payload: 'r', queues: [queue]});
  const [m] = await pb.pop(queue, {reliable: true, timeoutACK: 30, timeout: 1});
  assert.equal(m.transaction, tid);
  assert.equal(m.reliable, true);
  assert.deepEqual(await states(pb, tid), {[queue]: 'Blocked'});
  await m.ack();
  assert.equal(await m.ack(), undefined); // same promise again
  assert.deepEqual(await states(pb, tid), {[queue]: 'Delivered'});
  const [res] = await pb.ack(queue, [tid]);
  assert.equal(res.ok, false);
  assert.match(res.error, /does not exist/);
});

for (const transport of ['ws', 'mux']) {
  test(`${transport}: reliable subscription, ack bookkeeping`, {skip: wsSkip}, async () => {
    const pb = client();
    const queue = q(`rel-${transport}`);
    const box = inbox();
    const errors = [];
    const sub = pb.subscribe(queue, {transport, reliable: true, timeoutACK: 30, onMessage: box.onMessage, onError: (e) => errors.push(e)});
    await sub.ready();
    const t1 = await pb.provision({payload: 'one', queues: [queue]});
    const t2 = await pb.provision({payload: 'two', queues: [queue]});
    await until('two deliveries', () => box.has(t1) && box.has(t2));
    assert.deepEqual(sub.pending.sort(), [t1, t2].sort());
    assert.deepEqual(await states(pb, t1), {[queue]: 'Blocked'});
    const m1 = box.got.find((m) => m.transaction === t1);
    assert.equal(m1.queue, queue);
    assert.equal(m1.priority, 'H');
    await m1.ack();
    assert.deepEqual(sub.pending, [t2]);
    await until('the in-band ack to land', async () => (await states(pb, t1))[queue] === 'Delivered');
    await sub.ack(t2);
    assert.deepEqual(sub.pending, []);
    await until('the second ack to land', async () => (await states(pb, t2))[queue] === 'Delivered');
    // An ack the gateway refuses comes back as an AckError.
    const ghost = randomUUID();
    await sub.ack(ghost);
    await until('the refusal', () => errors.some((e) => e instanceof AckError && e.transaction === ghost));
    sub.close();
    assert.equal(sub.state, 'closed');
  });
}

test('mux: many queues on one socket, resubscribed after the socket is lost', {skip: wsSkip}, async () => {
  const {Recording, sockets} = recordingWebSocket();
  const pb = client({WebSocket: Recording});
  const qa = q('mux-a');
  const qb = q('mux-b');
  const a = inbox();
  const b = inbox();
  const seen = [];
  const sa = pb.subscribe(qa, {onMessage: a.onMessage, onStatus: (s) => seen.push(s), onError: () => {}});
  const sb = pb.subscribe(qb, {onMessage: b.onMessage, onError: () => {}});
  await Promise.all([sa.ready(), sb.ready()]);
  assert.equal(sockets.length, 1, 'one socket for both queues');
  assert.match(sockets[0].url, /\/ws\?access_token=/);
  const t1 = await pb.provision({payload: 'both', queues: [qa, qb]});
  await until('both queues to get it', () => a.has(t1) && b.has(t1));

  // The connection drops (closed under the client's feet): the client
  // reconnects with backoff and subscribes both queues again.
  sockets[0].ws.close();
  await until('a second socket', () => sockets.length === 2);
  await Promise.all([sa.ready(), sb.ready()]);
  assert.deepEqual(seen, ['connected', 'reconnecting', 'connected']);
  const t2 = await pb.provision({payload: 'again', queues: [qa, qb]});
  await until('both queues to get the next one', () => a.has(t2) && b.has(t2));

  // Unsubscribing one queue leaves the other on the same socket.
  sa.close();
  const t3 = await pb.provision({payload: 'b only', queues: [qa, qb]});
  await until('b to get it', () => b.has(t3));
  assert.ok(!a.has(t3));
  assert.deepEqual((await pb.peek(qa)).map((m) => m.transaction), [t3], 'a keeps its message');
  assert.equal(sockets.length, 2);
  pb.close();
  await until('the socket to close', () => sockets[1].ws.readyState === 3);
});

test('mux: a refused subscription fails alone', {skip: wsSkip}, async () => {
  const pb = client();
  const good = pb.subscribe(q('ok'), {onError: () => {}});
  const errs = [];
  const bad = pb.subscribe('x'.repeat(300), {onError: (e) => errs.push(e)});
  await good.ready();
  await assert.rejects(bad.ready(), /error/);
  assert.equal(bad.state, 'error');
  assert.ok(errs[0] instanceof ServerError, String(errs[0]));
  assert.match(errs[0].serverError, /invalid queue id/);
  assert.equal(good.state, 'connected');
  pb.close();
});

test('token function: called on every connect, and the connection is renewed before the token expires', {skip: wsSkip}, async () => {
  const {Recording, sockets} = recordingWebSocket();
  let calls = 0;
  const pb = new PopBox(URL_, {
    WebSocket: Recording,
    backoff: {min: 50, max: 400},
    tokenRefreshMargin: 30000,
    token: async () => {
      calls++;
      return jwt(3); // expires in 3 s: renewed after ~1.5 s
    },
  });
  const queue = q('token');
  const box = inbox();
  const sub = pb.subscribe(queue, {transport: 'ws', onMessage: box.onMessage, onError: () => {}});
  await sub.ready();
  assert.equal(calls, 1);
  await until('a renewed connection', () => sockets.length >= 2 && sub.state === 'connected');
  assert.ok(calls >= 2, `token function called ${calls} times`);
  assert.notEqual(new URL(sockets[0].url).searchParams.get('access_token'), new URL(sockets[1].url).searchParams.get('access_token'));
  const tid = await pb.provision({payload: 'still here', queues: [queue]});
  await until('the message on the renewed connection', () => box.has(tid));
  sub.close();
});

test('a token function that fails is reported and retried', {skip: wsSkip}, async () => {
  let fail = 2;
  const errs = [];
  const pb = new PopBox(URL_, {
    backoff: {min: 20, max: 50},
    token: () => {
      if (fail-- > 0) throw new Error('identity provider down');
      return jwt();
    },
  });
  const sub = pb.subscribe(q('tokfail'), {transport: 'ws', onError: (e) => errs.push(e)});
  await sub.ready();
  assert.equal(errs.length, 2);
  assert.match(errs[0].message, /identity provider down/);
  sub.close();
});
