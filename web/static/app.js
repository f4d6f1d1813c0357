// PopBox dashboard. Vanilla JS, no dependencies but the PopBox JavaScript
// client (clients/js, served at js/popbox.js), which does all the streaming:
// the page holds no protocol code of its own.
//
// Rules kept here on purpose:
//   - server data reaches the page only through textContent / attributes set
//     with setAttribute on elements we create (never HTML strings);
//   - every URL is relative to the page: the API root is the parent of the
//     directory this page is served from (/ui/ -> /), so the dashboard works
//     on any host, port and scheme, and behind a path prefix.
'use strict';

import {PopBox, encodeSegment} from './js/popbox.js';

(function () {
  const API = new URL('../', location.href);
  const REFRESH_MS = 2000;
  const FETCH_TIMEOUT_MS = 10000;
  const MAX_SUB_MESSAGES = 200;
  const MAX_SHOWN_CHARS = 4096;
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const TOKEN_KEY = 'popbox.token';

  const $ = (id) => document.getElementById(id);

  // ---------- small DOM helpers (text only) ----------

  // h('a', {href: '#x', class: 'y'}, 'text', childNode, ...)
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v !== undefined && v !== null && v !== false) e.setAttribute(k, String(v));
      }
    }
    for (const c of children) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  function setText(id, v) {
    $(id).textContent = v === undefined || v === null || v === '' ? '–' : String(v);
  }

  function setStatus(el, state, text) {
    el.dataset.state = state;
    el.textContent = text;
  }

  function clip(s) {
    s = String(s);
    if (s.length <= MAX_SHOWN_CHARS) return s;
    return s.slice(0, MAX_SHOWN_CHARS) + '… (' + (s.length - MAX_SHOWN_CHARS) + ' more characters)';
  }

  function muted(tag, text) {
    return h(tag, {class: 'muted'}, text);
  }

  // note shows text, styled by cls ('muted' or 'bad'), in a card's status line.
  function note(el, cls, text) {
    el.hidden = false;
    el.className = cls;
    el.textContent = text;
  }

  // ---------- URLs ----------

  // enc percent-encodes one path segment (the client's rule: sub-delimiters
  // stay readable; "." and ".." are refused).
  const enc = encodeSegment;

  function orgPrefix(org) {
    return org ? 'org/' + enc(org) + '/' : '';
  }

  function apiURL(path) {
    return new URL(path, API);
  }

  function token() {
    return $('auth-token').value.trim();
  }

  function queueHash(id, org) {
    const p = new URLSearchParams({q: id});
    if (org) p.set('org', org);
    return '#' + p.toString();
  }

  function transHash(tid) {
    return '#' + new URLSearchParams({t: tid}).toString();
  }

  // ---------- fetch ----------

  async function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({Accept: 'application/json'}, opts.headers || {});
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), opts.timeout || FETCH_TIMEOUT_MS);
    try {
      const res = await fetch(apiURL(path), {
        method: opts.method || 'GET',
        headers: headers,
        body: opts.body,
        signal: ctl.signal,
        credentials: 'same-origin',
        cache: 'no-store',
      });
      const text = await res.text();
      let body = text;
      const ct = res.headers.get('Content-Type') || '';
      if (ct.includes('json') || /^\s*[{[]/.test(text)) {
        try { body = JSON.parse(text); } catch (e) { /* keep the text */ }
      }
      return {status: res.status, ok: res.ok, body: body};
    } catch (e) {
      if (e.name === 'AbortError') throw new Error('request timed out');
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  // errorsOf turns an error answer into a list of strings.
  function errorsOf(r) {
    const b = r.body;
    if (r.status === 0) return [String(b)]; // network error or bad input, no answer
    if (b && typeof b === 'object' && Array.isArray(b.errors)) return b.errors.map(String);
    if (b && typeof b === 'object' && b.error) return [String(b.error)];
    if (typeof b === 'string' && b.trim()) return ['HTTP ' + r.status + ': ' + b.trim().slice(0, 300)];
    return ['HTTP ' + r.status];
  }

  // ---------- formatting ----------

  function fmtDuration(s) {
    s = Math.max(0, Math.floor(Number(s) || 0));
    const d = Math.floor(s / 86400), hh = Math.floor(s % 86400 / 3600);
    const m = Math.floor(s % 3600 / 60), sec = s % 60;
    const parts = [];
    if (d) parts.push(d + 'd');
    if (d || hh) parts.push(hh + 'h');
    if (d || hh || m) parts.push(m + 'm');
    parts.push(sec + 's');
    return parts.join(' ');
  }

  function fmtBytes(n) {
    n = Number(n);
    if (!isFinite(n) || n < 0) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + units[i];
  }

  function fmtNum(n) {
    return typeof n === 'number' && isFinite(n) ? String(n) : '–';
  }

  // fmtLocal is a time in the browser's time zone and locale.
  function fmtLocal(d) {
    return d.toLocaleString();
  }

  // timeEl renders a time (Date) as <time> in local time, with how long
  // ago, and the exact UTC time in datetime and title.
  function timeEl(d) {
    if (!(d instanceof Date) || isNaN(d)) return h('span', null, '–');
    const ago = Math.round((Date.now() - d.getTime()) / 1000);
    return h('time', {datetime: d.toISOString(), title: d.toISOString()},
      fmtLocal(d) + (ago >= 0 ? ' (' + fmtDuration(ago) + ' ago)' : ''));
  }

  function fromUnix(s) {
    const n = Number(s);
    return s === '' || s === null || s === undefined || !isFinite(n) ? null : new Date(n * 1000);
  }

  // ---------- node overview ----------

  let prevCounters = null;
  let nodeTimer = 0;
  let nodeBusy = false;

  function renderNode(d) {
    setText('node-name', d.name);
    setText('node-version', d.version);
    setText('node-id', d.node);
    $('node-started').replaceChildren(d.startedAt ? timeEl(new Date(d.startedAt)) : '–');
    setText('node-uptime', d.uptimeSeconds === undefined ? '' : fmtDuration(d.uptimeSeconds));

    const c = d.connections || {};
    for (const k of ['longpoll', 'stream', 'sse', 'ws', 'wsmux']) setText('conn-' + k, fmtNum(c[k]));

    const m = d.messages || {};
    setText('msg-provisioned', fmtNum(m.provisioned));
    setText('msg-delivered', fmtNum(m.delivered));
    setText('msg-expired', fmtNum(m.expired));
    const now = performance.now();
    const cur = {t: now, node: d.node, p: Number(m.provisioned), d: Number(m.delivered)};
    if (prevCounters && prevCounters.node === cur.node && cur.p >= prevCounters.p && cur.d >= prevCounters.d) {
      const dt = (now - prevCounters.t) / 1000;
      if (dt > 0) {
        setText('msg-in-rate', ((cur.p - prevCounters.p) / dt).toFixed(1));
        setText('msg-out-rate', ((cur.d - prevCounters.d) / dt).toFixed(1));
      }
    }
    // A different node (load balancer) or a counter reset starts over.
    prevCounters = isFinite(cur.p) && isFinite(cur.d) ? cur : null;

    const r = d.redis || {};
    setText('redis-mode', r.mode);
    const rows = (Array.isArray(r.nodes) ? r.nodes : []).map((n) => h('tr', null,
      h('td', null, h('code', null, n.addr || '')),
      h('td', null, n.role || ''),
      h('td', null, h('span', {class: 'badge ' + (n.reachable ? 'ok' : 'bad')}, n.reachable ? 'yes' : 'no')),
      h('td', null, n.version || ''),
      h('td', null, n.usedMemory === undefined ? '' : fmtBytes(n.usedMemory)),
      h('td', {class: n.error ? 'bad' : ''}, n.error || '')));
    if (!rows.length) rows.push(h('tr', null, h('td', {colspan: 6, class: 'muted'}, 'no Redis nodes reported')));
    $('redis-nodes').replaceChildren(...rows);
  }

  async function refreshNode() {
    clearTimeout(nodeTimer);
    if (document.hidden || nodeBusy) return; // resumed by visibilitychange / the running call
    nodeBusy = true;
    const st = $('node-status');
    try {
      const r = await api('', {timeout: 5000});
      if (!r.ok || !r.body || typeof r.body !== 'object') throw new Error(errorsOf(r).join('; '));
      renderNode(r.body);
      await refreshNodeQueues();
      setStatus(st, 'ok', 'live · ' + new Date().toLocaleTimeString());
    } catch (e) {
      setStatus(st, 'error', 'unreachable: ' + e.message);
      prevCounters = null;
    } finally {
      nodeBusy = false;
    }
    clearTimeout(nodeTimer);
    nodeTimer = setTimeout(refreshNode, REFRESH_MS);
  }

  // The queues this node serves consumers of (GET node/queues). Admin only
  // when the gateway has an administrator: after a 401 the page stops
  // asking (the browser would prompt for credentials every refresh).
  let nodeQueuesDenied = false;

  async function refreshNodeQueues() {
    const body = $('node-queues');
    if (nodeQueuesDenied) return;
    let r;
    try {
      r = await api('node/queues', {timeout: 5000});
    } catch (e) {
      r = {status: 0, ok: false, body: e.message};
    }
    const row = (cls, text) => h('tr', null, h('td', {colspan: 3, class: cls}, text));
    if (r.status === 401 || r.status === 403) {
      nodeQueuesDenied = true;
      body.replaceChildren(row('muted', 'needs the administrator\'s credentials'));
      return;
    }
    if (!r.ok || !r.body || !Array.isArray(r.body.queues)) {
      body.replaceChildren(row('bad', errorsOf(r).join('; ')));
      return;
    }
    const rows = r.body.queues.map((q) => h('tr', {'data-queue': q.queue, 'data-org': q.org || ''},
      h('td', null, q.secure ? h('code', null, q.queue) : h('a', {href: queueHash(q.queue, q.org || '')}, h('code', null, q.queue)),
        q.secure ? h('span', {class: 'badge'}, 'secure') : ''),
      h('td', null, q.org || ''),
      h('td', {class: 'waiters'}, fmtNum(q.waiters))));
    if (r.body.truncated) rows.push(row('muted', 'more queues not shown'));
    body.replaceChildren(...(rows.length ? rows : [row('muted', 'no consumers waiting on this node')]));
  }

  // ---------- queue inspector ----------

  let currentQueue = null;
  let queueSeq = 0;

  function entryList(id, entries) {
    const items = (Array.isArray(entries) ? entries : []).map((e) =>
      h('li', {'data-transaction': e.id}, h('a', {href: transHash(e.id)}, h('code', null, e.id))));
    $(id).replaceChildren(...(items.length ? items : [muted('li', 'empty')]));
  }

  function clearQueue() {
    for (const id of ['queue-size', 'queue-blocked', 'queue-lastpop']) setText(id, '');
    $('queue-high').replaceChildren();
    $('queue-low').replaceChildren();
    $('queue-peek-list').replaceChildren();
  }

  async function showQueue(id, org) {
    currentQueue = {id: id, org: org || ''};
    const seq = ++queueSeq;
    $('queue-title').replaceChildren('Queue ', h('code', null, id), org ? h('span', {class: 'muted'}, ' (org ' + org + ')') : '');
    $('queue-refresh').disabled = false;
    $('queue-peek').disabled = false;
    const err = $('queue-error');
    note(err, 'muted', 'loading…');
    clearQueue();
    let r;
    try {
      r = await api(orgPrefix(org) + 'queue/' + enc(id));
    } catch (e) {
      r = {status: 0, ok: false, body: e.message};
    }
    if (seq !== queueSeq) return;
    if (!r.ok || !r.body || typeof r.body !== 'object') {
      note(err, 'bad', errorsOf(r).join('; '));
      return;
    }
    err.hidden = true;
    const b = r.body;
    setText('queue-size', fmtNum(b.size));
    $('queue-blocked').replaceChildren(b.blocked
      ? h('span', {class: 'badge warn'}, 'yes: a consumer is waiting')
      : h('span', {class: 'badge'}, 'no'));
    if (b.lastPop === undefined || b.lastPop === null || b.lastPop === '') {
      $('queue-lastpop').replaceChildren(muted('span', 'never'));
    } else {
      $('queue-lastpop').replaceChildren(timeEl(fromUnix(b.lastPop)));
    }
    entryList('queue-high', b.high);
    entryList('queue-low', b.low);
  }

  async function peekQueue() {
    if (!currentQueue) return;
    const q = currentQueue;
    const seq = queueSeq;
    const list = $('queue-peek-list');
    list.replaceChildren(muted('li', 'peeking…'));
    let r;
    try {
      r = await api(orgPrefix(q.org) + 'queue/' + enc(q.id) + '/peek?max=20');
    } catch (e) {
      r = {status: 0, ok: false, body: e.message};
    }
    if (seq !== queueSeq) return;
    if (!r.ok || !r.body || typeof r.body !== 'object') {
      list.replaceChildren(h('li', {class: 'bad'}, errorsOf(r).join('; ')));
      return;
    }
    const data = Array.isArray(r.body.data) ? r.body.data : [];
    const tids = Array.isArray(r.body.transactions) ? r.body.transactions : [];
    const items = data.map((p, i) => h('li', {'data-transaction': tids[i]},
      h('div', {class: 'meta'}, tids[i] ? h('a', {href: transHash(tids[i])}, h('code', null, tids[i])) : ''),
      h('pre', {class: 'payload'}, clip(p))));
    list.replaceChildren(...(items.length ? items : [muted('li', 'no messages')]));
  }

  // ---------- transaction view ----------

  let currentTrans = null;
  let transSeq = 0;

  // queueLink turns the href the server gave for a queue
  // (http://host[/org/o]/queue/q) into a dashboard link keeping the org.
  function queueLink(name, href) {
    let org = '';
    let id = name;
    try {
      const u = new URL(href, API);
      const m = /\/(?:org\/([^/]+)\/)?queue\/([^/]+)$/.exec(u.pathname);
      if (m) {
        org = m[1] ? decodeURIComponent(m[1]) : '';
        id = decodeURIComponent(m[2]);
      }
    } catch (e) { /* no usable href */ }
    return h('a', {href: queueHash(id, org)}, h('code', null, name));
  }

  function renderHistory(r) {
    const list = $('trans-history');
    if (r.status === 503) {
      list.replaceChildren(muted('li', 'history not enabled'));
      return;
    }
    if (!r.ok || !r.body || typeof r.body !== 'object') {
      list.replaceChildren(muted('li', 'history unavailable: ' + errorsOf(r).join('; ')));
      return;
    }
    const events = Array.isArray(r.body.data) ? r.body.data : [];
    const known = new Set(['time', 'kind', 'state', 'action', 'queue', 'node', 'transaction']);
    const items = events.map((ev) => {
      ev = ev && typeof ev === 'object' ? ev : {value: ev};
      const extra = Object.keys(ev).filter((k) => !known.has(k) && ev[k] !== '' && ev[k] !== null)
        .map((k) => k + '=' + (typeof ev[k] === 'object' ? JSON.stringify(ev[k]) : ev[k]));
      const label = ev.state || ev.action || ev.kind || 'event';
      const when = ev.time ? new Date(ev.time) : null;
      return h('li', null,
        when && !isNaN(when)
          ? h('time', {datetime: ev.time, title: ev.time}, when.toLocaleDateString() + ' ' + when.toLocaleTimeString() + '.' + String(when.getMilliseconds()).padStart(3, '0'))
          : h('time', null, ev.time || ''),
        h('span', {class: 'badge state-' + String(label).replace(/[^A-Za-z]/g, '')}, label),
        ev.kind ? h('span', {class: 'muted'}, ' ' + ev.kind) : '',
        ev.queue ? h('span', null, ' queue ', h('code', null, ev.queue)) : '',
        ev.node ? h('span', {class: 'muted'}, ' on ' + ev.node) : '',
        extra.length ? h('div', {class: 'muted mono'}, extra.join(' ')) : '');
    });
    list.replaceChildren(...(items.length ? items : [muted('li', 'no events')]));
  }

  function clearTrans() {
    for (const id of ['trans-meta', 'trans-queues', 'trans-summary', 'trans-history']) $(id).replaceChildren();
  }

  async function showTrans(tid) {
    tid = tid.toLowerCase();
    currentTrans = tid;
    const seq = ++transSeq;
    $('trans-title').replaceChildren('Transaction ', h('code', null, tid));
    $('trans-refresh').disabled = false;
    const err = $('trans-error');
    note(err, 'muted', 'loading…');
    clearTrans();
    const call = (suffix) => {
      try {
        return api('trans/' + enc(tid) + suffix).catch((e) => ({status: 0, ok: false, body: e.message}));
      } catch (e) {
        return Promise.resolve({status: 0, ok: false, body: e.message});
      }
    };
    const [main, sum, hist] = await Promise.all([call('?queues=All'), call('/state/summary'), call('/history')]);
    if (seq !== transSeq) return;

    if (!main.ok || !main.body || typeof main.body !== 'object') {
      note(err, 'bad', errorsOf(main).join('; '));
      return;
    }
    const b = main.body;
    const queues = b.queues && typeof b.queues === 'object' ? b.queues : {};
    const metaKeys = Object.keys(b).filter((k) => k !== 'queues').sort();
    if (!metaKeys.length && !Object.keys(queues).length) {
      err.textContent = 'Unknown or expired transaction.';
      return;
    }
    err.hidden = true;

    const meta = [];
    for (const k of metaKeys) {
      const v = typeof b[k] === 'object' ? JSON.stringify(b[k]) : String(b[k]);
      const date = /Date$/.test(k) && /^\d{1,10}$/.test(v) ? fromUnix(v) : null;
      const dd = k === 'payload' ? h('dd', null, h('pre', {class: 'payload'}, clip(v)))
        : date ? h('dd', null, h('code', null, v), ' ', timeEl(date)) : h('dd', null, h('code', null, v));
      meta.push(h('dt', null, k), dd);
    }
    $('trans-meta').replaceChildren(...meta);

    const names = Object.keys(queues).sort();
    const rows = names.map((q) => {
      const st = queues[q] && typeof queues[q] === 'object' ? queues[q] : {state: queues[q]};
      return h('tr', {'data-queue': q},
        h('td', null, queueLink(q, st.href)),
        h('td', null, h('span', {class: 'badge state-' + String(st.state || '').replace(/[^A-Za-z]/g, '')}, st.state || '')));
    });
    $('trans-queues').replaceChildren(...(rows.length ? rows : [h('tr', null, h('td', {colspan: 2, class: 'muted'}, 'no queues'))]));

    if (sum.ok && sum.body && typeof sum.body.data === 'object' && sum.body.data) {
      const items = [];
      for (const k of Object.keys(sum.body.data).sort()) items.push(h('dt', null, k), h('dd', null, String(sum.body.data[k])));
      $('trans-summary').replaceChildren(...items);
    } else {
      $('trans-summary').replaceChildren(h('dt', null, 'summary'), h('dd', {class: 'muted'}, errorsOf(sum).join('; ')));
    }

    renderHistory(hist);
  }

  // ---------- search and deep links ----------

  function scrollTo(id) {
    const e = $(id);
    if (e && e.scrollIntoView) e.scrollIntoView({block: 'start'});
  }

  function route() {
    const p = new URLSearchParams(location.hash.slice(1));
    // A deep link fills the search box, as if it had been typed there.
    if (p.get('t')) {
      $('search-input').value = p.get('t');
      $('search-org').value = '';
      showTrans(p.get('t'));
      scrollTo('trans-view');
    } else if (p.get('q')) {
      $('search-input').value = p.get('q');
      $('search-org').value = p.get('org') || '';
      showQueue(p.get('q'), p.get('org') || '');
      scrollTo('queue-view');
    }
  }

  function go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash; // hashchange -> route
  }

  function onSearch(ev) {
    ev.preventDefault();
    const q = $('search-input').value.trim();
    if (!q) return;
    if (UUID_RE.test(q)) go(transHash(q.toLowerCase()));
    else go(queueHash(q, $('search-org').value.trim()));
  }

  // ---------- provisioning ----------

  function splitList(s) {
    return s.split(',').map((x) => x.trim()).filter(Boolean);
  }

  async function onProvision(ev) {
    ev.preventDefault();
    const out = $('prov-result');
    const btn = $('prov-submit');
    const body = {payload: $('prov-payload').value, priority: $('prov-priority').value};
    const queues = splitList($('prov-queues').value);
    const groups = splitList($('prov-groups').value);
    if (queues.length) body.queue = queues.map((id) => ({id: id}));
    if (groups.length) body.groups = groups;
    const delay = $('prov-expiration-delay').value.trim();
    if (delay !== '') body.expirationDelay = Number(delay);
    btn.disabled = true;
    out.replaceChildren(muted('span', 'sending…'));
    try {
      const r = await api(orgPrefix($('prov-org').value.trim()) + 'trans', {
        method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify(body),
      });
      if (r.ok && r.body && typeof r.body.data === 'string') {
        const tid = r.body.data;
        out.replaceChildren('Provisioned transaction ', h('a', {id: 'prov-tid', href: transHash(tid)}, tid));
      } else {
        out.replaceChildren(h('ul', {class: 'errors'}, ...errorsOf(r).map((e) => h('li', null, e))));
      }
    } catch (e) {
      out.replaceChildren(h('ul', {class: 'errors'}, h('li', null, e.message)));
    } finally {
      btn.disabled = false;
    }
  }

  // ---------- live subscriber ----------

  let sub = null; // {close: fn}
  let subCount = 0;

  function subStatus(state, text) {
    setStatus($('sub-status'), state, text || state);
  }

  function addMessage(m) {
    const tid = m.transaction || '';
    const li = h('li', {'data-transaction': tid},
      h('div', {class: 'meta'},
        h('time', {class: 'muted'}, new Date().toLocaleTimeString()),
        m.priority ? h('span', {class: 'badge prio-' + (m.priority === 'H' ? 'H' : 'L')}, m.priority) : '',
        tid ? h('a', {href: transHash(tid)}, h('code', null, tid)) : '',
        m.queue ? h('span', {class: 'muted'}, 'queue ', h('code', null, m.queue)) : ''),
      h('pre', {class: 'payload'}, clip(m.data)));
    const list = $('sub-messages');
    list.prepend(li);
    while (list.children.length > MAX_SUB_MESSAGES) list.lastElementChild.remove();
    subCount++;
    $('sub-count').textContent = String(subCount);
  }

  function setSubButtons(running) {
    $('sub-start').disabled = running;
    $('sub-stop').disabled = !running;
  }

  function stopSub(state, text) {
    if (sub) {
      const s = sub;
      sub = null;
      s.close();
    }
    setSubButtons(false);
    subStatus(state || 'idle', text || 'stopped');
  }

  const TRANSPORT_NAMES = {sse: 'SSE', ws: 'WebSocket', mux: 'multiplexed WebSocket'};

  // startSub subscribes with the PopBox client, which reconnects with
  // backoff (asking for the token of the Settings again each time).
  function startSub(queue, org, transport) {
    const client = new PopBox(API.href, {org: org, token: () => token()});
    let lastError = '';
    const me = {close: () => client.close()};
    client.subscribe(queue, {
      transport: transport,
      onMessage: (m) => { if (sub === me) addMessage(m); },
      onError: (e) => { lastError = e.message; },
      onStatus: (state) => {
        if (sub !== me) return;
        if (state === 'connected') subStatus('connected', 'connected (' + TRANSPORT_NAMES[transport] + ')');
        else if (state === 'reconnecting') subStatus('reconnecting', 'reconnecting…' + (lastError ? ' (' + lastError + ')' : ''));
        else if (state === 'error') stopSub('error', lastError || 'refused');
      },
    });
    return me;
  }

  function onSubStart(ev) {
    ev.preventDefault();
    const q = $('sub-queue').value.trim();
    if (!q) { subStatus('error', 'enter a queue id'); return; }
    stopSub();
    subStatus('connecting', 'connecting…');
    setSubButtons(true);
    const transport = TRANSPORT_NAMES[$('sub-transport').value] ? $('sub-transport').value : 'sse';
    try {
      sub = startSub(q, $('sub-org').value.trim(), transport);
    } catch (e) {
      stopSub('error', e.message);
    }
  }

  // ---------- wiring ----------

  function init() {
    const tok = $('auth-token');
    try { tok.value = sessionStorage.getItem(TOKEN_KEY) || ''; } catch (e) { /* storage disabled */ }
    tok.addEventListener('change', () => {
      try { sessionStorage.setItem(TOKEN_KEY, tok.value.trim()); } catch (e) { /* storage disabled */ }
    });

    $('search-form').addEventListener('submit', onSearch);
    $('queue-refresh').addEventListener('click', () => { if (currentQueue) showQueue(currentQueue.id, currentQueue.org); });
    $('queue-peek').addEventListener('click', peekQueue);
    $('trans-refresh').addEventListener('click', () => { if (currentTrans) showTrans(currentTrans); });
    $('prov-form').addEventListener('submit', onProvision);
    $('sub-form').addEventListener('submit', onSubStart);
    $('sub-stop').addEventListener('click', () => stopSub());
    $('sub-clear').addEventListener('click', () => {
      $('sub-messages').replaceChildren();
      subCount = 0;
      $('sub-count').textContent = '0';
    });
    window.addEventListener('hashchange', route);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshNode(); });
    window.addEventListener('pagehide', () => { if (sub) stopSub(); });

    refreshNode();
    route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
}());
