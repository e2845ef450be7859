// pages.js: the read-mostly pages: Overview (#/overview), Requests (#/requests) and Client
// setup (#/setup), plus the request detail panel they share. Each page is
// `(root, ctx) => cleanup`.

import {
  api,
  isAdmin,
  qs,
  esc,
  live,
  names,
  accountName,
  keyName,
  fmtNum,
  fmtInt,
  fmtUsd,
  fmtMicroUsd,
  fmtPct,
  fmtBytes,
  fmtMs,
  fmtTime,
  fmtClockMs,
  fmtRel,
  titleCase,
} from './api.js';
import { mountChart, fillBuckets } from './charts.js';
import { $, $$, render, meter, tickCountdowns, badge, statusBadge, modal, codeBlock, empty, toast } from './ui.js';

const HOUR = 3600;
const DAY = 86400;
const nowSec = () => Math.floor(Date.now() / 1000);

/** A window's name from its length: 300 → "5 h", 10080 → "Weekly". */
export function windowName(minutes, fallback) {
  if (!minutes) return fallback;
  if (minutes === 10080) return 'Weekly';
  if (minutes % 1440 === 0) return `${minutes / 1440} d`;
  if (minutes % 60 === 0) return `${minutes / 60} h`;
  return `${minutes} m`;
}

/** The account's state for a badge: blocked wins over active. */
export function accountState(a) {
  if (a.status && a.status !== 'active') return a.status;
  if (a.blocked_until && a.blocked_until > nowSec()) return 'blocked';
  return a.status || 'unknown';
}

export function accountMeters(a) {
  const q = a.quota || {};
  const p = q.primary;
  const s = q.secondary;
  return (
    meter({
      label: windowName(p && p.window_minutes, '5 h'),
      pct: p ? p.used_percent : null,
      text: p ? `${Math.round(p.used_percent)} % used` : undefined,
      reset: p && p.reset_at,
      cap: a.cap_primary_percent,
      testid: 'meter-primary',
    }) +
    meter({
      label: windowName(s && s.window_minutes, 'Weekly'),
      pct: s ? s.used_percent : null,
      text: s ? `${Math.round(s.used_percent)} % used` : undefined,
      reset: s && s.reset_at,
      cap: a.cap_secondary_percent,
      testid: 'meter-secondary',
    })
  );
}

// ---------------------------------------------------------------------------------------------
// Overview

export function overview(root) {
  render(
    root,
    `<section class="page" data-testid="page-overview">
      <div class="page-head"><h1>Overview</h1><span class="muted small" data-live-note></span></div>
      <div class="tiles" data-testid="live-tiles">
        ${tile('rpm', 'Requests / min', 'last 60 s')}
        ${tile('tpm', 'Tokens / min', 'last 60 s')}
        ${tile('inflight', 'In flight', 'requests now')}
        ${tile('streams', 'Streams open', '')}
        ${tile('errors', 'Errors', 'since start')}
        ${tile('failovers', 'Failovers', 'since start')}
      </div>
      <div class="tiles" data-testid="cost-tiles">
        ${tile('cost-today', 'Cost today', 'UTC day')}
        ${tile('cost-7d', 'Cost 7 d', '')}
        ${tile('cost-30d', 'Cost 30 d', '')}
        ${tile('cache', 'Cache-hit rate', '30 d, of input tokens')}
      </div>
      <div class="grid-2">
        <div class="card">
          <div class="card-head"><h2>Pool headroom</h2><a href="#/accounts" class="small">Accounts →</a></div>
          <div data-headroom data-testid="headroom"><div class="loading">Loading…</div></div>
        </div>
        <div class="card">
          <div class="card-head"><h2>Requests and tokens, last 24 h</h2></div>
          <div data-chart-hour data-testid="chart-hourly"></div>
        </div>
      </div>
      <div class="card">
        <div class="card-head"><h2>Cost and requests per day, last 28 days</h2><span class="muted small">UTC days</span></div>
        <div data-chart-day data-testid="chart-daily"></div>
      </div>
      <div class="card">
        <div class="card-head"><h2>Recent requests</h2><a href="#/requests" class="small">All requests →</a></div>
        <div class="table-wrap">
          <table class="table table-click" data-testid="live-requests">
            <thead><tr><th>Time</th><th>Status</th><th>Model</th><th class="hide-sm">Account</th>
              <th class="hide-sm">Key</th><th class="num">Tokens</th><th class="num hide-xs">Cost</th><th class="num hide-sm">Latency</th></tr></thead>
            <tbody data-live-body></tbody>
          </table>
        </div>
        <div data-live-empty></div>
      </div>
    </section>`,
  );
  const timers = [];
  let dead = false;
  let n = null;
  const hourChart = mountChart($('[data-chart-hour]', root), { points: [], bar: { name: 'Requests', fmt: fmtInt }, empty: 'Loading…' });
  const dayChart = mountChart($('[data-chart-day]', root), { points: [], bar: { name: 'Cost', fmt: fmtUsd }, empty: 'Loading…' });

  const setTile = (k, v, sub) => {
    const el = $(`[data-tile="${k}"] .tile-val`, root);
    if (el) el.textContent = v;
    if (sub !== undefined) {
      const s = $(`[data-tile="${k}"] .tile-sub`, root);
      if (s) s.textContent = sub;
    }
  };

  // Live tiles and the recent table, from the shared feed.
  const seenRows = new Set(live.rows.map((r) => r.request_id));
  const drawLive = (fresh) => {
    const m = live.metrics;
    const r = live.rates();
    setTile('rpm', fmtNum(r.requestsPerMin));
    setTile('tpm', fmtNum(r.tokensPerMin));
    if (m) {
      setTile('inflight', fmtInt(m.requests_in_flight));
      setTile('streams', fmtInt(m.streams_open), `${fmtInt(m.connections_open)} connections open`);
      const errs = (m.client_errors || 0) + (m.upstream_errors || 0) + (m.timeouts || 0);
      setTile(
        'errors',
        fmtInt(errs),
        r.errorsDelta === null ? 'since start' : `+${fmtInt(r.errorsDelta)} in the last minute`,
      );
      setTile(
        'failovers',
        fmtInt(m.failovers),
        r.failoversDelta === null ? 'since start' : `+${fmtInt(r.failoversDelta)} in the last minute`,
      );
    }
    const rows = live.rows.slice(0, 20);
    const body = $('[data-live-body]', root);
    body.innerHTML = rows
      .map((row) => {
        const isNew = fresh && !seenRows.has(row.request_id);
        return `<tr data-testid="live-row" data-id="${esc(row.request_id)}"${isNew ? ' class="row-new"' : ''}>
          <td class="nowrap">${esc(fmtClockMs(row.ts_ms))}</td>
          <td data-testid="live-row-status">${statusBadge(row.status)}</td>
          <td data-testid="live-row-model">${esc(row.model || '–')}</td>
          <td class="hide-sm ellipsis">${esc(accountName(n, row.account_id))}</td>
          <td class="hide-sm ellipsis">${esc(keyName(n, row.key_id))}</td>
          <td class="num">${esc(fmtNum(row.total_tokens))}</td>
          <td class="num hide-xs">${esc(fmtMicroUsd(row.cost_micro_usd))}</td>
          <td class="num hide-sm">${esc(fmtMs(row.latency_ms))}</td></tr>`;
      })
      .join('');
    for (const row of rows) seenRows.add(row.request_id);
    $('[data-live-empty]', root).innerHTML = rows.length ? '' : empty('No requests yet. New ones appear here as they happen.');
  };
  $('[data-live-body]', root).addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-id]');
    if (!tr) return;
    const row = live.rows.find((r) => r.request_id === tr.dataset.id);
    if (row) showRequestDetail(row, n);
  });
  const unsub = live.subscribe((ev) => {
    if (ev.rows && ev.rows.some((r) => r.key_id && n && !n.keys.has(r.key_id))) {
      names(true).then((x) => (n = x));
    }
    drawLive(!ev.initial);
  });
  const unstatus = live.onStatus((s) => {
    const el = $('[data-live-note]', root);
    if (el) el.textContent = s === 'live' ? '' : s === 'connecting' ? 'Connecting to the live feed…' : 'Live feed interrupted; reconnecting…';
  });
  names().then((x) => {
    n = x;
    if (!dead) drawLive(false);
  });
  drawLive(false);
  timers.push(setInterval(() => drawLive(false), 5000));

  // Pool headroom.
  const headroom = $('[data-headroom]', root);
  const loadAccounts = async () => {
    try {
      const { accounts = [] } = await api('GET', '/api/accounts');
      if (dead) return;
      if (!accounts.length) {
        render(
          headroom,
          `${empty('No accounts yet.')}${isAdmin() ? '<p class="center"><a href="#/accounts?add=1" class="btn btn-primary" data-testid="overview-add-account">Add an account</a></p>' : ''}`,
        );
        return;
      }
      const active = accounts.filter((a) => accountState(a) === 'active');
      const left = (w) => {
        const vals = active.map((a) => a.quota && a.quota[w]).filter(Boolean).map((q) => 100 - q.used_percent);
        return vals.length ? vals.reduce((s, v) => s + v, 0) / vals.length : null;
      };
      const p = left('primary');
      const s = left('secondary');
      render(
        headroom,
        `<p class="muted small">${active.length} of ${accounts.length} account${accounts.length === 1 ? '' : 's'} taking traffic${
          p !== null ? ` · on average ${Math.round(p)} % of the 5 h window left` : ''
        }${s !== null ? `, ${Math.round(s)} % of the weekly` : ''}</p>
        <div class="headroom-list">${accounts
          .map(
            (a) => `<div class="headroom-item" data-testid="headroom-account">
              <div class="headroom-name"><span class="ellipsis" title="${esc(a.email || a.id)}">${esc(a.email || a.id)}</span>
                ${badge(accountState(a))}</div>
              ${accountMeters(a)}</div>`,
          )
          .join('')}</div>`,
      );
    } catch (e) {
      render(headroom, `<div class="error-box">${esc(e.message)}</div>`);
    }
  };
  loadAccounts();
  timers.push(setInterval(loadAccounts, 15000));
  timers.push(setInterval(() => tickCountdowns(headroom), 1000));

  // Usage: hourly for 24 h, daily for 30 d (tiles) of which the chart shows 28.
  const loadUsage = async () => {
    const now = nowSec();
    const hourStart = Math.floor(now / HOUR) * HOUR - 23 * HOUR;
    const dayToday = Math.floor(now / DAY) * DAY;
    const dayStart = dayToday - 29 * DAY;
    try {
      const [h, d] = await Promise.all([
        api('GET', `/api/usage${qs({ granularity: 'hour', group_by: 'all', since: hourStart, until: now + 1 })}`),
        api('GET', `/api/usage${qs({ granularity: 'day', group_by: 'all', since: dayStart, until: now + 1 })}`),
      ]);
      if (dead) return;
      const hours = fillBuckets(h.rows, hourStart, HOUR, 24);
      const hf = new Intl.DateTimeFormat(undefined, { hour: 'numeric' });
      const hm = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
      const hfull = new Intl.DateTimeFormat(undefined, { weekday: 'short', hour: '2-digit', minute: '2-digit' });
      hourChart.update({
        title: 'Requests and tokens per hour over the last 24 hours',
        points: hours.map(({ t, row }) => ({
          label: `${hfull.format(new Date(t * 1000))} – ${hm.format(new Date((t + HOUR) * 1000))}`,
          tick: hf.format(new Date(t * 1000)),
          bar: row ? row.requests : 0,
          line: row ? row.total_tokens : 0,
          extra: row ? `${fmtInt(row.failed + (row.errors || 0))} failed · ${fmtUsd(row.cost_usd)}` : '',
        })),
        bar: { name: 'Requests', fmt: fmtInt, axisFmt: fmtNum },
        line: { name: 'Tokens', fmt: fmtInt, axisFmt: fmtNum },
        empty: 'No requests in the last 24 h',
      });
      const days = fillBuckets(d.rows, dayStart, DAY, 30);
      const df = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', timeZone: 'UTC' });
      const dfull = new Intl.DateTimeFormat(undefined, { weekday: 'short', month: 'short', day: 'numeric', timeZone: 'UTC' });
      dayChart.update({
        title: 'Cost and requests per day over the last 28 days',
        points: days.slice(2).map(({ t, row }) => ({
          label: dfull.format(new Date(t * 1000)),
          tick: df.format(new Date(t * 1000)),
          bar: row ? row.cost_usd : 0,
          line: row ? row.requests : 0,
          extra: row ? `${fmtNum(row.total_tokens)} tokens${row.unpriced_requests ? ` · ${row.unpriced_requests} unpriced` : ''}` : '',
        })),
        bar: { name: 'Cost (USD)', fmt: fmtUsd, axisFmt: axisUsd },
        line: { name: 'Requests', fmt: fmtInt, axisFmt: fmtNum },
        empty: 'No requests in the last 28 days',
      });
      const sum = (list, f) => list.reduce((s, { row }) => s + (row ? row[f] || 0 : 0), 0);
      const today = days.filter(({ t }) => t === dayToday);
      const last7 = days.filter(({ t }) => t > dayToday - 7 * DAY);
      setTile('cost-today', fmtUsd(sum(today, 'cost_usd')), `${fmtInt(sum(today, 'requests'))} requests today (UTC)`);
      setTile('cost-7d', fmtUsd(sum(last7, 'cost_usd')), `${fmtInt(sum(last7, 'requests'))} requests`);
      setTile('cost-30d', fmtUsd(sum(days, 'cost_usd')), `${fmtInt(sum(days, 'requests'))} requests`);
      const inp = sum(days, 'input_tokens');
      const cached = sum(days, 'cached_tokens');
      const in7 = sum(last7, 'input_tokens');
      setTile(
        'cache',
        inp ? fmtPct((cached / inp) * 100, 1) : '–',
        inp ? `${fmtNum(cached)} of ${fmtNum(inp)} input tokens · 7 d ${in7 ? fmtPct((sum(last7, 'cached_tokens') / in7) * 100, 1) : '–'}` : 'no input tokens yet',
      );
    } catch (e) {
      if (!dead) toast(`Usage: ${e.message}`, 'error');
    }
  };
  loadUsage();
  timers.push(setInterval(loadUsage, 60000));

  return () => {
    dead = true;
    timers.forEach(clearInterval);
    unsub();
    unstatus();
    hourChart.destroy();
    dayChart.destroy();
  };
}

function axisUsd(v) {
  if (v === 0) return '$0';
  if (v < 1000) return `$${+v.toPrecision(3)}`;
  return `$${fmtNum(v)}`;
}

function tile(key, label, sub) {
  return `<div class="tile" data-tile="${esc(key)}" data-testid="tile-${esc(key)}">
    <div class="tile-label">${esc(label)}</div><div class="tile-val">–</div><div class="tile-sub muted">${esc(sub)}</div></div>`;
}

// ---------------------------------------------------------------------------------------------
// Request detail

const FIELD_FMT = {
  ts_ms: (v) => `${new Date(v).toLocaleString()} (${v})`,
  cost_micro_usd: (v) => (v === null ? 'unpriced' : `${fmtUsd(v / 1e6)} (${fmtInt(v)} µ$)`),
  request_bytes: fmtBytes,
  response_bytes: fmtBytes,
  latency_ms: fmtMs,
  ttfb_ms: fmtMs,
};

export function showRequestDetail(row, n) {
  const extra = {
    account_id: row.account_id && n ? accountName(n, row.account_id) : null,
    key_id: row.key_id && n ? keyName(n, row.key_id) : null,
  };
  const rows = Object.keys(row)
    .map((k) => {
      const v = row[k];
      let text;
      if (v === null || v === undefined || v === '') text = '–';
      else if (FIELD_FMT[k]) text = FIELD_FMT[k](v);
      else if (typeof v === 'number') text = fmtInt(v);
      else if (typeof v === 'object') text = JSON.stringify(v);
      else text = String(v);
      const ex = extra[k] && extra[k] !== v ? ` <span class="muted">(${esc(extra[k])})</span>` : '';
      return `<dt>${esc(k)}</dt><dd data-field="${esc(k)}">${esc(text)}${ex}</dd>`;
    })
    .join('');
  const filters = [];
  if (row.account_id) filters.push(`<a class="btn btn-small" href="#/requests${qs({ account: row.account_id })}">Same account</a>`);
  if (row.key_id) filters.push(`<a class="btn btn-small" href="#/requests${qs({ key: row.key_id })}">Same key</a>`);
  if (row.model) filters.push(`<a class="btn btn-small" href="#/requests${qs({ model: row.model })}">Same model</a>`);
  const m = modal(
    `Request ${row.request_id}`,
    `<div class="detail-head">${statusBadge(row.status)} ${badge(row.outcome || 'unknown', row.outcome === 'completed' ? 'ok' : 'warn')}
      <span class="muted">${esc(row.route || '')} · ${esc(row.model || '')}</span></div>
     <dl class="kv" data-testid="request-detail">${rows}</dl>
     <div class="form-actions">${filters.join('')}</div>`,
    { wide: true, testid: 'request-detail-dialog' },
  );
  m.el.addEventListener('click', (e) => {
    if (e.target.closest('a[href^="#/"]')) m.close();
  });
}

// ---------------------------------------------------------------------------------------------
// Requests

const toLocalInput = (secs) => {
  if (!secs) return '';
  const d = new Date(secs * 1000);
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
};
const fromLocalInput = (v) => (v ? Math.floor(new Date(v).getTime() / 1000) : '');

export function requests(root, ctx) {
  const f = {
    since: ctx.params.get('since') || '',
    until: ctx.params.get('until') || '',
    key: ctx.params.get('key') || '',
    account: ctx.params.get('account') || '',
    model: ctx.params.get('model') || '',
    status: ctx.params.get('status') || '',
    effort: ctx.params.get('effort') || '',
    route: ctx.params.get('route') || '',
    q: ctx.params.get('q') || '',
    limit: ctx.params.get('limit') || '50',
  };
  render(
    root,
    `<section class="page" data-testid="page-requests">
      <div class="page-head"><h1>Requests</h1>
        <a class="btn" data-csv data-testid="requests-csv" download="requests.csv">Export CSV</a></div>
      <form class="card filters" data-filters data-testid="requests-filters">
        <label>Since<input type="datetime-local" name="since" value="${esc(toLocalInput(+f.since))}" data-testid="filter-since"></label>
        <label>Until<input type="datetime-local" name="until" value="${esc(toLocalInput(+f.until))}" data-testid="filter-until"></label>
        <label>Key<select name="key" data-testid="filter-key"><option value="">Any key</option></select></label>
        <label>Account<select name="account" data-testid="filter-account"><option value="">Any account</option></select></label>
        <label>Model<input name="model" list="model-list" value="${esc(f.model)}" placeholder="any" data-testid="filter-model" autocomplete="off">
          <datalist id="model-list"></datalist></label>
        <label>Status<select name="status" data-testid="filter-status">
          ${[['', 'Any status'], ['429', '429 (rate limited)'], ['4xx', '4xx'], ['error', 'Errors (5xx, upstream)']]
            .map(([v, t]) => `<option value="${v}"${f.status === v ? ' selected' : ''}>${esc(t)}</option>`)
            .join('')}</select></label>
        <label>Effort<select name="effort" data-testid="filter-effort">
          ${['', 'minimal', 'low', 'medium', 'high', 'xhigh']
            .map((v) => `<option value="${v}"${f.effort === v ? ' selected' : ''}>${v || 'Any effort'}</option>`)
            .join('')}</select></label>
        <label>Route<select name="route" data-testid="filter-route">
          ${['', 'responses', 'v1/responses', 'v1/chat/completions', 'compact', 'models', 'control']
            .map((v) => `<option value="${v}"${f.route === v ? ' selected' : ''}>${v || 'Any route'}</option>`)
            .join('')}</select></label>
        <label>Search<input name="q" value="${esc(f.q)}" placeholder="request id, conversation, error…" data-testid="filter-q" autocomplete="off"></label>
        <label>Per page<select name="limit" data-testid="filter-limit">
          ${['25', '50', '100', '250', '500'].map((v) => `<option${f.limit === v ? ' selected' : ''}>${v}</option>`).join('')}</select></label>
        <div class="filter-actions"><button type="submit" class="btn btn-primary" data-testid="filter-apply">Apply</button>
          <a href="#/requests" class="btn">Reset</a></div>
      </form>
      <div class="card">
        <div class="table-wrap">
          <table class="table table-click" data-testid="requests-table">
            <thead><tr><th>Time</th><th>Status</th><th>Model</th><th class="hide-sm">Account</th><th class="hide-sm">Key</th>
              <th class="num">In</th><th class="num hide-xs">Out</th><th class="num hide-xs">Cost</th><th class="num hide-sm">Latency</th><th class="num hide-md">TTFB</th><th class="hide-md">Route</th></tr></thead>
            <tbody data-body></tbody>
          </table>
        </div>
        <div data-empty></div>
        <div class="pager">
          <button type="button" class="btn" data-prev data-testid="requests-prev" disabled>← Newer</button>
          <span class="muted small" data-page-info></span>
          <button type="button" class="btn" data-next data-testid="requests-next" disabled>Older →</button>
        </div>
      </div>
    </section>`,
  );
  const form = $('[data-filters]', root);
  let n = null;
  let dead = false;
  const stack = []; // cursors of the pages before the current one
  let cursor = '';
  let nextCursor = null;
  let rows = [];

  const filterParams = () => ({
    since: f.since,
    until: f.until,
    key: f.key,
    account: f.account,
    model: f.model,
    status: f.status,
    effort: f.effort,
    route: f.route,
    q: f.q,
  });
  // The export is every matching row (the server pages through them), not this page.
  $('[data-csv]', root).href = `/api/requests${qs({ ...filterParams(), format: 'csv' })}`;

  names().then((x) => {
    n = x;
    if (dead) return;
    const ks = $('select[name=key]', form);
    for (const k of x.keys.values()) ks.add(new Option(`${k.name} (${k.prefix}…)${k.status !== 'active' ? ` · ${k.status}` : ''}`, k.id, false, k.id === f.key));
    if (f.key && !x.keys.has(f.key)) ks.add(new Option(f.key, f.key, false, true));
    const as = $('select[name=account]', form);
    for (const a of x.accounts.values()) as.add(new Option(a.email || a.id, a.id, false, a.id === f.account));
    if (f.account && !x.accounts.has(f.account)) as.add(new Option(f.account, f.account, false, true));
    draw();
  });
  api('GET', '/api/usage/summary')
    .then((s) => {
      if (dead) return;
      const dl = $('#model-list', root);
      for (const m of Object.keys(s.by_model || {}).sort()) dl.append(new Option(m));
    })
    .catch(() => {});

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const p = {
      since: fromLocalInput(fd.get('since')),
      until: fromLocalInput(fd.get('until')),
      key: fd.get('key'),
      account: fd.get('account'),
      model: String(fd.get('model') || '').trim(),
      status: fd.get('status'),
      effort: fd.get('effort'),
      route: fd.get('route'),
      q: String(fd.get('q') || '').trim(),
      limit: fd.get('limit') === '50' ? '' : fd.get('limit'),
    };
    const target = `#/requests${qs(p)}`;
    if (location.hash === target) load();
    else location.hash = target;
  });

  const draw = () => {
    const body = $('[data-body]', root);
    body.innerHTML = rows
      .map(
        (r, i) => `<tr data-i="${i}" data-testid="request-row" tabindex="0">
        <td class="nowrap">${esc(fmtClockMs(r.ts_ms))}</td>
        <td>${statusBadge(r.status)}</td>
        <td>${esc(r.model || '–')}</td>
        <td class="hide-sm ellipsis">${esc(accountName(n, r.account_id))}</td>
        <td class="hide-sm ellipsis">${esc(keyName(n, r.key_id))}</td>
        <td class="num">${esc(fmtNum(r.input_tokens))}</td>
        <td class="num hide-xs">${esc(fmtNum(r.output_tokens))}</td>
        <td class="num hide-xs">${esc(fmtMicroUsd(r.cost_micro_usd))}</td>
        <td class="num hide-sm">${esc(fmtMs(r.latency_ms))}</td>
        <td class="num hide-md">${esc(fmtMs(r.ttfb_ms))}</td>
        <td class="hide-md">${esc(r.route || '')}${r.transport && r.transport !== 'http' ? ` <span class="muted">(${esc(r.transport)})</span>` : ''}</td></tr>`,
      )
      .join('');
    $('[data-empty]', root).innerHTML = rows.length ? '' : empty(stack.length ? 'No more requests.' : 'No requests match these filters.');
    $('[data-prev]', root).disabled = stack.length === 0;
    $('[data-next]', root).disabled = !nextCursor;
    $('[data-page-info]', root).textContent = rows.length
      ? `Page ${stack.length + 1} · ${rows.length} request${rows.length === 1 ? '' : 's'}`
      : '';
  };

  const load = async () => {
    $('[data-empty]', root).innerHTML = '<div class="loading">Loading…</div>';
    try {
      const r = await api('GET', `/api/requests${qs({ ...filterParams(), limit: f.limit, cursor })}`);
      if (dead) return;
      rows = r.requests || [];
      nextCursor = r.next_cursor || null;
      // A full page may still be the last one; an empty next page says so.
      draw();
    } catch (e) {
      if (dead) return;
      rows = [];
      draw();
      render($('[data-empty]', root), `<div class="error-box">${esc(e.message)}</div>`);
    }
  };
  const open = (tr) => {
    const r = rows[+tr.dataset.i];
    if (r) showRequestDetail(r, n);
  };
  $('[data-body]', root).addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-i]');
    if (tr) open(tr);
  });
  $('[data-body]', root).addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-i]');
    if (tr && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault();
      open(tr);
    }
  });
  $('[data-next]', root).addEventListener('click', () => {
    if (!nextCursor) return;
    stack.push(cursor);
    cursor = nextCursor;
    load();
  });
  $('[data-prev]', root).addEventListener('click', () => {
    if (!stack.length) return;
    cursor = stack.pop();
    load();
  });
  load();
  return () => {
    dead = true;
  };
}

// ---------------------------------------------------------------------------------------------
// Client setup

export function setup(root) {
  const origin = location.origin;
  render(
    root,
    `<section class="page" data-testid="page-setup">
      <div class="page-head"><h1>Client setup</h1></div>
      <div class="card">
        <h2>Codex CLI</h2>
        <p>Add this to <code>~/.codex/config.toml</code> (or <code>$CODEX_HOME/config.toml</code>):</p>
        <div data-toml></div>
        <p class="muted">Or let the gateway's command line do it for you; it keeps every other line and writes a
          timestamped copy first:</p>
        <div data-cli></div>
      </div>
      <div class="card">
        <h2>OpenAI Python SDK</h2>
        <div data-python></div>
      </div>
      <div class="card">
        <h2>curl</h2>
        <div data-curl></div>
      </div>
    </section>`,
  );
  let dead = false;
  const fill = (keyAuth) => {
    if (dead) return;
    const keyLine = keyAuth ? 'env_key = "CODEX_LB_API_KEY"\n' : '';
    const toml = `model_provider = "codex-lb"

[model_providers.codex-lb]
name = "OpenAI"
base_url = "${origin}/backend-api/codex"
wire_api = "responses"
${keyLine}`;
    const note = keyAuth
      ? `<p class="muted">Key auth is on: create a key under <a href="#/keys">API keys</a> and export it as
         <code>CODEX_LB_API_KEY</code> before starting Codex.</p>`
      : `<p class="muted">Key auth is off, so no key is needed. If you turn it on in <a href="#/settings">Settings</a>,
         add <code>env_key = "CODEX_LB_API_KEY"</code> and export a key from <a href="#/keys">API keys</a>.</p>`;
    render($('[data-toml]', root), codeBlock(toml, { testid: 'setup-toml' }) + note);
    render(
      $('[data-cli]', root),
      codeBlock(`codex-lb codex setup --gateway ${origin}${keyAuth ? ' --key-env CODEX_LB_API_KEY' : ''}`, { testid: 'setup-cli' }),
    );
    const keyExpr = keyAuth ? 'os.environ["CODEX_LB_API_KEY"],' : '"unused",  # key auth is off: any value will do';
    const py = `${keyAuth ? 'import os\n' : ''}from openai import OpenAI

client = OpenAI(
    base_url="${origin}/v1",
    api_key=${keyExpr}
)
response = client.responses.create(model="gpt-5.5", input="Say hello")
print(response.output_text)
`;
    render($('[data-python]', root), codeBlock(py, { testid: 'setup-python' }));
    const curl = `curl ${origin}/v1/responses \\
  -H "content-type: application/json" \\
${keyAuth ? '  -H "authorization: Bearer $CODEX_LB_API_KEY" \\\n' : ''}  -d '{"model": "gpt-5.5", "input": "Say hello"}'
`;
    render($('[data-curl]', root), codeBlock(curl, { testid: 'setup-curl' }));
  };
  fill(false);
  api('GET', '/api/settings')
    .then((s) => fill(!!s.api_key_auth))
    .catch((e) => toast(`Settings: ${e.message}`, 'error'));
  return () => {
    dead = true;
  };
}

export { titleCase, fmtTime, fmtRel };
