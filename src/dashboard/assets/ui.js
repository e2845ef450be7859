// ui.js: small DOM helpers shared by the pages: toasts, dialogs, meters (usage bars), badges,
// copy buttons and the one place that turns data-w attributes into widths (the CSP forbids
// style="" in markup, so widths are set through the CSSOM).

import { esc, fmtRel, titleCase } from './api.js';

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Sets the widths of every [data-w] element under root (percent, clamped to 0–100). */
export function applyWidths(root) {
  for (const el of $$('[data-w]', root)) {
    const w = Math.max(0, Math.min(100, parseFloat(el.dataset.w) || 0));
    el.style.width = `${w}%`;
  }
  for (const el of $$('[data-l]', root)) {
    const l = Math.max(0, Math.min(100, parseFloat(el.dataset.l) || 0));
    el.style.left = `${l}%`;
  }
}

/** Renders an HTML string into el and applies widths. */
export function render(el, html) {
  el.innerHTML = html;
  applyWidths(el);
  return el;
}

export function level(pct) {
  if (pct === null || pct === undefined) return 'none';
  if (pct >= 90) return 'crit';
  if (pct >= 70) return 'warn';
  return 'ok';
}

/**
 * A usage bar: label, the bar, the value and a reset countdown (an element with data-reset that
 * the page's one-second timer updates). `cap` draws a marker where the owner capped the window.
 */
export function meter({ label, pct, text, reset, cap, testid }) {
  const has = pct !== null && pct !== undefined && !Number.isNaN(+pct);
  const p = has ? Math.max(0, Math.min(100, +pct)) : 0;
  const capMark =
    cap !== null && cap !== undefined
      ? `<span class="meter-cap" data-l="${esc(cap)}" title="cap ${esc(cap)} %"></span>`
      : '';
  return `<div class="meter-row"${testid ? ` data-testid="${esc(testid)}"` : ''}>
    <div class="meter-head"><span class="meter-label">${esc(label)}</span>
      <span class="meter-val">${has ? esc(text ?? `${Math.round(p)} %`) : 'no data'}</span></div>
    <div class="meter" role="meter" aria-label="${esc(label)}" aria-valuemin="0" aria-valuemax="100"
      aria-valuenow="${has ? p.toFixed(0) : 0}"><span class="meter-fill lvl-${has ? level(p) : 'none'}" data-w="${p}"></span>${capMark}</div>
    ${reset ? `<div class="meter-reset muted">resets <span data-reset="${esc(reset)}">${esc(fmtRel(reset))}</span></div>` : ''}
  </div>`;
}

/** Updates every countdown under root (call each second). */
export function tickCountdowns(root) {
  for (const el of $$('[data-reset]', root)) {
    const t = +el.dataset.reset;
    el.textContent = fmtRel(t);
  }
}

const BADGE = {
  active: 'ok',
  completed: 'ok',
  paused: 'muted',
  reauth_required: 'crit',
  deactivated: 'crit',
  revoked: 'crit',
  expired: 'warn',
  failed: 'crit',
  cancelled: 'warn',
  blocked: 'warn',
  error: 'crit',
};

export function badge(text, kind) {
  const k = kind || BADGE[text] || 'muted';
  return `<span class="badge badge-${esc(k)}">${esc(titleCase(text))}</span>`;
}

export function statusBadge(status) {
  const k = status >= 500 ? 'crit' : status === 429 ? 'warn' : status >= 400 ? 'warn' : 'ok';
  return `<span class="badge badge-${k}">${esc(status)}</span>`;
}

let toastBox = null;
/** A short message in the corner; kind: ok | error | info. */
export function toast(msg, kind = 'ok') {
  if (!toastBox) {
    toastBox = document.createElement('div');
    toastBox.className = 'toasts';
    toastBox.setAttribute('role', 'status');
    toastBox.setAttribute('aria-live', 'polite');
    document.body.append(toastBox);
  }
  // Above an open modal too: a popover sits in the top layer, and showing it again puts it on top.
  if (typeof toastBox.showPopover === 'function') {
    if (!toastBox.hasAttribute('popover')) toastBox.setAttribute('popover', 'manual');
    try {
      if (toastBox.matches(':popover-open')) toastBox.hidePopover();
      toastBox.showPopover();
    } catch {
      /* not supported: stays under the dialog's backdrop */
    }
  }
  const t = document.createElement('div');
  t.className = `toast toast-${kind}`;
  t.dataset.testid = 'toast';
  t.textContent = msg;
  toastBox.append(t);
  setTimeout(() => t.classList.add('toast-out'), kind === 'error' ? 6000 : 3000);
  setTimeout(() => t.remove(), kind === 'error' ? 6500 : 3500);
}

/**
 * A modal dialog. `body` is an HTML string or a node. Returns { el, body, close, closed }.
 * `closed` resolves when the dialog goes away (by button, Escape or close()).
 */
export function modal(title, body, { wide = false, testid } = {}) {
  const dlg = document.createElement('dialog');
  dlg.className = `modal${wide ? ' modal-wide' : ''}`;
  if (testid) dlg.dataset.testid = testid;
  dlg.innerHTML = `<div class="modal-head"><h2>${esc(title)}</h2>
    <button type="button" class="icon-btn" data-close aria-label="Close">✕</button></div>
    <div class="modal-body"></div>`;
  const bodyEl = $('.modal-body', dlg);
  if (typeof body === 'string') render(bodyEl, body);
  else if (body) bodyEl.append(body);
  document.body.append(dlg);
  let resolve;
  const closed = new Promise((r) => (resolve = r));
  const close = () => {
    if (dlg.open) dlg.close();
  };
  dlg.addEventListener('close', () => {
    dlg.remove();
    resolve();
  });
  dlg.addEventListener('click', (e) => {
    if (e.target.closest('[data-close]')) close();
    // A click on the backdrop (the dialog box itself, outside its content) closes it.
    if (e.target === dlg) {
      const r = dlg.getBoundingClientRect();
      const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
      if (!inside) close();
    }
  });
  dlg.showModal();
  return { el: dlg, body: bodyEl, close, closed };
}

/** Asks to confirm; resolves true or false. */
export function confirmDialog(text, { ok = 'Confirm', danger = true } = {}) {
  return new Promise((resolve) => {
    let answer = false;
    const m = modal(
      'Please confirm',
      `<p>${esc(text)}</p><div class="form-actions">
        <button type="button" class="btn" data-close>Cancel</button>
        <button type="button" class="btn ${danger ? 'btn-danger' : 'btn-primary'}" data-ok data-testid="confirm-ok">${esc(ok)}</button></div>`,
      { testid: 'confirm-dialog' },
    );
    $('[data-ok]', m.el).addEventListener('click', () => {
      answer = true;
      m.close();
    });
    m.closed.then(() => resolve(answer));
    $('[data-ok]', m.el).focus();
  });
}

/** Copies text to the clipboard (with a fallback for pages not in a secure context). */
export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    /* fall back */
  }
  const ta = document.createElement('textarea');
  ta.value = text;
  ta.setAttribute('readonly', '');
  ta.className = 'offscreen';
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

/** A code block with a copy button; the button copies the block's text. */
export function codeBlock(text, { testid, label = 'Copy' } = {}) {
  return `<div class="code-wrap"><pre class="code${label.length > 5 ? ' code-wide-btn' : ''}"${testid ? ` data-testid="${esc(testid)}"` : ''}><code>${esc(text)}</code></pre>
    <button type="button" class="btn btn-small copy-btn" data-copy>${esc(label)}</button></div>`;
}

/** One handler for every [data-copy] button: copies the text of the sibling <pre> or data-copy-text. */
export function installCopyHandler() {
  document.addEventListener('click', async (e) => {
    const btn = e.target.closest('[data-copy]');
    if (!btn) return;
    let text = btn.dataset.copyText;
    if (text === undefined) {
      const wrap = btn.closest('.code-wrap');
      const src = wrap && $('pre, code, .copy-src', wrap);
      text = src ? src.textContent : '';
    }
    const ok = await copyText(text);
    const old = btn.textContent;
    btn.textContent = ok ? 'Copied' : 'Copy failed';
    setTimeout(() => (btn.textContent = old), 1500);
  });
}

/** Disables a form's submit button while `fn` runs and shows its error in the form. */
export async function busy(form, fn) {
  const btns = $$('button[type=submit], button[data-busy]', form);
  btns.forEach((b) => (b.disabled = true));
  const errEl = $('.form-error', form);
  if (errEl) errEl.textContent = '';
  try {
    return await fn();
  } catch (e) {
    if (errEl) errEl.textContent = e.message || String(e);
    else toast(e.message || String(e), 'error');
    return undefined;
  } finally {
    btns.forEach((b) => (b.disabled = false));
  }
}

/** Empty state text. */
export const empty = (text) => `<div class="empty">${esc(text)}</div>`;

/** Offers text as a file download. */
export function download(name, text, type = 'application/json') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
