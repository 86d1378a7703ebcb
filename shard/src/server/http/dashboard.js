// corekv dashboard (docs/http.md, "Dashboard"). Polls this node's operator
// routes and draws what they say; every figure comes from them.
//
// Throughput and latency are cumulative counters in the status (per node,
// every core summed): a rate is the difference of two polls divided by the
// difference of the node's own clock (uptime_us), so a slow poll or a
// browser that throttles timers does not bend the figures.
//
// Data from the network goes into the page as text nodes and attribute
// values only, never as markup.
'use strict';

const params = new URLSearchParams(window.location.search);
function intParam(name, lo, hi, dflt) {
  const n = Number.parseInt(params.get(name) || '', 10);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
}
const INTERVAL_MS = intParam('interval_ms', 100, 60000, 1000);
const WINDOW_MS = intParam('window_s', 10, 3600, 300) * 1000;
// Polls before the page calls itself ready: two rates per node.
const READY_AFTER = 3;
// Past this many vnodes, consecutive vnodes of one node are drawn as one arc.
const MAX_VNODE_ARCS = 8192;
const SVGNS = 'http://www.w3.org/2000/svg';
const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#5f6b7a'];

const state = {
  colors: new Map(), // node id -> colour, fixed at first sight
  prev: new Map(), // node id -> last counters
  history: new Map(), // node id -> [{t, ops, errs, p50, p99}]
  status: null,
  ring: null,
  ringKey: null,
  bounds: [],
  samples: 0,
  error: null,
};

function colorOf(id) {
  if (!state.colors.has(id)) {
    const i = state.colors.size;
    const c = i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137) % 360}, 55%, 48%)`;
    state.colors.set(id, c);
  }
  return state.colors.get(id);
}

// ---- small helpers -------------------------------------------------------

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v >= 100 || i === 0 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

function fmtNum(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  if (a >= 100 || Number.isInteger(n)) return n.toFixed(0);
  if (a >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

function fmtMs(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '–';
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
}

function clock(t) {
  const d = new Date(t);
  const p = (x) => String(x).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

// A quantile (0..1) of a latency histogram in ms: buckets per bound of
// state.bounds (microseconds), then one for the slower ones; linear inside
// a bucket. null without requests.
function quantile(buckets, q) {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total <= 0) return null;
  const target = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    if (buckets[i] <= 0) continue;
    if (seen + buckets[i] >= target) {
      const lo = i === 0 ? 0 : state.bounds[i - 1];
      const hi = i < state.bounds.length ? state.bounds[i] : state.bounds[state.bounds.length - 1];
      return (lo + (hi - lo) * ((target - seen) / buckets[i])) / 1000;
    }
    seen += buckets[i];
  }
  return state.bounds[state.bounds.length - 1] / 1000;
}

// Round numbers for an axis from 0 to at least max.
function niceScale(max) {
  if (!(max > 0)) max = 1;
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const top = Math.ceil(max / step) * step;
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  return { top, ticks };
}

// ---- data ----------------------------------------------------------------

async function getJSON(path) {
  const r = await fetch(path, { cache: 'no-store', credentials: 'same-origin' });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const why = body && typeof body.error === 'string' ? body.error : r.statusText;
    throw new Error(`${path}: ${r.status} ${why}`);
  }
  return body;
}

function record(st, now) {
  if (Array.isArray(st.latency_bounds_us)) state.bounds = st.latency_bounds_us;
  const seen = new Set();
  for (const n of st.nodes) {
    seen.add(n.id);
    colorOf(n.id);
    if (!state.history.has(n.id)) state.history.set(n.id, []);
    const h = state.history.get(n.id);
    const p = state.prev.get(n.id);
    const has = n.uptime_us !== null && n.uptime_us !== undefined && Array.isArray(n.latency_buckets);
    let point = { t: now, ops: null, errs: null, p50: null, p99: null };
    if (has && p && n.uptime_us > p.uptime_us && n.requests >= p.requests) {
      const dt = (n.uptime_us - p.uptime_us) / 1e6;
      const d = n.latency_buckets.map((b, i) => b - (p.latency_buckets[i] || 0));
      point = {
        t: now,
        ops: (n.requests - p.requests) / dt,
        errs: (n.errors - p.errors) / dt,
        p50: quantile(d, 0.5),
        p99: quantile(d, 0.99),
      };
    }
    // The first poll of a node (or after a restart or silence) has nothing
    // to difference against: it only starts the series.
    if (p || !has) h.push(point);
    if (has) state.prev.set(n.id, n);
    else state.prev.delete(n.id);
    while (h.length && h[0].t < now - WINDOW_MS) h.shift();
  }
  for (const id of [...state.history.keys()]) {
    if (!seen.has(id)) { state.history.delete(id); state.prev.delete(id); }
  }
}

async function poll() {
  try {
    const st = await getJSON('/api/v1/admin/cluster/status');
    const key = `${st.epoch}/${st.ring_changing}`;
    if (key !== state.ringKey) {
      state.ring = await getJSON('/api/v1/admin/cluster/ring');
      state.ringKey = key;
    }
    state.status = st;
    record(st, Date.now());
    state.samples += 1;
    state.error = null;
  } catch (e) {
    state.error = e && e.message ? e.message : String(e);
  }
  try {
    render();
  } catch (e) {
    state.error = `drawing failed: ${e && e.message ? e.message : e}`;
    showError();
  }
  document.body.dataset.samples = String(state.samples);
  if (state.samples >= READY_AFTER && !state.error) document.body.dataset.ready = 'true';
  window.setTimeout(poll, INTERVAL_MS);
}

// ---- drawing -------------------------------------------------------------

function render() {
  showError();
  const st = state.status;
  if (!st) return;
  const members = st.nodes.length;
  const unwell = [];
  for (const s of ['down', 'joining', 'leaving']) {
    const k = st.nodes.filter((n) => n.status === s).length;
    if (k) unwell.push(`${k} ${s}`);
  }
  const silent = st.nodes.filter((n) => !n.reachable && n.status !== 'down').length;
  if (silent) unwell.push(`${silent} not answering`);
  document.getElementById('summary').textContent = st.mode === 'single'
    ? `single node ${st.node_id} · epoch ${st.epoch}`
    : `cluster of ${members} node${members === 1 ? '' : 's'} · epoch ${st.epoch} · RF ${st.replication_factor}` +
      ` · seen by ${st.node_id}${unwell.map((u) => ` · ${u}`).join('')}` +
      `${st.ring_changing ? ' · ring changing' : ''}${st.waiting_to_join ? ' · waiting to join' : ''}`;
  document.getElementById('updated').textContent =
    `updated ${clock(Date.now())} · every ${INTERVAL_MS >= 1000 ? `${INTERVAL_MS / 1000} s` : `${INTERVAL_MS} ms`}`;
  renderNodes(st);
  renderRing();
  renderCharts();
  renderStorage(st);
}

function showError() {
  const box = document.getElementById('error');
  const live = document.getElementById('live');
  box.hidden = !state.error;
  box.textContent = state.error || '';
  live.textContent = state.error ? 'error' : state.samples ? 'live' : 'starting';
  live.className = `pill ${state.error ? 'bad' : state.samples ? 'ok' : ''}`;
}

function badge(text, cls) {
  return el('span', { class: `badge st-${cls}` }, text);
}

function lastOf(id, field) {
  const h = state.history.get(id) || [];
  for (let i = h.length - 1; i >= 0; i--) if (h[i][field] !== null) return h[i][field];
  return null;
}

function renderNodes(st) {
  const body = document.querySelector('#nodes tbody');
  clear(body);
  for (const n of st.nodes) {
    const tr = el('tr', { 'data-node': n.id, 'data-status': n.status, 'data-reachable': String(n.reachable) });
    if (n.id === st.node_id) tr.classList.add('me');
    const id = el('td', { class: 'node-id' });
    const sw = el('span', { class: 'swatch' });
    sw.style.background = colorOf(n.id);
    id.append(sw, document.createTextNode(n.id));
    const cell = (text, cls) => el('td', cls ? { class: cls } : {}, text);
    const status = el('td', { class: 'status' });
    status.append(badge(n.status, n.status));
    const reach = el('td');
    reach.append(badge(n.reachable ? 'yes' : 'no', n.reachable ? 'yes' : 'no'));
    const storage = el('td', { class: 'storage' });
    storage.append(n.storage ? badge(n.storage.replace('_', ' '), n.storage) : badge('unknown', 'unknown'));
    tr.append(
      id, status, reach, cell(n.address), cell(`${n.dc} / ${n.rack || '–'}`),
      cell(String(n.tokens), 'num'), cell(`${(n.ownership * 100).toFixed(1)}%`, 'num'), storage,
      cell(fmtNum(lastOf(n.id, 'ops')), 'num'), cell(fmtMs(lastOf(n.id, 'p99')), 'num'),
      cell(fmtBytes(n.load_bytes), 'num'), cell(fmtNum(n.keys), 'num'), cell(fmtBytes(n.memory_bytes), 'num'),
    );
    body.append(tr);
  }
}

// A token ("0x" and 16 hex digits) as a fraction of the ring; 52 bits are
// all a drawing needs and all a JavaScript number holds exactly.
function tokenFrac(t) {
  return Number.parseInt(t.slice(2, 15), 16) / 2 ** 52;
}

function arcPath(cx, cy, r0, r1, a0, a1) {
  const large = a1 - a0 > Math.PI ? 1 : 0;
  const p = (r, a) => `${(cx + r * Math.cos(a)).toFixed(2)} ${(cy + r * Math.sin(a)).toFixed(2)}`;
  return `M ${p(r1, a0)} A ${r1} ${r1} 0 ${large} 1 ${p(r1, a1)} L ${p(r0, a1)} A ${r0} ${r0} 0 ${large} 0 ${p(r0, a0)} Z`;
}

// Draws one ring as a band of arcs: vnode i owns (previous token, token],
// coloured as its node. Returns the number of arcs.
function drawBand(svg, ring, cx, cy, r0, r1, cls) {
  const vn = [];
  for (const n of ring.nodes) for (const t of n.tokens) vn.push({ f: tokenFrac(t), id: n.id });
  vn.sort((a, b) => a.f - b.f);
  if (!vn.length) return 0;
  const merge = vn.length > MAX_VNODE_ARCS;
  const g = svgEl('g', { class: cls });
  let arcs = 0;
  for (let i = 0; i < vn.length; i++) {
    const prev = i === 0 ? vn[vn.length - 1].f - 1 : vn[i - 1].f;
    let end = i;
    if (merge) while (end + 1 < vn.length && vn[end + 1].id === vn[i].id) end++;
    let a0 = prev * 2 * Math.PI - Math.PI / 2;
    let a1 = vn[end].f * 2 * Math.PI - Math.PI / 2;
    if (a1 - a0 >= 2 * Math.PI - 1e-9) a1 = a0 + 2 * Math.PI - 1e-4; // one vnode: nearly a full circle
    const path = svgEl('path', {
      class: merge ? 'vnode-run' : 'vnode',
      'data-node': vn[i].id,
      d: arcPath(cx, cy, r0, r1, a0, a1),
      fill: colorOf(vn[i].id),
      stroke: '#fff',
      'stroke-width': vn.length > 1024 ? 0 : 0.4,
    });
    g.append(path);
    arcs++;
    i = end;
  }
  svg.append(g);
  return arcs;
}

function renderRing() {
  const svg = document.getElementById('ring');
  const r = state.ring;
  clear(svg);
  if (!r) return;
  const w = svg.clientWidth || 370;
  const h = svg.clientHeight || 330;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const cx = w / 2;
  const cy = h / 2;
  const R = Math.min(w, h) / 2 - 8;
  const arcs = drawBand(svg, r.ring, cx, cy, R * 0.72, R, 'ring-current');
  let pending = 0;
  if (r.pending) pending = drawBand(svg, r.pending, cx, cy, R * 0.5, R * 0.66, 'ring-pending');
  svg.dataset.vnodes = String(r.ring.vnodes);
  svg.dataset.arcs = String(arcs);
  const lines = [`${r.ring.vnodes} vnodes`, `${r.ring.nodes.length} node${r.ring.nodes.length === 1 ? '' : 's'}`];
  if (r.pending) lines.push(`inner: pending ring (${pending})`);
  lines.forEach((line, i) => {
    svg.append(svgEl('text', {
      x: cx, y: cy + (i - (lines.length - 1) / 2) * 17 + 4, 'text-anchor': 'middle',
      'font-size': i === 0 ? 15 : 12, 'font-weight': i === 0 ? 600 : 400, fill: '#3e4c59',
    }, line));
  });
  document.getElementById('ring-note').textContent = `epoch ${r.epoch}, RF ${r.replication_factor}`;
  const legend = document.getElementById('ring-legend');
  clear(legend);
  const known = new Map((state.status ? state.status.nodes : []).map((n) => [n.id, n]));
  for (const n of r.ring.nodes) {
    const item = el('span', { 'data-node': n.id });
    const sw = el('span', { class: 'swatch' });
    sw.style.background = colorOf(n.id);
    const s = known.get(n.id);
    const share = s ? ` ${(s.ownership * 100).toFixed(1)}%` : '';
    const status = s && s.status !== 'normal' ? ` (${s.status})` : '';
    item.append(sw, document.createTextNode(`${n.id} · ${n.tokens.length} vnodes${share}${status}`));
    legend.append(item);
  }
}

function legend(box, extra) {
  clear(box);
  for (const id of state.history.keys()) {
    const item = el('span', { 'data-node': id });
    const sw = el('span', { class: 'swatch' });
    sw.style.background = colorOf(id);
    item.append(sw, document.createTextNode(id));
    box.append(item);
  }
  if (extra) box.append(el('span', { class: 'note' }, extra));
}

// A line chart of series [{id, field, dashed}] over the history, time on x.
function lineChart(svg, series, unit, fmt) {
  clear(svg);
  const w = svg.clientWidth || 460;
  const h = svg.clientHeight || 300;
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  const m = { l: 52, r: 12, t: 22, b: 26 };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  let t0 = Infinity;
  let t1 = -Infinity;
  let max = 0;
  for (const s of series) {
    for (const p of state.history.get(s.id) || []) {
      t0 = Math.min(t0, p.t);
      t1 = Math.max(t1, p.t);
      if (p[s.field] !== null) max = Math.max(max, p[s.field]);
    }
  }
  if (!(t1 > t0)) {
    svg.append(svgEl('text', { class: 'empty', x: w / 2, y: h / 2, 'text-anchor': 'middle' }, 'waiting for a second sample…'));
    return;
  }
  const { top, ticks } = niceScale(max);
  const x = (t) => m.l + ((t - t0) / (t1 - t0)) * pw;
  const y = (v) => m.t + ph - (v / top) * ph;
  const grid = svgEl('g', { class: 'grid' });
  const axis = svgEl('g', { class: 'axis' });
  for (const v of ticks) {
    grid.append(svgEl('line', { x1: m.l, x2: m.l + pw, y1: y(v), y2: y(v) }));
    axis.append(svgEl('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, v === 0 ? '0' : fmt(v)));
  }
  const span = t1 - t0;
  const xt = 5;
  for (let i = 0; i < xt; i++) {
    const t = t0 + (span * i) / (xt - 1);
    axis.append(svgEl('line', { x1: x(t), x2: x(t), y1: m.t + ph, y2: m.t + ph + 4 }));
    const label = span < 10000 ? `${((t - t1) / 1000).toFixed(1)} s` : clock(t);
    const anchor = i === 0 ? 'start' : i === xt - 1 ? 'end' : 'middle';
    axis.append(svgEl('text', { x: x(t), y: h - 8, 'text-anchor': anchor }, label));
  }
  axis.append(svgEl('path', { d: `M ${m.l} ${m.t} V ${m.t + ph} H ${m.l + pw}`, fill: 'none' }));
  axis.append(svgEl('text', { x: m.l - 6, y: 11, 'text-anchor': 'end', 'font-weight': 600 }, unit));
  svg.append(grid, axis);
  for (const s of series) {
    let d = '';
    let pen = false;
    let points = 0;
    let peak = 0;
    for (const p of state.history.get(s.id) || []) {
      const v = p[s.field];
      if (v === null || !Number.isFinite(v)) { pen = false; continue; }
      d += `${pen ? 'L' : 'M'} ${x(p.t).toFixed(1)} ${y(v).toFixed(1)} `;
      pen = true;
      points++;
      peak = Math.max(peak, v);
    }
    const attrs = {
      class: `series ${s.field}`, 'data-node': s.id, 'data-points': points, 'data-max': peak.toFixed(3),
      d: d.trim() || 'M 0 0', fill: 'none', stroke: colorOf(s.id), 'stroke-width': s.dashed ? 1.5 : 2,
      'stroke-linejoin': 'round',
    };
    if (s.dashed) attrs['stroke-dasharray'] = '5 4';
    if (!points) attrs.visibility = 'hidden';
    svg.append(svgEl('path', attrs));
  }
}

function renderCharts() {
  const ids = [...state.history.keys()];
  legend(document.getElementById('throughput-legend'));
  legend(document.getElementById('latency-legend'));
  lineChart(document.getElementById('throughput'), ids.map((id) => ({ id, field: 'ops' })), 'req/s', fmtNum);
  const lat = [];
  for (const id of ids) lat.push({ id, field: 'p99' }, { id, field: 'p50', dashed: true });
  lineChart(document.getElementById('latency'), lat, 'ms', fmtMs);
}

const METRICS = [
  ['load_bytes', 'Load (live SSTables)', fmtBytes],
  ['keys', 'Keys (estimate)', fmtNum],
  ['memory_bytes', 'Memory (resident)', fmtBytes],
  ['memtable_bytes', 'Memtables', fmtBytes],
  ['compaction_debt_bytes', 'Compaction backlog', fmtBytes],
  ['sstables', 'SSTables', fmtNum],
];

function renderStorage(st) {
  const box = document.getElementById('storage');
  clear(box);
  for (const [field, title, fmt] of METRICS) {
    const div = el('div', { class: 'metric', 'data-metric': field });
    div.append(el('h3', {}, title));
    const rowH = 20;
    const w = 400;
    const svg = svgEl('svg', { viewBox: `0 0 ${w} ${st.nodes.length * rowH}`, class: 'bars' });
    svg.style.height = `${st.nodes.length * rowH}px`;
    const values = st.nodes.map((n) => (typeof n[field] === 'number' ? n[field] : null));
    const max = Math.max(1, ...values.filter((v) => v !== null));
    const labelW = 70;
    const valueW = 80;
    st.nodes.forEach((n, i) => {
      const v = values[i];
      const y = i * rowH;
      svg.append(svgEl('text', { x: 0, y: y + 14 }, n.id));
      svg.append(svgEl('rect', { x: labelW, y: y + 3, width: w - labelW - valueW, height: rowH - 6, rx: 3, fill: '#f0f4f8' }));
      const bw = v === null ? 0 : Math.max(v > 0 ? 2 : 0, ((w - labelW - valueW) * v) / max);
      svg.append(svgEl('rect', {
        class: 'bar', 'data-node': n.id, 'data-metric': field, 'data-value': v === null ? '' : String(v),
        x: labelW, y: y + 3, width: bw.toFixed(1), height: rowH - 6, rx: 3, fill: colorOf(n.id),
      }));
      svg.append(svgEl('text', { x: w, y: y + 14, 'text-anchor': 'end' }, v === null ? 'unknown' : fmt(v)));
    });
    div.append(svg);
    box.append(div);
  }
}

poll();
