// Protocol logic without a gateway: backoff, frame parsing, tokens, URLs.
import {test} from 'node:test';
import assert from 'node:assert/strict';

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
} from '../src/protocol.js';

test('backoff grows exponentially to its cap, with jitter in [exp/2, exp]', () => {
  const o = {min: 100, max: 3000};
  const low = (a) => backoffDelay(a, {...o, random: () => 0});
  const high = (a) => backoffDelay(a, {...o, random: () => 0.999999});
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(low), [50, 100, 200, 400, 800, 1500, 1500]);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(high), [100, 200, 400, 800, 1600, 3000, 3000]);
  // Huge attempt counts neither overflow nor pass the cap.
  assert.equal(high(10_000), 3000);
  assert.equal(backoffDelay(-3, {...o, random: () => 0}), 50);
  // Real jitter: many clients at the same attempt spread out.
  const seen = new Set(Array.from({length: 50}, () => backoffDelay(4, o)));
  assert.ok(seen.size > 10, `only ${seen.size} distinct delays`);
  for (const d of seen) assert.ok(d >= 800 && d <= 1600, `delay ${d} out of [800, 1600]`);
  // Defaults: 500 ms first, 20 s cap.
  assert.equal(backoffDelay(0, {random: () => 0.999999}), 500);
  assert.equal(backoffDelay(30, {random: () => 0.999999}), 20000);
});

test('per-queue frames, SSE data and multiplexed frames parse into tagged objects', () => {
  const tid = '0b1c4f2e-6a44-4c1e-9d6b-3f0f7f9b2a10';
  const msg = JSON.stringify({data: 'hi', transaction: tid, queue: 'q1', priority: 'H'});
  assert.deepEqual(parseFrame(msg), {type: 'message', queue: 'q1', data: 'hi', transaction: tid, priority: 'H'});
  assert.deepEqual(parseEventData(msg), {type: 'message', queue: 'q1', data: 'hi', transaction: tid, priority: 'H'});
  assert.deepEqual(parseFrame(JSON.stringify({op: 'message', queue: 'a', data: '', transaction: tid, priority: 'L'})),
    {type: 'message', queue: 'a', data: '', transaction: tid, priority: 'L'});
  assert.deepEqual(parseFrame('{"op":"subscribed","queue":"a"}'), {type: 'subscribed', queue: 'a'});
  assert.deepEqual(parseFrame('{"op":"unsubscribed","queue":"a"}'), {type: 'unsubscribed', queue: 'a'});
  assert.deepEqual(parseFrame('{"op":"error","error":"unknown frame"}'), {type: 'error', queue: '', error: 'unknown frame'});
  for (const bad of ['', 'nope', '[]', 'null', '"x"', '{"op":"bogus"}', '{"data":"no transaction"}', '{"op":"message","transaction":7}']) {
    assert.equal(parseFrame(bad).type, 'unknown', bad);
    assert.equal(parseEventData(bad), null, bad);
  }
});

test('error frames name the transaction they refuse', () => {
  const tid = '0b1c4f2e-6a44-4c1e-9d6b-3f0f7f9b2a10';
  assert.equal(errorTransaction(`${tid}/q1 does not exist`), tid);
  assert.equal(errorTransaction(`${tid.toUpperCase()} is not in flight on this connection's queues`), tid);
  assert.equal(errorTransaction('too many subscriptions on one connection'), '');
  assert.equal(errorTransaction(`x${tid}/q1 does not exist`), '');
});

test('client frames are the documented JSON', () => {
  assert.deepEqual(JSON.parse(muxFrames.subscribe('q1', false, 30)), {op: 'subscribe', queue: 'q1', reliable: false});
  assert.deepEqual(JSON.parse(muxFrames.subscribe('q1', true, 30)), {op: 'subscribe', queue: 'q1', reliable: true, timeoutACK: 30});
  assert.deepEqual(JSON.parse(muxFrames.subscribe('q1', true)), {op: 'subscribe', queue: 'q1', reliable: true});
  assert.deepEqual(JSON.parse(muxFrames.unsubscribe('q1')), {op: 'unsubscribe', queue: 'q1'});
  assert.deepEqual(JSON.parse(muxFrames.ack('q1', ['a', 'b'])), {op: 'ack', queue: 'q1', transactions: ['a', 'b']});
  assert.deepEqual(JSON.parse(queueAckFrame(['a'])), {ack: ['a']});
});

test('path segments are encoded once, keeping readable sub-delimiters', () => {
  assert.equal(encodeSegment('org:q1'), 'org:q1');
  assert.equal(encodeSegment('a b/c?d#e%'), 'a%20b%2Fc%3Fd%23e%25');
  assert.equal(encodeSegment('é'), '%C3%A9');
  for (const bad of ['', '.', '..']) assert.throws(() => encodeSegment(bad), TypeError);
  assert.equal(orgPath(''), '');
  assert.equal(orgPath('acme'), 'org/acme/');
});

test('transport URLs keep the base path, switch to ws(s) and drop empty parameters', () => {
  assert.equal(transportURL('http://h:1/', 'queue/q/ws', {reliable: 1, timeoutACK: undefined, access_token: 'a b'}, true),
    'ws://h:1/queue/q/ws?reliable=1&access_token=a+b');
  assert.equal(transportURL('https://h/prefix/', 'org/o/ws', {}, true), 'wss://h/prefix/org/o/ws');
  assert.equal(transportURL('https://h/prefix/', 'queue/q/events', {reliable: false}), 'https://h/prefix/queue/q/events');
});

test('token expiry comes from the JWT exp claim, unverified', () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const jwt = (claims) => `${b64({alg: 'HS256', typ: 'JWT'})}.${b64(claims)}.sig`;
  assert.equal(tokenExpiry(jwt({exp: 1700000000, sub: 'ü'})), 1700000000 * 1000);
  assert.equal(tokenExpiry(jwt({sub: 'x'})), 0);
  assert.equal(tokenExpiry(jwt({exp: 'soon'})), 0);
  assert.equal(tokenExpiry('opaque-token'), 0);
  assert.equal(tokenExpiry('a.%%%.c'), 0);
  assert.equal(tokenExpiry(''), 0);
});
