// Ben's dashboard: one page, four views, fed by the API and its live
// stream. Every text goes in through textContent (never HTML).
import './style.css';
import { blocked, count, deployChanges, duration, rate, short, sparkPath, timelineRows } from './format.js';

const main = document.getElementById('main');
const live = document.getElementById('live');

const state = {
  overview: null,
  series: [],
  deploy: null,
  deployLog: [],
  view: 'overview',
};

/** An element: h('div', {class: 'x', 'data-testid': 't'}, child, 'text', …). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces what `main` shows (null and undefined parts are left out). */
function show(...parts) {
  main.replaceChildren(...parts.flat().filter((p) => p !== null && p !== undefined));
}

class Unauthorized extends Error {}

async function api(path) {
  const r = await fetch(path, { credentials: 'same-origin' });
  if (r.status === 401) throw new Unauthorized((await r.json()).error);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
  return body;
}

function loginNeeded(message) {
  show(
    h('section', { class: 'card wide', 'data-testid': 'login-needed' },
      h('h2', {}, 'Log in'),
      h('p', {}, 'Open the one-time link `ben up` printed, or run ', h('code', {}, 'benctl dashboard'), ' for a new one.'),
      h('p', { class: 'muted' }, message)));
}

function failed(e) {
  if (e instanceof Unauthorized) return loginNeeded(e.message);
  show(h('section', { class: 'card wide error', 'data-testid': 'error' }, String(e.message || e)));
}

function table(cols, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, cols.map((c) => h('th', {}, c[0])))),
    h('tbody', {}, rows.map((r) => h('tr', r.__attrs || {}, cols.map((c) => h('td', {}, c[1](r)))))));
}

function card(label, value, sub, testid) {
  return h('div', { class: 'card' },
    h('div', { class: 'label' }, label),
    h('div', { class: 'value', 'data-testid': testid }, value),
    sub ? h('div', { class: 'sub' }, sub) : null);
}

function chart(title, points, key, fmt, testid) {
  const w = 320;
  const hgt = 60;
  const vals = points.map((p) => p[key]);
  const svgNS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(svgNS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${hgt}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const path = document.createElementNS(svgNS, 'path');
  path.setAttribute('d', sparkPath(vals, w, hgt));
  svg.append(path);
  const last = vals.length ? vals[vals.length - 1] : 0;
  return h('div', { class: 'card chart', 'data-testid': testid },
    h('div', { class: 'label' }, `${title} — ${fmt(last)} now, ${vals.length} s shown`), svg);
}

function renderOverview() {
  const o = state.overview;
  if (!o) return show(h('p', { class: 'muted' }, 'loading…'));
  const acks = o.chain.acks || {};
  const fb = o.feedback || {};
  const dl = Number(o.dead_letters?.total || 0);
  const deploy = o.intent.deploy;
  show(
    h('section', { class: 'grid' },
      card('Records', rate(o.records.per_s), `${count(o.records.total)} in all`, 'records-total'),
      card('Flags', rate(o.flags.per_s), `${count(o.flags.total)} in all`, 'flags-total'),
      card('Signals', count(o.signals.total), rate(o.signals.per_s), 'signals-total'),
      card('Anomalies committed', count(o.chain.anomalies), `threshold ${fb.threshold !== undefined ? Number(fb.threshold).toFixed(2) : '–'}`, 'anomalies-total'),
      card('Chain height', count(o.chain.height), `${(o.chain.validators || []).length} validators${o.chain.forks.length ? `, FORKS at ${o.chain.forks.join(', ')}` : ''}`, 'chain-height'),
      card('Policies', count(o.chain.policies), `${count(acks.applied || 0)} applied, ${count(acks.failed || 0)} failed`, 'policies-total'),
      card('Blocked now', count(o.enforcement.blocked), o.enforcement.breaker_open ? 'circuit breaker OPEN' : 'breaker closed', 'blocked-now'),
      card('Intent', short(o.intent.active || 'none', 16), deploy ? `${deploy.version} ${deploy.phase}` : 'no deploy yet', 'intent-active'),
      card('Dead letters', count(dl), `${count(o.publish_errors)} publish errors`, 'dead-letters')),
    h('section', { class: 'grid charts' },
      chart('Records/s', state.series, 'records_per_s', rate, 'chart-records'),
      chart('Flags/s', state.series, 'flags_per_s', rate, 'chart-flags'),
      chart('Anomalies committed', state.series, 'anomalies', count, 'chart-anomalies')),
    h('section', { class: 'card wide' },
      h('h2', {}, 'Components'),
      table([
        ['id', (c) => c.id], ['role', (c) => c.role],
        ['health', (c) => h('span', { class: `pill ${c.health}` }, c.health)],
        ['heartbeat', (c) => `${duration(c.heartbeat_age_ms)} ago`],
        ['intent', (c) => short(c.intent, 16)], ['processed', (c) => count(c.processed)],
        ['queue', (c) => count(c.queue_depth)], ['publish errors', (c) => count(c.publish_errors)],
      ], o.components || [], { 'data-testid': 'components' })),
    h('section', { class: 'card wide' },
      h('h2', {}, 'Validators'),
      table([
        ['id', (v) => v.id], ['height', (v) => count(v.height)], ['round', (v) => count(v.round)],
        ['lag', (v) => count(v.lag)], ['proposed', (v) => count(v.proposed)], ['voted', (v) => count(v.voted)],
      ], o.chain.validators || [])),
    fb.error ? h('p', { class: 'muted' }, `AI service: ${fb.error}`) : null,
    h('p', { class: 'muted', 'data-testid': 'updated' }, `updated ${new Date(o.at_ms).toLocaleTimeString()}`));
}

async function renderSecurity() {
  const { anomalies } = await api('/api/dashboard/anomalies?limit=100');
  const rows = blocked(anomalies);
  const others = anomalies.length - rows.length;
  show(
    h('section', { class: 'card wide' },
      h('h2', {}, 'Blocked attackers'),
      h('p', { class: 'muted' }, 'Committed anomalies that became a policy, newest first; open one for its way from the flows to the agents.'),
      rows.length === 0 ? h('p', { 'data-testid': 'no-anomalies' }, 'Nothing blocked yet.') :
        table([
          ['attacker', (r) => h('a', { href: `#/security/${encodeURIComponent(r.id)}`, 'data-testid': 'attacker' }, r.targets.join(', '))],
          ['action', (r) => r.actions.join(', ')],
          ['height', (r) => count(r.height)],
          ['agents', (r) => `${r.applied} applied${r.failed ? `, ${r.failed} failed` : ''}`],
          ['anomaly', (r) => short(r.id, 16)],
        ], rows, { 'data-testid': 'blocked' }),
      others > 0 ? h('p', { class: 'muted' }, `${others} committed anomalies made no policy.`) : null));
}

async function renderTimeline(id) {
  const a = await api(`/api/dashboard/anomalies/${encodeURIComponent(id)}`);
  const rows = timelineRows(a.timeline);
  const life = a.lifecycle || {};
  show(
    h('section', { class: 'card wide' },
      h('p', {}, h('a', { href: '#/security' }, '← blocked attackers')),
      h('h2', {}, `Anomaly ${short(a.id, 24)}`),
      h('p', { class: 'muted' }, life.class ? `${life.class}, confidence ${Number(life.confidence).toFixed(2)}, ${life.state}` : (a.lifecycle_error || '')),
      h('ol', { class: 'timeline', 'data-testid': 'timeline' },
        rows.map((r) => h('li', { 'data-step': r.step },
          h('span', { class: 'step' }, r.step),
          h('span', { class: 'plus' }, `+${r.plus}`),
          h('span', { class: 'detail' }, r.detail))))));
}

function deployTable(d) {
  const since = (ns) => (ns && d.started_ns ? `+${duration((ns - d.started_ns) / 1e6)}` : '');
  const rows = ((d && d.components) || []).slice().sort((a, b) => (a.active_ns || Infinity) - (b.active_ns || Infinity));
  return table([
    ['component', (c) => c.id], ['role', (c) => c.role],
    ['state', (c) => h('span', { class: `pill ${c.state}`, 'data-component': c.id }, c.state)],
    ['prepared', (c) => h('span', { 'data-prepared': c.id }, since(c.prepared_ns))],
    ['active', (c) => h('span', { 'data-active': c.id }, since(c.active_ns))],
    ['reason', (c) => c.reason || ''],
  ], rows, { 'data-testid': 'deploy-components' });
}

async function renderIntent() {
  const i = await api('/api/dashboard/intent');
  const d = state.deploy?.deploy ?? i.status.deploy;
  show(
    h('section', { class: 'card wide' },
      h('h2', {}, 'Deploy'),
      h('p', { 'data-testid': 'deploy-phase' }, d ? `${d.version}: ${d.phase}${d.reason ? ` (${d.reason})` : ''}` : 'no deploy yet'),
      h('p', { class: 'muted' }, `active: ${state.deploy?.active ?? i.status.active ?? 'none'}`),
      h('div', { id: 'deploy-table' }, deployTable(d)),
      h('h3', {}, 'As it happened'),
      h('ol', { class: 'log', 'data-testid': 'deploy-log' },
        state.deployLog.map((l) => h('li', {}, h('span', { class: 'plus' }, new Date(l.at_ms).toLocaleTimeString()), ` ${l.what}`)))),
    h('section', { class: 'card wide' },
      h('h2', {}, 'Versions'),
      table([
        ['version', (v) => short(v.version, 20)], ['bundle', (v) => v.bundle],
        ['staged', (v) => (v.staged_ns ? new Date(v.staged_ns / 1e6).toLocaleString() : '')],
        ['artifacts', (v) => count(v.artifacts)],
        ['', (v) => (v.active ? h('span', { class: 'pill active' }, 'active') : '')],
      ], i.versions || [])),
    h('section', { class: 'card wide' },
      h('h2', {}, 'History'),
      h('ol', { class: 'log' }, (i.history || []).slice().reverse().map((e) =>
        h('li', {}, h('span', { class: 'plus' }, new Date(e.at_ns / 1e6).toLocaleString()), ` ${short(e.version, 16)} ${e.what}`)))));
}

async function renderSearch(params) {
  const form = h('form', { class: 'search', 'data-testid': 'search-form' },
    h('input', { name: 'schema', placeholder: 'schema (http.request)', value: params.get('schema') || '' }),
    h('input', { name: 'flag', placeholder: 'flag (bruteforce)', value: params.get('flag') || '' }),
    h('input', { name: 'limit', type: 'number', min: '1', max: '1000', value: params.get('limit') || '50' }),
    h('button', { type: 'submit' }, 'Search'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
    location.hash = `#/search?${q}`;
  });
  const results = h('div', { 'data-testid': 'search-results' });
  show(h('section', { class: 'card wide' }, h('h2', {}, 'Lucius'), form, results));
  if (![...params.keys()].length) return;
  try {
    const r = await api(`/api/dashboard/search?${params}`);
    const recs = r.records || [];
    results.replaceChildren(
      h('p', { class: 'muted' }, `${count(r.count ?? recs.length)} found, ${count(recs.length)} shown${r.dropped ? `; ${count(r.dropped)} dropped by Lucius` : ''}`),
      table([
        ['when', (x) => (x.at_ns ? new Date(x.at_ns / 1e6).toLocaleTimeString() : '')],
        ['schema', (x) => x.schema || ''], ['flags', (x) => (x.flags || []).join(', ')],
        ['record', (x) => h('code', {}, JSON.stringify(x.record ?? x))],
      ], recs));
  } catch (e) {
    results.replaceChildren(h('p', { class: 'error' }, String(e.message || e)));
  }
}

async function route() {
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = (path || '/').split('/').filter(Boolean);
  state.view = parts[0] || 'overview';
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.view === state.view);
  try {
    if (state.view === 'security' && parts[1]) await renderTimeline(decodeURIComponent(parts[1]));
    else if (state.view === 'security') await renderSecurity();
    else if (state.view === 'intent') await renderIntent();
    else if (state.view === 'search') await renderSearch(new URLSearchParams(query || ''));
    else {
      state.overview = await api('/api/dashboard/overview');
      state.series = (await api('/api/dashboard/series')).points;
      renderOverview();
    }
  } catch (e) {
    failed(e);
  }
}

function connect() {
  const es = new EventSource('/api/dashboard/stream');
  es.addEventListener('open', () => { live.textContent = 'live'; live.className = 'live on'; });
  es.addEventListener('error', () => {
    live.className = 'live';
    if (es.readyState === EventSource.CLOSED) {
      // The server refused the stream (a session that expired, a Ben
      // restarted): say so, and let the page ask (it shows the login).
      live.textContent = 'disconnected';
      route();
    } else {
      live.textContent = 'reconnecting…';
    }
  });
  es.addEventListener('overview', (ev) => {
    state.overview = JSON.parse(ev.data);
    const p = state.overview;
    state.series.push({ at_ms: p.at_ms, records_per_s: p.records.per_s, flags_per_s: p.flags.per_s, anomalies: p.chain.anomalies });
    if (state.series.length > 300) state.series.shift();
    if (state.view === 'overview') renderOverview();
  });
  es.addEventListener('deploy', (ev) => {
    const next = JSON.parse(ev.data);
    state.deployLog.push(...deployChanges(state.deploy, next, Date.now()));
    if (state.deployLog.length > 500) state.deployLog.splice(0, state.deployLog.length - 500);
    state.deploy = next;
    if (state.view === 'intent') route();
  });
  es.addEventListener('chain', () => {
    if (state.view === 'security') route();
  });
  es.addEventListener('resync', () => route());
}

window.addEventListener('hashchange', route);
route().then(() => {
  if (!main.querySelector('[data-testid=login-needed]')) connect();
});
