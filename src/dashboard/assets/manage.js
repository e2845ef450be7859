// manage.js: the pages that change things: Accounts (#/accounts), API keys (#/keys) and
// Settings (#/settings). Mutating controls are only drawn for the admin role.

import {
  api,
  esc,
  state,
  isAdmin,
  names,
  fmtNum,
  fmtInt,
  fmtUsd,
  fmtMicroUsd,
  fmtTime,
  fmtRel,
  titleCase,
} from './api.js';
import {
  $,
  $$,
  render,
  meter,
  tickCountdowns,
  badge,
  toast,
  modal,
  confirmDialog,
  codeBlock,
  busy,
  empty,
  download,
  applyWidths,
} from './ui.js';
import { accountMeters, accountState } from './pages.js';

const nowSec = () => Math.floor(Date.now() / 1000);
/** An optional number input: '' → null. */
const numOrNull = (v) => {
  const s = String(v ?? '').trim();
  if (s === '') return null;
  const n = Number(s);
  if (!Number.isFinite(n)) throw new Error(`${s} is not a number`);
  return n;
};
const intOrNull = (v, what) => {
  const n = numOrNull(v);
  if (n !== null && (!Number.isInteger(n) || n < 1)) throw new Error(`${what}: a whole number of at least 1, or empty`);
  return n;
};

// ---------------------------------------------------------------------------------------------
// Accounts

const PRIORITIES = [
  ['burn_first', 'Burn first'],
  ['normal', 'Normal'],
  ['preserve', 'Preserve'],
];

export function accounts(root, ctx) {
  const admin = isAdmin();
  render(
    root,
    `<section class="page" data-testid="page-accounts">
      <div class="page-head"><h1>Accounts</h1>
        ${admin ? '<button type="button" class="btn btn-primary" data-add data-testid="account-add">Add account</button>' : ''}</div>
      <div data-list class="acc-list" data-testid="accounts-list"><div class="loading">Loading…</div></div>
    </section>`,
  );
  const list = $('[data-list]', root);
  const cards = new Map(); // id → { el, dirty, sig }
  let dead = false;
  let usage = {};

  const liveHtml = (a) => {
    const u = usage[a.id] || {};
    const st = accountState(a);
    const reason =
      st === 'blocked'
        ? `${titleCase(a.block_reason || 'blocked')} until ${fmtTime(a.blocked_until)} (<span data-reset="${esc(a.blocked_until)}">${esc(fmtRel(a.blocked_until))}</span>)`
        : a.status_reason
          ? esc(a.status_reason)
          : '';
    return `<div class="acc-meters">${accountMeters(a)}</div>
      ${reason ? `<div class="acc-reason small">${reason}</div>` : ''}
      <dl class="stats">
        <div><dt>Requests</dt><dd>${esc(fmtNum(u.requests || 0))}</dd></div>
        <div><dt>Tokens</dt><dd>${esc(fmtNum(u.total_tokens || 0))}</dd></div>
        <div><dt>Cost</dt><dd>${esc(fmtMicroUsd(u.cost_micro_usd || 0))}</dd></div>
        <div><dt>Last refresh</dt><dd title="${esc(fmtTime(a.last_refresh_at))}">${a.last_refresh_at ? `<span data-reset="${esc(a.last_refresh_at)}">${esc(fmtRel(a.last_refresh_at))}</span>` : '–'}</dd></div>
        <div><dt>Added</dt><dd>${esc(fmtTime(a.added_at))}</dd></div>
        ${a.requests_per_minute ? `<div><dt>Pace</dt><dd>${esc(a.requests_per_minute)} / min</dd></div>` : ''}
      </dl>`;
  };
  const headHtml = (a) => `<div class="acc-title">
      <h3 class="ellipsis" title="${esc(a.email || a.id)}">${esc(a.email || a.id)}</h3>
      <div class="acc-badges">${badge(accountState(a))}${a.plan ? badge(a.plan, 'info') : ''}${
        a.priority && a.priority !== 'normal' ? badge(a.priority, 'accent') : ''
      }</div></div><div class="muted small mono">${esc(a.id)}</div>`;
  const controlsHtml = (a) => {
    if (!admin) return '';
    const paused = a.status === 'paused';
    return `<form class="acc-controls" data-controls>
        <label>Priority<select name="priority" data-testid="account-priority">${PRIORITIES.map(
          ([v, t]) => `<option value="${v}"${a.priority === v ? ' selected' : ''}>${t}</option>`,
        ).join('')}</select></label>
        <label>5 h cap %<input name="cap_primary_percent" type="number" min="0" max="100" step="1" inputmode="decimal" placeholder="none" value="${esc(a.cap_primary_percent ?? '')}"></label>
        <label>Weekly cap %<input name="cap_secondary_percent" type="number" min="0" max="100" step="1" inputmode="decimal" placeholder="none" value="${esc(a.cap_secondary_percent ?? '')}"></label>
        <label>Requests / min<input name="requests_per_minute" type="number" min="1" step="1" inputmode="numeric" placeholder="no pace" value="${esc(a.requests_per_minute ?? '')}"></label>
        <div class="acc-actions">
          ${a.status === 'reauth_required' ? '<button type="button" class="btn btn-primary btn-small" data-act="reauth" data-testid="account-reauth">Sign in again</button>' : ''}
          <button type="submit" class="btn btn-primary btn-small" data-testid="account-save">Save</button>
          <button type="button" class="btn btn-small" data-act="${paused ? 'resume' : 'pause'}" data-testid="account-${paused ? 'resume' : 'pause'}">${paused ? 'Resume' : 'Pause'}</button>
          <button type="button" class="btn btn-small" data-act="export" data-testid="account-export">Export</button>
          <button type="button" class="btn btn-small btn-danger" data-act="remove" data-testid="account-remove">Remove</button>
        </div>
        <div class="form-error" role="alert"></div>
      </form>`;
  };

  const draw = (accountsList) => {
    if (!accountsList.length) {
      cards.clear();
      render(
        list,
        empty(admin ? 'No accounts yet. Add one with “Add account”.' : 'No accounts yet.'),
      );
      return;
    }
    if (!list.querySelector('.acc-card')) list.textContent = '';
    const ids = new Set(accountsList.map((a) => a.id));
    for (const [id, c] of cards) {
      if (!ids.has(id)) {
        c.el.remove();
        cards.delete(id);
      }
    }
    let prev = null;
    for (const a of accountsList) {
      let c = cards.get(a.id);
      if (!c) {
        const el = document.createElement('article');
        el.className = 'card acc-card';
        el.dataset.testid = 'account-card';
        el.dataset.id = a.id;
        el.innerHTML = '<div data-head></div><div data-live></div><div data-ctl></div>';
        c = { el, dirty: false, sig: '' };
        cards.set(a.id, c);
        el.addEventListener('input', () => (c.dirty = true));
      }
      if (prev ? prev.nextSibling !== c.el : list.firstChild !== c.el) {
        if (prev) prev.after(c.el);
        else list.prepend(c.el);
      }
      prev = c.el;
      c.account = a;
      render($('[data-head]', c.el), headHtml(a));
      render($('[data-live]', c.el), liveHtml(a));
      const sig = JSON.stringify([a.status, a.priority, a.cap_primary_percent, a.cap_secondary_percent, a.requests_per_minute]);
      const focused = c.el.contains(document.activeElement) && document.activeElement.matches('input, select');
      if (sig !== c.sig && !(c.dirty || focused)) {
        render($('[data-ctl]', c.el), controlsHtml(a));
        c.sig = sig;
      }
    }
  };

  const load = async () => {
    try {
      const [acc, sum] = await Promise.all([
        api('GET', '/api/accounts'),
        api('GET', '/api/usage/summary').catch(() => ({})),
      ]);
      if (dead) return;
      usage = sum.by_account || {};
      draw(acc.accounts || []);
    } catch (e) {
      if (!dead) render(list, `<div class="error-box">${esc(e.message)}</div>`);
    }
  };

  list.addEventListener('submit', async (e) => {
    const form = e.target.closest('form[data-controls]');
    if (!form) return;
    e.preventDefault();
    const card = form.closest('.acc-card');
    const c = cards.get(card.dataset.id);
    await busy(form, async () => {
      const fd = new FormData(form);
      const body = {
        priority: fd.get('priority'),
        cap_primary_percent: numOrNull(fd.get('cap_primary_percent')),
        cap_secondary_percent: numOrNull(fd.get('cap_secondary_percent')),
        requests_per_minute: intOrNull(fd.get('requests_per_minute'), 'Requests / min'),
      };
      for (const k of ['cap_primary_percent', 'cap_secondary_percent']) {
        if (body[k] !== null && (body[k] < 0 || body[k] > 100)) throw new Error('Caps are percentages between 0 and 100');
      }
      await api('PATCH', `/api/accounts/${encodeURIComponent(card.dataset.id)}`, body);
      c.dirty = false;
      c.sig = '';
      toast('Account saved');
      await load();
    });
  });
  list.addEventListener('change', (e) => {
    // A priority change applies at once, like a toggle.
    if (e.target.name === 'priority') e.target.form.requestSubmit();
  });
  list.addEventListener('click', async (e) => {
    const btn = e.target.closest('button[data-act]');
    if (!btn) return;
    const card = btn.closest('.acc-card');
    const id = card.dataset.id;
    const c = cards.get(id);
    const label = (c && c.account && c.account.email) || id;
    const path = `/api/accounts/${encodeURIComponent(id)}`;
    const act = btn.dataset.act;
    if (act === 'reauth') {
      // Signing in to the same ChatGPT account again replaces its tokens.
      addAccountDialog(load);
      return;
    }
    btn.disabled = true;
    try {
      if (act === 'pause' || act === 'resume') {
        await api('POST', `${path}/${act}`);
        c.sig = '';
        c.dirty = false;
        toast(act === 'pause' ? `Paused ${label}` : `Resumed ${label}`);
      } else if (act === 'remove') {
        if (!(await confirmDialog(`Remove ${label} from the pool? Its tokens are deleted from the gateway; the request log keeps its history.`, { ok: 'Remove' }))) return;
        await api('DELETE', path);
        toast(`Removed ${label}`);
      } else if (act === 'export') {
        const r = await api('GET', `${path}/export`);
        const text = typeof r.auth_json === 'string' ? r.auth_json : JSON.stringify(r.auth_json, null, 2);
        const m = modal(
          `Export ${label}`,
          `<div class="warn-box" data-testid="export-warning">${esc(r.warning || '')}</div>
           <p>This is a Codex <code>auth.json</code> with the account's tokens. Anyone who has it can use the account.</p>
           <div class="form-actions"><button type="button" class="btn" data-close>Close</button>
             <button type="button" class="btn btn-primary" data-dl data-testid="export-download">Download auth.json</button></div>`,
          { testid: 'export-dialog' },
        );
        $('[data-dl]', m.el).addEventListener('click', () => {
          download(`auth-${(c.account && c.account.email) || id}.json`.replace(/[^\w.@-]+/g, '_'), text);
        });
        return;
      }
      await load();
    } catch (err) {
      toast(err.message, 'error');
    } finally {
      btn.disabled = false;
    }
  });
  const addBtn = $('[data-add]', root);
  if (addBtn) addBtn.addEventListener('click', () => addAccountDialog(load));
  if (addBtn && ctx && ctx.params.get('add')) {
    // #/accounts?add=1 (the overview's empty pool) opens the dialog; the address drops the flag.
    history.replaceState(null, '', '#/accounts');
    addAccountDialog(load);
  }

  load();
  const timers = [setInterval(load, 15000), setInterval(() => tickCountdowns(list), 1000)];
  return () => {
    dead = true;
    timers.forEach(clearInterval);
  };
}

/** The Add account dialog: browser sign-in, device code, auth.json upload, and a note. */
function addAccountDialog(onAdded) {
  const m = modal(
    'Add account',
    `<div class="tabs" role="tablist">
      <button type="button" role="tab" class="tab" data-tab="browser" aria-selected="true" data-testid="add-tab-browser">Browser<span class="hide-xs"> sign-in</span></button>
      <button type="button" role="tab" class="tab" data-tab="device" aria-selected="false" data-testid="add-tab-device">Device code</button>
      <button type="button" role="tab" class="tab" data-tab="upload" aria-selected="false" data-testid="add-tab-upload">Upload<span class="hide-xs"> auth.json</span></button>
      <button type="button" role="tab" class="tab" data-tab="note" aria-selected="false" data-testid="add-tab-note">Note</button>
    </div>
    <div class="tab-panel" data-panel="browser">
      <p>Sign in to ChatGPT in a browser. When this gateway runs on the machine you browse from, it catches the
        redirect to <code>localhost</code> by itself; otherwise copy the address your browser ends on (it starts with
        <code>http://localhost:</code> and may say the page cannot be reached) and paste it below.</p>
      <div class="form-actions form-actions-left"><button type="button" class="btn btn-primary" data-start="browser" data-testid="browser-start">Start sign-in</button></div>
      <div data-flow="browser"></div>
    </div>
    <div class="tab-panel" data-panel="device" hidden>
      <p>Sign in on any device: open the link, enter the code, and approve. This page follows along.</p>
      <div class="form-actions form-actions-left"><button type="button" class="btn btn-primary" data-start="device" data-testid="device-start">Get a code</button></div>
      <div data-flow="device"></div>
    </div>
    <div class="tab-panel" data-panel="upload" hidden>
      <form data-upload>
        <p>Choose a Codex <code>auth.json</code> (usually <code>~/.codex/auth.json</code>), or paste its text.
          Importing an account that is already pooled updates its tokens.</p>
        <label>File<input type="file" name="file" accept=".json,application/json" data-testid="upload-file"></label>
        <label>…or its text<textarea name="text" rows="5" spellcheck="false" placeholder='{"tokens": {...}}' data-testid="upload-text"></textarea></label>
        <div class="form-error" role="alert" data-testid="upload-error"></div>
        <div class="form-actions"><button type="submit" class="btn btn-primary" data-testid="upload-submit">Import</button></div>
      </form>
    </div>
    <div class="tab-panel" data-panel="note" hidden>
      <ul class="prose">
        <li>Each pooled account is a ChatGPT login with Codex access. The gateway refreshes its tokens itself.</li>
        <li>Sign-ins use the same OAuth client as the Codex CLI; the browser sign-in redirects to
          <code>http://localhost:1455/auth/callback</code>, which only this machine can catch.</li>
        <li>From a terminal: <code>codex-lb accounts login</code> (add <code>--device</code> for a device code) or
          <code>codex-lb accounts import ~/.codex/auth.json</code>.</li>
        <li>An imported login stays shared with the Codex CLI it came from: whichever refreshes first invalidates the
          other's refresh token. Sign in fresh here, or stop using the original copy.</li>
      </ul>
    </div>`,
    { wide: true, testid: 'add-account-dialog' },
  );
  const el = m.el;
  let flow = null; // { id, timer }
  const stopFlow = (cancel) => {
    if (!flow) return;
    clearTimeout(flow.timer);
    if (cancel && !flow.final) api('DELETE', `/api/accounts/login/${encodeURIComponent(flow.id)}`).catch(() => {});
    flow = null;
  };
  m.closed.then(() => stopFlow(true));

  el.addEventListener('click', (e) => {
    const tab = e.target.closest('[data-tab]');
    if (tab) {
      for (const t of $$('[data-tab]', el)) t.setAttribute('aria-selected', String(t === tab));
      for (const p of $$('[data-panel]', el)) p.hidden = p.dataset.panel !== tab.dataset.tab;
    }
  });

  const statusLine = (v) => {
    const s = v.status;
    const text = {
      pending: 'Waiting for you to sign in…',
      exchanging: 'Signed in; fetching the tokens…',
      complete: v.created ? 'Account added.' : 'Account updated (it was already pooled).',
      failed: `Failed: ${v.error || 'unknown error'}`,
      expired: 'This sign-in expired. Start again.',
      cancelled: 'Cancelled.',
    }[s] || s;
    const kind = s === 'complete' ? 'ok' : s === 'failed' || s === 'expired' ? 'crit' : s === 'cancelled' ? 'muted' : 'info';
    const acct = v.account && v.account.email ? ` <b>${esc(v.account.email)}</b>` : '';
    return `<div class="flow-status" data-testid="login-flow-status">${badge(s, kind)} <span>${esc(text)}${acct}</span></div>`;
  };

  const poll = async (mode) => {
    if (!flow) return;
    const box = $(`[data-flow="${mode}"] [data-status]`, el);
    try {
      const v = await api('GET', `/api/accounts/login/${encodeURIComponent(flow.id)}`);
      if (!flow) return;
      render(box, statusLine(v));
      if (!['pending', 'exchanging'].includes(v.status)) {
        flow.final = true;
        if (v.status === 'complete') {
          toast(v.created ? 'Account added' : 'Account updated');
          onAdded();
        }
        $$(`[data-flow="${mode}"] [data-complete] button, [data-flow="${mode}"] [data-complete] input`, el).forEach((b) => (b.disabled = true));
        return;
      }
    } catch (e) {
      if (box) render(box, `<div class="error-box">${esc(e.message)}</div>`);
      if (e.status === 404) return;
    }
    if (flow) flow.timer = setTimeout(() => poll(mode), 2000);
  };

  const start = async (mode, listen = true) => {
    stopFlow(true);
    const box = $(`[data-flow="${mode}"]`, el);
    render(box, '<div class="loading">Starting…</div>');
    try {
      const v = await api('POST', '/api/accounts/login', mode === 'browser' ? { mode, listen } : { mode });
      flow = { id: v.id, timer: null, final: false };
      if (mode === 'browser') {
        render(
          box,
          `<ol class="steps">
            <li>Open <a href="${esc(v.authorize_url)}" target="_blank" rel="noopener noreferrer" data-testid="browser-authorize-link">the ChatGPT sign-in page</a>
              and sign in.${codeBlock(v.authorize_url || '', { label: 'Copy link' })}</li>
            <li>${v.listening ? `This gateway listens on <code>${esc(v.redirect_uri || '')}</code> and finishes by itself. If your browser
              is on another machine, paste` : 'Paste'} the address your browser ends on:
              <form class="inline-form" data-complete>
                <input name="callback_url" type="url" required placeholder="${esc(v.redirect_uri || 'http://localhost:1455/auth/callback')}?code=…" data-testid="browser-callback-url" autocomplete="off">
                <button type="submit" class="btn btn-primary" data-testid="browser-complete">Finish</button>
              </form>
              <div class="form-error" role="alert"></div></li>
          </ol>
          <div data-status>${statusLine(v)}</div>
          <p class="muted small">Expires ${esc(fmtRel(v.expires_at))}.</p>`,
        );
      } else {
        render(
          box,
          `<div class="device-code"><div class="muted small">Your code</div>
            <div class="user-code" data-testid="device-user-code">${esc(v.user_code || '')}</div>
            <button type="button" class="btn btn-small" data-copy data-copy-text="${esc(v.user_code || '')}">Copy code</button></div>
           <p>Open <a href="${esc(v.verification_url)}" target="_blank" rel="noopener noreferrer" data-testid="device-link">${esc(v.verification_url)}</a>,
             enter the code and approve.</p>
           <div data-status>${statusLine(v)}</div>
           <p class="muted small">The code expires ${esc(fmtRel(v.expires_at))}.</p>`,
        );
      }
      flow.timer = setTimeout(() => poll(mode), 2000);
    } catch (e) {
      const retry =
        mode === 'browser' && listen
          ? `<p>You can still sign in without the listener and paste the final address back.</p>
             <button type="button" class="btn" data-nolisten>Start without the listener</button>`
          : '';
      render(box, `<div class="error-box">${esc(e.message)}</div>${retry}`);
      const b = $('[data-nolisten]', box);
      if (b) b.addEventListener('click', () => start('browser', false));
    }
  };
  el.addEventListener('click', (e) => {
    const b = e.target.closest('[data-start]');
    if (b) start(b.dataset.start);
  });
  el.addEventListener('submit', async (e) => {
    const form = e.target;
    e.preventDefault();
    if (form.matches('[data-complete]')) {
      if (!flow) return;
      const errEl = form.parentElement.querySelector('.form-error');
      errEl.textContent = '';
      const btn = $('button', form);
      btn.disabled = true;
      try {
        const v = await api('POST', `/api/accounts/login/${encodeURIComponent(flow.id)}/complete`, {
          callback_url: String(new FormData(form).get('callback_url')).trim(),
        });
        render($('[data-flow="browser"] [data-status]', el), statusLine(v));
        if (v.status === 'complete') {
          flow.final = true;
          toast(v.created ? 'Account added' : 'Account updated');
          onAdded();
        }
      } catch (err) {
        errEl.textContent = err.message;
      } finally {
        btn.disabled = false;
      }
    } else if (form.matches('[data-upload]')) {
      await busy(form, async () => {
        const fd = new FormData(form);
        const file = fd.get('file');
        let text = String(fd.get('text') || '').trim();
        if (file && file.size) text = await file.text();
        if (!text) throw new Error('Choose a file or paste its text');
        const r = await api('POST', '/api/accounts/import', text);
        const who = (r.account && (r.account.email || r.account.id)) || 'the account';
        toast(r.created ? `Added ${who}` : `Updated ${who}`);
        form.reset();
        onAdded();
        m.close();
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------
// API keys

const KINDS = [
  ['total_tokens', 'Total tokens'],
  ['input_tokens', 'Input tokens'],
  ['output_tokens', 'Output tokens'],
  ['cost_usd', 'Cost (USD)'],
];
const WINDOWS = [
  ['5h', '5 hours'],
  ['daily', 'Daily'],
  ['weekly', 'Weekly'],
  ['monthly', 'Monthly'],
];
const EFFORTS = ['none', 'minimal', 'low', 'medium', 'high', 'xhigh'];
const kindName = (k) => (KINDS.find(([v]) => v === k) || [k, titleCase(k)])[1];
const windowLabel = (w) => (WINDOWS.find(([v]) => v === w) || [w, w])[1];
const limitVal = (kind, v) => (kind === 'cost_usd' ? fmtUsd(v) : fmtNum(v));

function limitRow(l = {}) {
  return `<div class="limit-row" data-limit>
    <select name="kind" aria-label="Kind" data-testid="limit-kind">${KINDS.map(([v, t]) => `<option value="${v}"${l.kind === v ? ' selected' : ''}>${t}</option>`).join('')}</select>
    <select name="window" aria-label="Window" data-testid="limit-window">${WINDOWS.map(([v, t]) => `<option value="${v}"${(l.window || 'daily') === v ? ' selected' : ''}>${t}</option>`).join('')}</select>
    <input name="limit" type="number" min="0" step="any" required placeholder="limit" aria-label="Limit" value="${esc(l.limit ?? '')}" data-testid="limit-value">
    <input name="model" placeholder="any model" aria-label="Model" value="${esc(l.model ?? '')}" data-testid="limit-model">
    <button type="button" class="icon-btn" data-remove-limit aria-label="Remove this limit">✕</button>
  </div>`;
}

const toDateInput = (secs) => {
  if (!secs) return '';
  const d = new Date(secs * 1000);
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
};

/** An account's name in lists: its email, else its id. */
const accountLabel = (a) => a.email || a.id;

/**
 * The checkboxes of the accounts a key may draw from: the pool's accounts, then any id the key
 * lists that the pool does not have (so an edit keeps or drops it on purpose).
 */
function accountChecks(pool, selected) {
  const chosen = new Set(selected || []);
  const known = new Set(pool.map((a) => a.id));
  const box = (id, label, extra = '') =>
    `<label class="check"><input type="checkbox" name="account" value="${esc(id)}"${chosen.has(id) ? ' checked' : ''} data-testid="key-account"> ${esc(label)}${extra}</label>`;
  const rows = pool.map((a) => box(a.id, accountLabel(a), a.email ? ` <code class="muted small">${esc(a.id)}</code>` : ''));
  for (const id of chosen) if (!known.has(id)) rows.push(box(id, id, ' <span class="muted small">(not in the pool)</span>'));
  return rows.length ? rows.join('') : '<span class="muted small">No accounts in the pool yet.</span>';
}

/** The fields of a key (create and edit share them); `pool`: the accounts to offer. */
function keyFields(k = {}, { create, pool = [] }) {
  const efforts = new Set(k.allowed_efforts || []);
  return `<div class="form-grid">
      <label>Name<input name="name" required maxlength="100" value="${esc(k.name ?? '')}" placeholder="e.g. alice-laptop" ${create ? 'data-testid="key-name"' : 'data-testid="key-edit-name"'}></label>
      <label>Expires<input name="expires_at" type="datetime-local" value="${esc(toDateInput(k.expires_at))}" data-testid="key-expires"></label>
      <label>Max open streams<input name="max_streams" type="number" min="1" step="1" placeholder="no limit" value="${esc(k.max_streams ?? '')}" data-testid="key-max-streams"></label>
      <label>Requests / min<input name="requests_per_minute" type="number" min="1" step="1" placeholder="no limit" value="${esc(k.requests_per_minute ?? '')}" data-testid="key-rpm"></label>
      <label class="span-2">Allowed models<input name="allowed_models" placeholder="all models (or a comma-separated list)" value="${esc((k.allowed_models || []).join(', '))}" data-testid="key-models"></label>
    </div>
    <fieldset class="efforts"><legend>Allowed reasoning efforts <span class="muted small">(none checked: all)</span></legend>
      ${EFFORTS.map((e) => `<label class="check"><input type="checkbox" name="effort" value="${e}"${efforts.has(e) ? ' checked' : ''}> ${e}</label>`).join('')}
    </fieldset>
    <fieldset data-testid="key-accounts"><legend>Accounts it may use <span class="muted small">(none checked: the whole pool)</span></legend>
      <div class="efforts" data-accounts>${accountChecks(pool, k.allowed_accounts)}</div>
    </fieldset>
    <fieldset><legend>Budgets <span class="muted small">(calendar windows in UTC; all must hold)</span></legend>
      <div data-limits>${(k.limits || []).map(limitRow).join('')}</div>
      <button type="button" class="btn btn-small" data-add-limit data-testid="key-add-limit">Add a limit</button>
    </fieldset>`;
}

function readKeyForm(form) {
  const fd = new FormData(form);
  const name = String(fd.get('name') || '').trim();
  if (!name) throw new Error('A key needs a name');
  const exp = fd.get('expires_at');
  const limits = $$('[data-limit]', form).map((row) => {
    const kind = $('[name=kind]', row).value;
    const limit = Number($('[name=limit]', row).value);
    if (!(limit > 0)) throw new Error('Each limit needs a positive number');
    const model = $('[name=model]', row).value.trim();
    return { kind, window: $('[name=window]', row).value, limit, model: model || null };
  });
  return {
    name,
    expires_at: exp ? Math.floor(new Date(exp).getTime() / 1000) : null,
    limits,
    allowed_models: String(fd.get('allowed_models') || '')
      .split(/[\s,]+/)
      .map((s) => s.trim())
      .filter(Boolean),
    allowed_efforts: fd.getAll('effort').map(String),
    allowed_accounts: fd.getAll('account').map(String),
    max_streams: intOrNull(fd.get('max_streams'), 'Max open streams'),
    requests_per_minute: intOrNull(fd.get('requests_per_minute'), 'Requests / min'),
  };
}

function wireLimitButtons(scope) {
  scope.addEventListener('click', (e) => {
    if (e.target.closest('[data-add-limit]')) {
      const box = $('[data-limits]', e.target.closest('form'));
      box.insertAdjacentHTML('beforeend', limitRow());
      $('[data-limit]:last-child input[name=limit]', box).focus();
    }
    const rm = e.target.closest('[data-remove-limit]');
    if (rm) rm.closest('[data-limit]').remove();
  });
}

/** The once-only view of a key's secret, with its copy button; `done` closes it. */
function newKeyBox(r, { what, done }) {
  return `<div class="new-key" data-testid="new-key-box">
      <div class="warn-box"><b>Copy this key now.</b> It is shown only once; the gateway keeps only its hash.</div>
      <div class="code-wrap"><code class="copy-src key-text" data-testid="new-key">${esc(r.key)}</code>
        <button type="button" class="btn btn-small copy-btn" data-copy data-testid="new-key-copy">Copy</button></div>
      <p class="small muted">Key <b>${esc(r.api_key && r.api_key.name)}</b> ${what}. Use it as a Bearer token, or as
        <code>CODEX_LB_API_KEY</code> with the <a href="#/setup">Codex CLI</a>.</p>
      <button type="button" class="btn btn-small" ${done}>Done</button>
    </div>`;
}

export function keys(root) {
  const admin = isAdmin();
  render(
    root,
    `<section class="page" data-testid="page-keys">
      <div class="page-head"><h1>API keys</h1>
        <label class="check small"><input type="checkbox" data-show-revoked data-testid="keys-show-revoked"> Show revoked</label></div>
      <div data-keyauth></div>
      ${
        admin
          ? `<details class="card create-card" data-create-box open>
        <summary><h2>Create a key</h2></summary>
        <form data-create data-testid="key-create-form">
          ${keyFields({}, { create: true })}
          <div class="form-error" role="alert" data-testid="key-create-error"></div>
          <div class="form-actions"><button type="submit" class="btn btn-primary" data-testid="key-create">Create key</button></div>
        </form>
        <div data-new-key></div>
      </details>`
          : ''
      }
      <div data-list class="key-list" data-testid="keys-list"><div class="loading">Loading…</div></div>
    </section>`,
  );
  const list = $('[data-list]', root);
  let dead = false;
  let all = [];
  let usage = {};
  /** The pool's accounts ({id, email}), offered in the key forms and named on the cards. */
  let pool = [];
  const showRevoked = $('[data-show-revoked]', root);

  const accountsText = (k) => {
    const ids = k.allowed_accounts || [];
    if (!ids.length) return 'all';
    const unknown = new Set(k.unknown_accounts || []);
    return ids
      .map((id) => {
        const a = pool.find((x) => x.id === id);
        return unknown.has(id) ? `${id} (not in the pool)` : a ? accountLabel(a) : id;
      })
      .join(', ');
  };

  const keyCard = (k) => {
    const u = usage[k.id] || {};
    const active = k.status === 'active';
    const paused = k.status === 'paused';
    const limits = (k.limits || [])
      .map((l) =>
        meter({
          label: `${kindName(l.kind)} · ${windowLabel(l.window)}${l.model ? ` · ${l.model}` : ''}`,
          pct: l.limit > 0 ? (l.used / l.limit) * 100 : 0,
          text: `${limitVal(l.kind, l.used)} / ${limitVal(l.kind, l.limit)}`,
          reset: l.resets_at,
          testid: 'key-limit',
        }),
      )
      .join('');
    return `<article class="card key-card${active ? '' : ' key-inactive'}" data-testid="key-card" data-id="${esc(k.id)}">
      <div class="acc-title"><h3 class="ellipsis">${esc(k.name)}</h3><div class="acc-badges">${badge(k.status)}</div></div>
      <div class="muted small"><code>${esc(k.prefix)}…</code> · created ${esc(fmtTime(k.created_at))}${
        k.expires_at ? ` · expires ${esc(fmtTime(k.expires_at))} (<span data-reset="${esc(k.expires_at)}">${esc(fmtRel(k.expires_at))}</span>)` : ''
      }${k.revoked_at ? ` · revoked ${esc(fmtTime(k.revoked_at))}` : ''}${
        k.paused_at ? ` · paused ${esc(fmtTime(k.paused_at))}` : ''
      }</div>
      <dl class="stats">
        <div><dt>Streams open</dt><dd data-testid="key-streams">${esc(fmtInt(k.streams_open))}${k.max_streams ? ` / ${esc(k.max_streams)}` : ''}</dd></div>
        <div><dt>This minute</dt><dd>${esc(fmtInt(k.requests_this_minute))}${k.requests_per_minute ? ` / ${esc(k.requests_per_minute)} rpm` : ' requests'}</dd></div>
        <div><dt>Requests</dt><dd>${esc(fmtNum(u.requests || 0))}</dd></div>
        <div><dt>Tokens</dt><dd>${esc(fmtNum(u.total_tokens || 0))}</dd></div>
        <div><dt>Cost</dt><dd>${esc(fmtMicroUsd(u.cost_micro_usd || 0))}</dd></div>
      </dl>
      <div class="small"><span class="muted">Models:</span> ${esc((k.allowed_models || []).join(', ') || 'all')}
        · <span class="muted">Efforts:</span> ${esc((k.allowed_efforts || []).join(', ') || 'all')}
        · <span class="muted">Accounts:</span> <span data-testid="key-accounts-text">${esc(accountsText(k))}</span></div>
      ${limits ? `<div class="key-limits">${limits}</div>` : '<div class="muted small">No budgets.</div>'}
      ${
        admin && (active || paused)
          ? `<div class="acc-actions"><button type="button" class="btn btn-small" data-act="edit" data-testid="key-edit">Edit</button>
          <button type="button" class="btn btn-small" data-act="${paused ? 'resume' : 'pause'}" data-testid="key-${paused ? 'resume' : 'pause'}">${paused ? 'Resume' : 'Pause'}</button>
          <button type="button" class="btn btn-small" data-act="regenerate" data-testid="key-regenerate">Regenerate</button>
          <button type="button" class="btn btn-small btn-danger" data-act="revoke" data-testid="key-revoke">Revoke</button>
          <a class="btn btn-small" href="#/requests?key=${encodeURIComponent(k.id)}">Requests</a></div>`
          : `<div class="acc-actions"><a class="btn btn-small" href="#/requests?key=${encodeURIComponent(k.id)}">Requests</a></div>`
      }
    </article>`;
  };

  const draw = () => {
    const shown = all.filter((k) => showRevoked.checked || k.status !== 'revoked');
    const hidden = all.length - shown.length;
    render(
      list,
      (shown.length ? shown.map(keyCard).join('') : empty(all.length ? 'Every key is revoked.' : 'No keys yet.')) +
        (hidden ? `<p class="muted small center">${hidden} revoked key${hidden === 1 ? '' : 's'} hidden.</p>` : ''),
    );
  };
  const load = async () => {
    try {
      const [k, s, st, acc] = await Promise.all([
        api('GET', '/api/keys'),
        api('GET', '/api/usage/summary').catch(() => ({})),
        api('GET', '/api/settings').catch(() => null),
        api('GET', '/api/accounts').catch(() => null),
      ]);
      if (dead) return;
      // Active keys first, then paused ones, then the newest.
      const rank = (x) => (x.status === 'active' ? 0 : x.status === 'paused' ? 1 : 2);
      all = (k.keys || []).slice().sort((a, b) => rank(a) - rank(b) || (b.created_at || 0) - (a.created_at || 0));
      usage = s.by_key || {};
      if (acc) setPool((acc.accounts || []).map((a) => ({ id: a.id, email: a.email })));
      draw();
      if (st) {
        render(
          $('[data-keyauth]', root),
          st.api_key_auth
            ? ''
            : `<div class="info-box">Key auth is off: the gateway takes requests without a key, so these budgets only apply to
              clients that send one. Turn it on in <a href="#/settings">Settings</a>.</div>`,
        );
      }
    } catch (e) {
      if (!dead) render(list, `<div class="error-box">${esc(e.message)}</div>`);
    }
  };
  showRevoked.addEventListener('change', draw);

  const create = $('[data-create]', root);
  /** A new pool list: redraws the create form's account boxes when it changed, keeping the ticks. */
  const setPool = (next) => {
    const same = next.length === pool.length && next.every((a, i) => a.id === pool[i].id && a.email === pool[i].email);
    pool = next;
    const box = create && $('[data-accounts]', create);
    if (same || !box) return;
    const ticked = $$('input[name=account]:checked', box).map((i) => i.value);
    render(box, accountChecks(pool, ticked));
  };
  if (create) {
    wireLimitButtons(create);
    create.addEventListener('submit', async (e) => {
      e.preventDefault();
      await busy(create, async () => {
        const spec = readKeyForm(create);
        // Leave out what is empty, so the server's defaults apply.
        for (const f of ['expires_at', 'max_streams', 'requests_per_minute']) if (spec[f] === null) delete spec[f];
        for (const f of ['limits', 'allowed_models', 'allowed_efforts', 'allowed_accounts']) if (!spec[f].length) delete spec[f];
        const r = await api('POST', '/api/keys', spec);
        render($('[data-new-key]', root), newKeyBox(r, { what: 'created', done: 'data-dismiss-key' }));
        create.reset();
        $('[data-limits]', create).innerHTML = '';
        toast('Key created');
        names(true);
        await load();
      });
    });
    root.addEventListener('click', (e) => {
      if (e.target.closest('[data-dismiss-key]')) $('[data-new-key]', root).innerHTML = '';
    });
  }

  list.addEventListener('click', async (e) => {
    const btn = e.target.closest('button[data-act]');
    if (!btn) return;
    const id = btn.closest('[data-id]').dataset.id;
    const k = all.find((x) => x.id === id);
    if (!k) return;
    if (btn.dataset.act === 'revoke') {
      if (!(await confirmDialog(`Revoke the key “${k.name}”? Clients using it are refused from now on. This cannot be undone.`, { ok: 'Revoke' }))) return;
      try {
        await api('DELETE', `/api/keys/${encodeURIComponent(id)}`);
        toast(`Revoked ${k.name}`);
        await load();
      } catch (err) {
        toast(err.message, 'error');
      }
    } else if (btn.dataset.act === 'pause' || btn.dataset.act === 'resume') {
      const pause = btn.dataset.act === 'pause';
      try {
        await api('PATCH', `/api/keys/${encodeURIComponent(id)}`, { paused: pause });
        toast(pause ? `Paused ${k.name}: its clients are refused until you resume it` : `Resumed ${k.name}`);
        await load();
      } catch (err) {
        toast(err.message, 'error');
      }
    } else if (btn.dataset.act === 'regenerate') {
      if (
        !(await confirmDialog(
          `Regenerate the secret of “${k.name}”? The current key stops working at once; clients need the new one. Its limits and usage stay.`,
          { ok: 'Regenerate' },
        ))
      )
        return;
      try {
        const r = await api('POST', `/api/keys/${encodeURIComponent(id)}/regenerate`);
        // A secret still shown from this key's creation no longer works.
        const shown = $('[data-new-key]', root);
        if (shown) shown.innerHTML = '';
        modal(`New secret for ${k.name}`, newKeyBox(r, { what: 'has a new secret; the old one no longer works', done: 'data-close' }), {
          testid: 'key-regenerated-dialog',
        });
        toast(`New secret for ${k.name}`);
        await load();
      } catch (err) {
        toast(err.message, 'error');
      }
    } else if (btn.dataset.act === 'edit') {
      const m = modal(
        `Edit key ${k.name}`,
        `<form data-edit data-testid="key-edit-form">${keyFields(k, { create: false, pool })}
          <div class="form-error" role="alert"></div>
          <div class="form-actions"><button type="button" class="btn" data-close>Cancel</button>
            <button type="submit" class="btn btn-primary" data-testid="key-save">Save</button></div></form>`,
        { wide: true, testid: 'key-edit-dialog' },
      );
      const form = $('form', m.el);
      wireLimitButtons(form);
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        await busy(form, async () => {
          await api('PATCH', `/api/keys/${encodeURIComponent(id)}`, readKeyForm(form));
          toast('Key saved');
          m.close();
          await load();
        });
      });
    }
  });

  load();
  const timers = [setInterval(load, 10000), setInterval(() => tickCountdowns(list), 1000)];
  return () => {
    dead = true;
    timers.forEach(clearInterval);
  };
}

// ---------------------------------------------------------------------------------------------
// Settings

const STRATEGIES = [
  ['capacity_weighted', 'Capacity weighted', 'Prefer the account with the most quota left (its plan allowance times its headroom in the tighter window), in proportion.'],
  ['round_robin', 'Round robin', 'Spread requests evenly.'],
  ['fill_first', 'Fill first', 'Drain accounts one after the other, in the order they were added.'],
  ['reset_first', 'Reset first', 'Prefer the account whose window resets soonest, to use quota before it expires.'],
];

function serverFact(k, v) {
  if (v === null || v === undefined) return 'none';
  if (Array.isArray(v)) return v.length ? v.join(', ') : k === 'allow_cidrs' ? 'any address' : 'none';
  if (typeof v === 'object') return JSON.stringify(v);
  if (typeof v === 'number') {
    if (/_bytes$/.test(k)) return `${fmtInt(v)} (${fmtBytesShort(v)})`;
    if (/_secs$/.test(k)) return `${fmtInt(v)} s (${fmtDurShort(v)})`;
    if (/_days$/.test(k)) return `${fmtInt(v)} d`;
    return fmtInt(v);
  }
  return String(v);
}
const fmtBytesShort = (b) => (b >= 1 << 20 ? `${+(b / (1 << 20)).toFixed(1)} MiB` : b >= 1024 ? `${+(b / 1024).toFixed(1)} KiB` : `${b} B`);
const fmtDurShort = (s) => (s % 86400 === 0 ? `${s / 86400} d` : s % 3600 === 0 ? `${s / 3600} h` : s % 60 === 0 ? `${s / 60} m` : `${s} s`);

export function settings(root, ctx) {
  const admin = isAdmin();
  const dis = admin ? '' : ' disabled';
  render(
    root,
    `<section class="page" data-testid="page-settings">
      <div class="page-head"><h1>Settings</h1></div>
      ${admin ? '' : '<div class="info-box">You are signed in read-only (viewer). Settings are shown but cannot be changed.</div>'}
      <div class="grid-2">
        <div class="stack">
          <div class="card">
            <h2>Routing</h2>
            <form data-routing data-testid="settings-routing">
              <label>Strategy<select name="strategy" data-testid="settings-strategy"${dis}>
                ${STRATEGIES.map(([v, t]) => `<option value="${v}">${t}</option>`).join('')}</select></label>
              <p class="muted small" data-strategy-help></p>
              <label class="switch"><input type="checkbox" name="api_key_auth" data-testid="settings-key-auth"${dis}>
                <span><b>Require an API key</b><br><span class="muted small">Clients must send a <code>sk-clb-…</code> key (see <a href="#/keys">API keys</a>).</span></span></label>
              <label class="switch"><input type="checkbox" name="hide_quota_headers" data-testid="settings-hide-quota"${dis}>
                <span><b>Hide quota headers</b><br><span class="muted small">Do not pass the upstream's usage headers on to clients.</span></span></label>
              <div class="form-error" role="alert"></div>
            </form>
          </div>
          <div class="card">
            <h2>Appearance</h2>
            <label>Theme<select data-theme-select data-testid="settings-theme">
              <option value="system">Follow the system</option><option value="light">Light</option><option value="dark">Dark</option></select></label>
          </div>
        </div>
        <div class="card" data-server-card hidden>
          <h2>Server <span class="muted small">(fixed at start by flags and environment)</span></h2>
          <div data-server></div>
        </div>
      </div>
      <div data-security></div>
      ${admin ? `<div class="card" data-testid="settings-audit">
        <h2>Audit log <span class="muted small">(changes through the dashboard, the API and the CLI; newest first)</span></h2>
        <div class="table-wrap"><table class="table" data-testid="audit-table">
          <thead><tr><th>Time</th><th>Who</th><th class="hide-sm">From</th><th>What</th><th>Result</th></tr></thead>
          <tbody data-audit></tbody></table></div>
        <div data-audit-empty></div>
      </div>` : ''}
    </section>`,
  );
  let dead = false;
  if (admin) {
    api('GET', '/api/audit?limit=50')
      .then((r) => {
        if (dead) return;
        const rows = r.entries || [];
        $('[data-audit]', root).innerHTML = rows
          .map(
            (e) => `<tr data-testid="audit-row"><td class="nowrap">${esc(fmtTime(Math.floor(e.ts_ms / 1000)))}</td>
              <td>${esc(e.actor)}</td><td class="hide-sm">${esc(e.client_ip)}</td>
              <td><code>${esc(e.method)} ${esc(e.path)}</code></td>
              <td>${badge(String(e.status), e.status < 400 ? 'ok' : 'warn')}${e.error_code ? ` <span class="muted small">${esc(e.error_code)}</span>` : ''}</td></tr>`,
          )
          .join('');
        $('[data-audit-empty]', root).innerHTML = rows.length ? '' : empty('No changes recorded yet.');
      })
      .catch((e) => toast(`Audit log: ${e.message}`, 'error'));
  }
  const form = $('[data-routing]', root);
  const help = () => {
    const s = STRATEGIES.find(([v]) => v === form.strategy.value);
    $('[data-strategy-help]', root).textContent = s ? s[2] : '';
  };
  const fillRouting = (s) => {
    if (s.strategy && !STRATEGIES.some(([v]) => v === s.strategy)) form.strategy.add(new Option(titleCase(s.strategy), s.strategy));
    form.strategy.value = s.strategy;
    form.api_key_auth.checked = !!s.api_key_auth;
    form.hide_quota_headers.checked = !!s.hide_quota_headers;
    help();
    // PUT answers without the server facts: keep the ones already shown.
    if (!s.server || typeof s.server !== 'object' || !Object.keys(s.server).length) return;
    $('[data-server-card]', root).hidden = false;
    render(
      $('[data-server]', root),
      `<dl class="kv" data-testid="settings-server">${Object.entries(s.server)
        .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(serverFact(k, v))}</dd>`)
        .join('')}</dl>`,
    );
  };
  api('GET', '/api/settings')
    .then((s) => !dead && fillRouting(s))
    .catch((e) => toast(`Settings: ${e.message}`, 'error'));
  form.addEventListener('change', async (e) => {
    if (!admin) return;
    const f = e.target.name;
    const body = { [f]: e.target.type === 'checkbox' ? e.target.checked : e.target.value };
    help();
    await busy(form, async () => {
      try {
        const s = await api('PUT', '/api/settings', body);
        fillRouting(s);
        toast('Settings saved');
      } catch (err) {
        // Put the control back as the server has it.
        api('GET', '/api/settings').then(fillRouting).catch(() => {});
        throw err;
      }
    });
  });

  const theme = $('[data-theme-select]', root);
  theme.value = ctx.theme.get();
  theme.addEventListener('change', () => ctx.theme.set(theme.value));

  const sec = $('[data-security]', root);
  const drawSecurity = () => {
    const s = state.session || {};
    if (!admin) {
      render(sec, `<div class="card"><h2>Dashboard access</h2><p>Signed in as <b>viewer</b>. Ask an admin to change passwords.</p></div>`);
      return;
    }
    render(
      sec,
      `<div class="grid-2">
        <div class="card" data-testid="settings-password">
          <h2>Dashboard password</h2>
          ${
            s.password_set
              ? '<p>A password protects this dashboard.</p>'
              : `<div class="warn-box">No password is set. The dashboard only answers this machine${s.open ? ', and it is open to anyone on it' : ''}.</div>`
          }
          <form data-pw>
            ${s.password_set ? '<label>Current password<input type="password" name="current" autocomplete="current-password" required data-testid="pw-current"></label>' : ''}
            <label>New password<input type="password" name="new" minlength="8" autocomplete="new-password" required data-testid="pw-new"></label>
            <label>Repeat the new password<input type="password" name="again" minlength="8" autocomplete="new-password" required data-testid="pw-again"></label>
            <div class="form-error" role="alert" data-testid="pw-error"></div>
            <div class="form-actions"><button type="submit" class="btn btn-primary" data-testid="pw-submit">${s.password_set ? 'Change password' : 'Set password'}</button></div>
          </form>
          ${
            s.password_set
              ? `<details class="danger-zone"><summary>Remove the password</summary>
              <form data-pw-remove>
                <p class="small">Removes the password, two-factor sign-in and the viewer password. The dashboard then only answers this machine, without a login.</p>
                <label>Current password<input type="password" name="current" autocomplete="current-password" required data-testid="pw-remove-current"></label>
                <div class="form-error" role="alert"></div>
                <div class="form-actions"><button type="submit" class="btn btn-danger" data-testid="pw-remove">Remove password</button></div>
              </form></details>`
              : ''
          }
        </div>
        <div class="card" data-testid="settings-viewer">
          <h2>Viewer password</h2>
          <p class="small">A second password that signs in read-only: it sees everything and changes nothing.</p>
          ${
            !s.password_set
              ? '<p class="muted">Set the dashboard password first.</p>'
              : `<p>${s.viewer_password_set ? badge('set', 'ok') : badge('not set', 'muted')}</p>
              <form data-viewer>
                <label>${s.viewer_password_set ? 'New viewer password' : 'Viewer password'}<input type="password" name="password" minlength="8" autocomplete="new-password" required data-testid="viewer-password"></label>
                <div class="form-error" role="alert"></div>
                <div class="form-actions">
                  ${s.viewer_password_set ? '<button type="button" class="btn btn-danger" data-viewer-remove data-busy data-testid="viewer-remove">Remove</button>' : ''}
                  <button type="submit" class="btn btn-primary" data-testid="viewer-submit">${s.viewer_password_set ? 'Change' : 'Set'} viewer password</button></div>
              </form>`
          }
        </div>
        <div class="card" data-testid="settings-totp">
          <h2>Two-factor sign-in (TOTP)</h2>
          <div data-totp></div>
        </div>
      </div>`,
    );
    drawTotp();
  };
  const drawTotp = () => {
    const s = state.session || {};
    const box = $('[data-totp]', sec);
    if (!box) return;
    if (!s.password_set) {
      render(box, '<p class="muted">Set the dashboard password first.</p>');
    } else if (s.totp_enabled) {
      render(
        box,
        `<p>${badge('enabled', 'ok')} Signing in as admin asks for a code from your authenticator app.</p>
        <form data-totp-disable>
          <label>Code from your app, to turn it off<input name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,8}" required data-testid="totp-disable-code"></label>
          <div class="form-error" role="alert"></div>
          <div class="form-actions"><button type="submit" class="btn btn-danger" data-testid="totp-disable">Turn off</button></div>
        </form>`,
      );
    } else {
      render(
        box,
        `<p>${badge('off', 'muted')} Add a one-time code from an authenticator app to the admin sign-in.</p>
        <div class="form-actions form-actions-left"><button type="button" class="btn btn-primary" data-totp-start data-testid="totp-start">Set up</button></div>
        <div data-totp-enrol></div>`,
      );
    }
  };
  const refreshSession = async () => {
    try {
      const s = await api('GET', '/api/dashboard-auth/session');
      state.session = s;
      if (!s.authenticated) {
        // Removing the password from afar ends this session: back to the sign-in screen.
        if (typeof state.onUnauthorized === 'function') state.onUnauthorized();
        return;
      }
      ctx.onSession();
    } catch {
      /* keep the old one */
    }
    if (!dead) drawSecurity();
  };
  sec.addEventListener('click', async (e) => {
    if (e.target.closest('[data-totp-start]')) {
      const enrol = $('[data-totp-enrol]', sec);
      try {
        const r = await api('POST', '/api/dashboard-auth/totp/setup');
        render(
          enrol,
          `<ol class="steps">
            <li>Scan this code with your authenticator app:<div class="qr" data-qr data-testid="totp-qr"></div>
              <details><summary class="small">Cannot scan? Enter the secret</summary>${codeBlock(r.secret, { testid: 'totp-secret' })}
              <p class="small muted break">${esc(r.otpauth_uri)}</p></details></li>
            <li><form data-totp-confirm class="inline-form">
              <input name="code" inputmode="numeric" autocomplete="one-time-code" placeholder="123456" required aria-label="Code" data-testid="totp-code">
              <button type="submit" class="btn btn-primary" data-testid="totp-confirm">Confirm</button></form>
              <div class="form-error" role="alert"></div></li>
          </ol>`,
        );
        // The server made this SVG; it goes in as-is.
        $('[data-qr]', enrol).innerHTML = r.qr_svg || '';
        $('[data-totp-start]', sec).textContent = 'Start over';
      } catch (err) {
        render(enrol, `<div class="error-box">${esc(err.message)}</div>`);
      }
    }
    if (e.target.closest('[data-viewer-remove]')) {
      const form = e.target.closest('form');
      if (!(await confirmDialog('Remove the viewer password? Viewer sessions end.', { ok: 'Remove' }))) return;
      await busy(form, async () => {
        await api('DELETE', '/api/dashboard-auth/viewer-password');
        toast('Viewer password removed');
        await refreshSession();
      });
    }
  });
  sec.addEventListener('submit', async (e) => {
    const form = e.target;
    e.preventDefault();
    const fd = new FormData(form);
    if (form.matches('[data-pw]')) {
      await busy(form, async () => {
        if (fd.get('new') !== fd.get('again')) throw new Error('The two new passwords differ');
        if (String(fd.get('new')).length < 8) throw new Error('A password has at least 8 characters');
        const body = { new_password: fd.get('new') };
        if (state.session && state.session.password_set) body.current_password = fd.get('current');
        const s = await api('POST', '/api/dashboard-auth/password', body);
        if (s && typeof s.authenticated === 'boolean') state.session = s;
        toast('Password saved');
        await refreshSession();
      });
    } else if (form.matches('[data-pw-remove]')) {
      if (!(await confirmDialog('Remove the dashboard password, two-factor sign-in and the viewer password?', { ok: 'Remove' }))) return;
      await busy(form, async () => {
        await api('DELETE', '/api/dashboard-auth/password', { current_password: fd.get('current') });
        toast('Password removed');
        await refreshSession();
      });
    } else if (form.matches('[data-viewer]')) {
      await busy(form, async () => {
        if (String(fd.get('password')).length < 8) throw new Error('A password has at least 8 characters');
        await api('PUT', '/api/dashboard-auth/viewer-password', { password: fd.get('password') });
        toast('Viewer password saved');
        await refreshSession();
      });
    } else if (form.matches('[data-totp-confirm]')) {
      const errEl = form.parentElement.querySelector('.form-error');
      errEl.textContent = '';
      try {
        await api('POST', '/api/dashboard-auth/totp/confirm', { code: String(fd.get('code')).replace(/\s+/g, '') });
        toast('Two-factor sign-in is on');
        await refreshSession();
      } catch (err) {
        errEl.textContent = err.message;
      }
    } else if (form.matches('[data-totp-disable]')) {
      await busy(form, async () => {
        await api('POST', '/api/dashboard-auth/totp/disable', { code: String(fd.get('code')).replace(/\s+/g, '') });
        toast('Two-factor sign-in is off');
        await refreshSession();
      });
    }
  });
  drawSecurity();
  return () => {
    dead = true;
  };
}

export { applyWidths };
