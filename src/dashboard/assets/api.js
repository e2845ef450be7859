// api.js: the one fetch helper (CSRF, JSON, errors, 401 → login), the session, the live
// feed (/api/live over EventSource) and the formatters every page uses.

export const state = {
  session: null,
  /** Called with no argument when the server says 401: the app shows the login screen. */
  onUnauthorized: null,
};

export const isAdmin = () => !!state.session && state.session.role === 'admin';

/** Escapes a value for HTML text or a quoted attribute. */
export function esc(v) {
  if (v === null || v === undefined) return '';
  return String(v)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&#39;');
}

export class ApiError extends Error {
  constructor(status, message, code, type) {
    super(message);
    this.status = status;
    this.code = code || null;
    this.type = type || null;
  }
}

/**
 * One call to the admin API. `body`: an object (sent as JSON), a string (sent as-is), or
 * undefined. Throws ApiError with the server's `error.message`. A 401 (outside the login calls)
 * sends the person back to the login screen.
 */
export async function api(method, path, body, opts = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  // Sent on reads too: some reads are admin-only (an account export) and checked like a change.
  if (state.session && state.session.csrf_token) {
    headers['X-CSRF-Token'] = state.session.csrf_token;
  }
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      cache: 'no-store',
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, `Cannot reach the gateway (${e.message || e})`, 'network_error');
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const e = data && data.error ? data.error : {};
    const msg = e.message || `${res.status} ${res.statusText || 'error'}`;
    const err = new ApiError(res.status, msg, e.code, e.type);
    if (res.status === 401 && !opts.noAuthRedirect && typeof state.onUnauthorized === 'function') {
      state.onUnauthorized(err);
    }
    throw err;
  }
  return data === null ? {} : data;
}

/** Builds a query string from an object, skipping empty values. */
export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    u.set(k, String(v));
  }
  const s = u.toString();
  return s ? `?${s}` : '';
}

// ---------------------------------------------------------------------------------------------
// Live feed

const ROW_KEEP = 200;
const WINDOW_MS = 60_000;

class LiveFeed {
  constructor() {
    this.es = null;
    this.listeners = new Set();
    this.statusListeners = new Set();
    this.rows = []; // newest first, deduplicated by request_id
    this.seen = new Set();
    this.ticks = []; // {ts, metrics}
    this.metrics = null;
    this.status = 'off'; // off | connecting | live | retrying
    this.retryTimer = null;
  }

  start() {
    if (this.es) return;
    this.setStatus('connecting');
    this.seed();
    const es = new EventSource('/api/live', { withCredentials: true });
    this.es = es;
    this.gotFirst = false;
    es.addEventListener('open', () => {
      this.gotFirst = false;
      this.setStatus('live');
    });
    es.addEventListener('tick', (ev) => {
      let data;
      try {
        data = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.setStatus('live');
      this.onTick(data);
    });
    es.addEventListener('error', () => {
      if (es.readyState === EventSource.CLOSED) {
        // The server refused the stream (401, or it went away): ask whether we are still signed
        // in, then try again.
        this.es = null;
        es.close();
        this.setStatus('retrying');
        clearTimeout(this.retryTimer);
        this.retryTimer = setTimeout(() => this.recheck(), 5000);
      } else {
        this.setStatus('retrying');
      }
    });
  }

  async recheck() {
    try {
      const s = await api('GET', '/api/dashboard-auth/session', undefined, { noAuthRedirect: true });
      if (s.authenticated) {
        state.session = s;
        this.start();
      } else if (typeof state.onUnauthorized === 'function') {
        state.onUnauthorized(null);
      }
    } catch {
      this.retryTimer = setTimeout(() => this.recheck(), 5000);
    }
  }

  stop() {
    clearTimeout(this.retryTimer);
    if (this.es) this.es.close();
    this.es = null;
    this.rows = [];
    this.seen = new Set();
    this.ticks = [];
    this.metrics = null;
    this.setStatus('off');
  }

  /** The last minute of the log, so the per-minute rates are right from the first tick. */
  async seed() {
    try {
      const since = Math.floor((Date.now() - WINDOW_MS) / 1000);
      const r = await api('GET', `/api/requests${qs({ since, limit: 1000 })}`);
      this.addRows(r.requests || [], false);
    } catch {
      /* the live feed will fill in */
    }
  }

  addRows(rows, notify) {
    const fresh = [];
    for (const r of rows) {
      if (!r || !r.request_id || this.seen.has(r.request_id)) continue;
      this.seen.add(r.request_id);
      fresh.push(r);
    }
    if (!fresh.length) return fresh;
    this.rows = fresh.concat(this.rows).sort((a, b) => b.ts_ms - a.ts_ms);
    if (this.rows.length > ROW_KEEP) {
      for (const r of this.rows.slice(ROW_KEEP)) this.seen.delete(r.request_id);
      this.rows.length = ROW_KEEP;
    }
    if (notify) this.emit({ type: 'rows', rows: fresh });
    return fresh;
  }

  onTick(data) {
    const ts = data.ts_ms || Date.now();
    this.metrics = data.metrics || null;
    if (data.metrics) {
      this.ticks.push({ ts, metrics: data.metrics });
      while (this.ticks.length > 2 && ts - this.ticks[0].ts > WINDOW_MS + 5000) this.ticks.shift();
    }
    const fresh = this.addRows(Array.isArray(data.requests) ? data.requests : [], false);
    // The first tick of a connection carries the recent past, not news.
    const initial = !this.gotFirst;
    this.gotFirst = true;
    this.emit({ type: 'tick', metrics: this.metrics, rows: fresh, initial });
  }

  /** Requests and tokens over the last minute of the log, and counter deltas over it. */
  rates() {
    const now = Date.now();
    const recent = this.rows.filter((r) => now - r.ts_ms <= WINDOW_MS);
    const tokens = recent.reduce((s, r) => s + (r.total_tokens || 0), 0);
    const first = this.ticks[0];
    const last = this.ticks[this.ticks.length - 1];
    const delta = (k) =>
      first && last && first !== last ? Math.max(0, (last.metrics[k] || 0) - (first.metrics[k] || 0)) : null;
    return {
      requestsPerMin: recent.length,
      tokensPerMin: tokens,
      errorsDelta:
        first && last && first !== last
          ? ['client_errors', 'upstream_errors', 'timeouts'].reduce((s, k) => s + delta(k), 0)
          : null,
      failoversDelta: delta('failovers'),
      spanMs: first && last ? last.ts - first.ts : 0,
    };
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  onStatus(fn) {
    this.statusListeners.add(fn);
    fn(this.status);
    return () => this.statusListeners.delete(fn);
  }

  setStatus(s) {
    if (s === this.status) return;
    this.status = s;
    for (const fn of this.statusListeners) fn(s);
  }

  emit(ev) {
    for (const fn of this.listeners) {
      try {
        fn(ev);
      } catch (e) {
        console.error(e);
      }
    }
  }
}

export const live = new LiveFeed();

// ---------------------------------------------------------------------------------------------
// Formatting

const nf0 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const nf1 = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

/** 950, 1.2 k, 3.4 M, 5.6 B. */
export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(+n)) return '–';
  n = +n;
  const a = Math.abs(n);
  if (a < 1000) return Number.isInteger(n) ? nf0.format(n) : nf1.format(n);
  if (a < 1e6) return `${nf1.format(n / 1e3)} k`;
  if (a < 1e9) return `${nf1.format(n / 1e6)} M`;
  return `${nf1.format(n / 1e9)} B`;
}

export function fmtInt(n) {
  if (n === null || n === undefined) return '–';
  return nf0.format(n);
}

/** Dollars: $0.0123 below a dollar, $12.34 above, $1.2 k above ten thousand. */
export function fmtUsd(usd) {
  if (usd === null || usd === undefined || Number.isNaN(+usd)) return '–';
  usd = +usd;
  if (usd === 0) return '$0.00';
  const a = Math.abs(usd);
  if (a < 0.0001) return `$${usd.toFixed(6)}`;
  if (a < 1) return `$${usd.toFixed(4)}`;
  if (a < 10_000) return `$${usd.toFixed(2)}`;
  return `$${fmtNum(usd)}`;
}

export const fmtMicroUsd = (m) => (m === null || m === undefined ? 'unpriced' : fmtUsd(m / 1e6));

export function fmtPct(p, digits = 0) {
  if (p === null || p === undefined || Number.isNaN(+p)) return '–';
  return `${(+p).toFixed(digits)} %`;
}

export function fmtBytes(b) {
  if (b === null || b === undefined) return '–';
  if (b < 1024) return `${b} B`;
  if (b < 1024 * 1024) return `${nf1.format(b / 1024)} KiB`;
  return `${nf1.format(b / 1024 / 1024)} MiB`;
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${ms} ms`;
  return `${nf1.format(ms / 1000)} s`;
}

const dtf = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});
const tf = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** Local date and time of unix seconds. */
export function fmtTime(secs) {
  if (!secs) return '–';
  return dtf.format(new Date(secs * 1000));
}

/** Local time of day of a millisecond timestamp, with the date when it is not today. */
export function fmtClockMs(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return tf.format(d);
  return dtf.format(d);
}

/** A duration in seconds as "2 d 3 h", "2 h 13 m", "4 m 10 s", "12 s". */
export function fmtDur(secs) {
  secs = Math.max(0, Math.round(secs));
  const d = Math.floor(secs / 86400);
  const h = Math.floor((secs % 86400) / 3600);
  const m = Math.floor((secs % 3600) / 60);
  const s = secs % 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} m`;
  if (m) return `${m} m ${s} s`;
  return `${s} s`;
}

/** "in 2 h 13 m" or "5 m ago" for unix seconds. */
export function fmtRel(secs) {
  if (!secs) return '–';
  const diff = secs - Date.now() / 1000;
  if (Math.abs(diff) < 1) return 'now';
  return diff > 0 ? `in ${fmtDur(diff)}` : `${fmtDur(-diff)} ago`;
}

export function titleCase(s) {
  if (!s) return '';
  const t = String(s).replace(/_/g, ' ');
  return t.charAt(0).toUpperCase() + t.slice(1);
}

// ---------------------------------------------------------------------------------------------
// Names for ids (accounts by email, keys by name), cached for a short while.

let namesCache = null;
let namesAt = 0;

/** { accounts: Map(id → account), keys: Map(id → key) }; `fresh` forces a reload. */
export async function names(fresh = false) {
  if (!fresh && namesCache && Date.now() - namesAt < 30_000) return namesCache;
  const [a, k] = await Promise.allSettled([api('GET', '/api/accounts'), api('GET', '/api/keys')]);
  namesCache = {
    accounts: new Map((a.status === 'fulfilled' ? a.value.accounts || [] : []).map((x) => [x.id, x])),
    keys: new Map((k.status === 'fulfilled' ? k.value.keys || [] : []).map((x) => [x.id, x])),
  };
  namesAt = Date.now();
  return namesCache;
}

export function accountName(n, id) {
  if (!id) return '–';
  const a = n && n.accounts.get(id);
  return (a && a.email) || id;
}

export function keyName(n, id) {
  if (!id) return '–';
  const k = n && n.keys.get(id);
  return (k && k.name) || id;
}
