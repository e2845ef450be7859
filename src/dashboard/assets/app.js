// codex-lb dashboard: entry point (ES module, no build step).
//
// Modules (all served from /assets/):
//   app.js     this file: session, login and first-setup screens, the header, hash routing, theme
//   api.js     api() fetch helper (CSRF, errors, 401), live feed (/api/live), formatters, esc()
//   ui.js      DOM helpers: dialogs, toasts, usage meters, badges, copy buttons
//   charts.js  SVG bar+line charts
//   pages.js   Overview, Requests, Client setup, request detail
//   manage.js  Accounts, API keys, Settings
//
// The page is served with a strict CSP: no inline scripts or styles, so nothing here writes
// style="" into markup (widths go through el.style) and every server string is escaped.

import { api, state, esc, live, isAdmin } from './api.js';
import { $, $$, render, toast, installCopyHandler } from './ui.js';
import { overview, requests, setup } from './pages.js';
import { accounts, keys, settings } from './manage.js';

const app = document.getElementById('app');

// ---------------------------------------------------------------------------------------------
// Theme: follows prefers-color-scheme unless the person chose one (stored in localStorage).

const THEME_KEY = 'codex-lb-theme';
const media = window.matchMedia('(prefers-color-scheme: dark)');
const theme = {
  get() {
    try {
      const t = localStorage.getItem(THEME_KEY);
      return t === 'light' || t === 'dark' ? t : 'system';
    } catch {
      return 'system';
    }
  },
  effective() {
    const t = theme.get();
    return t === 'system' ? (media.matches ? 'dark' : 'light') : t;
  },
  set(t) {
    try {
      if (t === 'light' || t === 'dark') localStorage.setItem(THEME_KEY, t);
      else localStorage.removeItem(THEME_KEY);
    } catch {
      /* private mode: this page only */
    }
    theme.apply();
  },
  apply() {
    const t = theme.get();
    if (t === 'system') document.documentElement.removeAttribute('data-theme');
    else document.documentElement.dataset.theme = t;
    const eff = theme.effective();
    for (const b of $$('[data-theme-toggle]')) {
      b.textContent = eff === 'dark' ? '☀' : '☾';
      b.title = eff === 'dark' ? 'Switch to the light theme' : 'Switch to the dark theme';
      b.setAttribute('aria-label', b.title);
    }
    const sel = $('[data-theme-select]');
    if (sel) sel.value = t;
  },
  toggle() {
    theme.set(theme.effective() === 'dark' ? 'light' : 'dark');
  },
};
media.addEventListener('change', () => theme.apply());
theme.apply();

// ---------------------------------------------------------------------------------------------
// Routing

const PAGES = {
  overview: { title: 'Overview', mount: overview },
  accounts: { title: 'Accounts', mount: accounts },
  keys: { title: 'API keys', mount: keys },
  requests: { title: 'Requests', mount: requests },
  settings: { title: 'Settings', mount: settings },
  setup: { title: 'Client setup', mount: setup },
};

function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [name, query] = h.split('?');
  return { name: PAGES[name] ? name : 'overview', known: !!PAGES[name] || name === '', params: new URLSearchParams(query || '') };
}

let cleanup = null;
let shellShown = false;
let liveDotWired = false;

function unmount() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
  }
  cleanup = null;
}

function route() {
  if (!shellShown) return;
  const r = parseHash();
  if (!r.known) {
    history.replaceState(null, '', '#/overview');
  }
  unmount();
  for (const a of $$('.nav a')) a.setAttribute('aria-current', a.dataset.page === r.name ? 'page' : 'false');
  document.title = `${PAGES[r.name].title} · codex-lb`;
  const main = $('#main');
  main.textContent = '';
  const root = document.createElement('div');
  main.append(root);
  // Close any dialog a page left open.
  for (const d of $$('dialog[open]')) d.close();
  try {
    cleanup = PAGES[r.name].mount(root, { params: r.params, theme, onSession: drawChrome }) || null;
  } catch (e) {
    console.error(e);
    render(root, `<div class="error-box">This page failed to load: ${esc(e.message)}</div>`);
  }
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
}
window.addEventListener('hashchange', route);

// ---------------------------------------------------------------------------------------------
// The shell: header, banner, main.

const NAV = [
  ['overview', 'Overview'],
  ['accounts', 'Accounts'],
  ['keys', 'API keys'],
  ['requests', 'Requests'],
  ['settings', 'Settings'],
  ['setup', 'Client setup'],
];

function showShell() {
  render(
    app,
    `<header class="top">
      <div class="top-inner">
        <a class="brand" href="#/overview" aria-label="codex-lb overview"><img src="/assets/favicon.svg" alt="" width="24" height="24"><span>codex-lb</span></a>
        <nav class="nav" aria-label="Main">${NAV.map(
          ([p, t]) => `<a href="#/${p}" data-page="${p}" data-testid="nav-${p}">${t}</a>`,
        ).join('')}</nav>
        <div class="top-right">
          <span class="live-dot" data-live-dot data-testid="live-status" title="Live feed"></span>
          <span class="badge" data-role data-testid="role"></span>
          <button type="button" class="icon-btn" data-theme-toggle data-testid="theme-toggle"></button>
          <button type="button" class="btn btn-small" data-logout data-testid="logout">Log out</button>
        </div>
      </div>
    </header>
    <div data-banner></div>
    <main id="main" tabindex="-1"></main>`,
  );
  shellShown = true;
  $('[data-theme-toggle]').addEventListener('click', () => theme.toggle());
  $('[data-logout]').addEventListener('click', logout);
  if (!liveDotWired) {
    liveDotWired = true;
    live.onStatus((s) => {
      const dot = $('[data-live-dot]');
      if (!dot) return;
      dot.dataset.state = s;
      dot.title = { live: 'Live feed connected', connecting: 'Connecting to the live feed…', retrying: 'Live feed interrupted; reconnecting…', off: 'Live feed off' }[s] || s;
    });
  } else {
    $('[data-live-dot]').dataset.state = live.status;
  }
  drawChrome();
  theme.apply();
  live.start();
  route();
}

/** The parts of the header that depend on the session. */
function drawChrome() {
  const s = state.session || {};
  document.body.classList.toggle('role-viewer', s.role === 'viewer');
  const role = $('[data-role]');
  if (role) {
    role.textContent = s.open ? 'admin · open' : s.role || '';
    role.className = `badge ${s.role === 'admin' ? 'badge-accent' : 'badge-info'}`;
  }
  const logoutBtn = $('[data-logout]');
  // With no password there is nothing to log out of.
  if (logoutBtn) logoutBtn.hidden = !!s.open;
  const banner = $('[data-banner]');
  if (banner) {
    render(
      banner,
      s.open
        ? `<div class="banner" data-testid="open-banner">Open to this machine without a password — ${
            isAdmin() ? '<a href="#/settings">set one in Settings</a>' : 'set one in Settings'
          }.</div>`
        : '',
    );
  }
}

async function logout() {
  try {
    await api('POST', '/api/dashboard-auth/logout', {}, { noAuthRedirect: true });
  } catch (e) {
    if (e.status !== 401) toast(e.message, 'error');
  }
  live.stop();
  await boot();
}

// ---------------------------------------------------------------------------------------------
// Login and first setup

function leaveShell() {
  unmount();
  shellShown = false;
  live.stop();
  for (const d of $$('dialog[open]')) d.close();
}

function authCard(inner) {
  return `<div class="auth-screen">
    <div class="auth-card card">
      <div class="auth-brand"><img src="/assets/favicon.svg" alt="" width="36" height="36"><div><h1>codex-lb</h1>
        <div class="muted small">Gateway dashboard</div></div>
        <button type="button" class="icon-btn auth-theme" data-theme-toggle data-testid="theme-toggle"></button></div>
      ${inner}
    </div></div>`;
}

function showLogin(message) {
  leaveShell();
  render(
    app,
    authCard(`<form data-login data-testid="login-form" novalidate>
      <label>Password<input type="password" name="password" autocomplete="current-password" required autofocus data-testid="login-password"></label>
      <label data-code-row hidden>Code from your authenticator app<input name="totp_code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]*" data-testid="login-code"></label>
      <div class="form-error" role="alert" data-testid="login-error">${esc(message || '')}</div>
      <button type="submit" class="btn btn-primary btn-block" data-testid="login-submit">Sign in</button>
      <p class="muted small">The admin password or the read-only viewer password.</p>
    </form>`),
  );
  theme.apply();
  document.title = 'Sign in · codex-lb';
  const form = $('[data-login]');
  const codeRow = $('[data-code-row]');
  const errEl = $('[data-testid="login-error"]');
  $('[data-theme-toggle]').addEventListener('click', () => theme.toggle());
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const password = String(fd.get('password') || '');
    const code = String(fd.get('totp_code') || '').replace(/\s+/g, '');
    if (!password) {
      errEl.textContent = 'Enter the password.';
      return;
    }
    const body = { password };
    if (!codeRow.hidden && code) body.totp_code = code;
    const btn = $('[data-testid="login-submit"]');
    btn.disabled = true;
    errEl.textContent = '';
    try {
      const s = await api('POST', '/api/dashboard-auth/login', body, { noAuthRedirect: true });
      state.session = s && typeof s.authenticated === 'boolean' ? s : await fetchSession();
      if (!state.session.authenticated) throw new Error('The server did not start a session.');
      enter();
    } catch (err) {
      if (err.code === 'totp_required' || err.code === 'invalid_totp') {
        const first = codeRow.hidden;
        codeRow.hidden = false;
        $('[name=totp_code]', form).focus();
        errEl.textContent = err.code === 'totp_required' && first ? 'Enter the code from your authenticator app.' : err.message;
      } else {
        errEl.textContent = err.message;
      }
    } finally {
      btn.disabled = false;
    }
  });
}

function showBootstrap() {
  leaveShell();
  render(
    app,
    authCard(`<form data-bootstrap data-testid="bootstrap-form">
      <h2>First setup</h2>
      <p class="small">This gateway answers more than this machine, so the dashboard needs a password. Enter the
        one-time setup token from <code>dashboard-bootstrap.token</code> in the gateway's data directory,
        and choose the admin password.</p>
      <label>Setup token<input name="token" autocomplete="off" spellcheck="false" required autofocus data-testid="bootstrap-token"></label>
      <label>New password<input type="password" name="password" minlength="8" autocomplete="new-password" required data-testid="bootstrap-password"></label>
      <label>Repeat it<input type="password" name="again" minlength="8" autocomplete="new-password" required data-testid="bootstrap-again"></label>
      <div class="form-error" role="alert" data-testid="bootstrap-error"></div>
      <button type="submit" class="btn btn-primary btn-block" data-testid="bootstrap-submit">Set password and sign in</button>
    </form>`),
  );
  theme.apply();
  document.title = 'First setup · codex-lb';
  $('[data-theme-toggle]').addEventListener('click', () => theme.toggle());
  const form = $('[data-bootstrap]');
  const errEl = $('[data-testid="bootstrap-error"]');
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const fd = new FormData(form);
    const pw = String(fd.get('password') || '');
    errEl.textContent = '';
    if (pw.length < 8) {
      errEl.textContent = 'A password has at least 8 characters.';
      return;
    }
    if (pw !== fd.get('again')) {
      errEl.textContent = 'The two passwords differ.';
      return;
    }
    const btn = $('[data-testid="bootstrap-submit"]');
    btn.disabled = true;
    try {
      const s = await api(
        'POST',
        '/api/dashboard-auth/password',
        { new_password: pw, bootstrap_token: String(fd.get('token') || '').trim() },
        { noAuthRedirect: true },
      );
      state.session = s && typeof s.authenticated === 'boolean' && s.authenticated ? s : await fetchSession();
      if (state.session.authenticated) enter();
      else showLogin('Password set. Sign in with it.');
    } catch (err) {
      errEl.textContent = err.message;
    } finally {
      btn.disabled = false;
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Boot

async function fetchSession() {
  return api('GET', '/api/dashboard-auth/session', undefined, { noAuthRedirect: true });
}

function enter() {
  if (!location.hash || !parseHash().known) history.replaceState(null, '', '#/overview');
  showShell();
}

let rechecking = false;
state.onUnauthorized = async () => {
  // A 401 can also mean a wrong password in a form; only leave when the session is gone.
  if (rechecking) return;
  rechecking = true;
  try {
    const s = await fetchSession();
    if (s.authenticated) {
      state.session = s;
      return;
    }
    state.session = s;
    if (s.bootstrap_required) showBootstrap();
    else showLogin('Your session ended. Sign in again.');
  } catch {
    showLogin('Your session ended. Sign in again.');
  } finally {
    rechecking = false;
  }
};

async function boot() {
  let s;
  try {
    s = await fetchSession();
  } catch (e) {
    render(
      app,
      authCard(`<div class="error-box" data-testid="boot-error">${esc(e.message)}</div>
        <button type="button" class="btn btn-primary btn-block" data-retry>Try again</button>`),
    );
    theme.apply();
    $('[data-retry]').addEventListener('click', boot);
    return;
  }
  state.session = s;
  if (s.bootstrap_required && !s.authenticated) showBootstrap();
  else if (!s.authenticated) showLogin();
  else enter();
}

installCopyHandler();
boot();
