// Drives the dashboard in headless Chromium (the system browser, through playwright-core):
// log in, create a key bound to one account, pause and resume it, regenerate its secret, send a
// request with the new one, watch it arrive on the overview live, visit every page at desktop
// and phone widths in both themes, and save a screenshot of each.
//
// Usage: node dashboard.mjs  (env: BASE_URL, PASSWORD, SHOTS_DIR, CHROMIUM, PLAYWRIGHT_CORE)
// Prints one JSON line: {"key": "...", "first_key": "...", "account": "...", "shots": [...],
// "console_errors": [...]}.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const base = process.env.BASE_URL;
const shotsDir = process.env.SHOTS_DIR;
mkdirSync(shotsDir, { recursive: true });

const PAGES = ['overview', 'accounts', 'keys', 'requests', 'settings', 'setup'];
const consoleErrors = [];
const shots = [];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
         '--no-first-run', '--disable-extensions'],
});
// Any request leaving the gateway's origin would be a CDN, a font or a tracker: none allowed.
const foreign = [];
function watch(page) {
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('request', (r) => { if (!r.url().startsWith(base) && !r.url().startsWith('data:')) foreign.push(r.url()); });
}
const tid = (id) => `[data-testid="${id}"]`;

try {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' });
  const page = await ctx.newPage();
  page.setDefaultTimeout(15000);
  watch(page);

  // Log in.
  await page.goto(base + '/');
  await page.fill(tid('login-password'), 'wrong password');
  await page.click(tid('login-submit'));
  await page.waitForFunction((sel) => (document.querySelector(sel)?.textContent || '').length > 0, tid('login-error'));
  await page.screenshot({ path: join(shotsDir, 'login.png') }); shots.push('login.png');
  // The wrong password is a 401 the page reports; it is not a page error.
  consoleErrors.length = 0;
  await page.fill(tid('login-password'), process.env.PASSWORD);
  await page.click(tid('login-submit'));
  await page.waitForSelector(tid('page-overview'));

  // Create a key that may use the pool's first account only; it is shown once.
  await page.click(tid('nav-keys'));
  await page.waitForSelector(tid('page-keys'));
  await page.fill(tid('key-name'), 'e2e-key');
  const accountBox = await page.waitForSelector(`${tid('key-create-form')} ${tid('key-account')}`);
  const account = await accountBox.getAttribute('value');
  await accountBox.check();
  await page.click(tid('key-create'));
  const keyEl = await page.waitForSelector(tid('new-key'));
  const keyText = (await keyEl.textContent()) || '';
  const firstKey = (keyText.match(/sk-clb-[A-Za-z0-9_-]+/) || [])[0];
  if (!firstKey) throw new Error('no key shown: ' + keyText);
  const card = `${tid('key-card')}:has-text("e2e-key")`;
  await page.waitForFunction(
    ([sel, id]) => [...document.querySelectorAll(sel)].some((c) => c.textContent.includes('e2e-key') && !c.textContent.includes('Accounts: all')),
    [tid('key-card'), account]);
  await page.screenshot({ path: join(shotsDir, 'keys-created.png'), fullPage: true }); shots.push('keys-created.png');

  // Pause it (the card says so and offers Resume), then resume it.
  await page.click(`${card} ${tid('key-pause')}`);
  await page.waitForSelector(`${card} ${tid('key-resume')}`);
  const badgeText = await page.textContent(`${card} .badge`);
  if (!/paused/i.test(badgeText || '')) throw new Error('paused key shows ' + badgeText);
  const paused = await fetch(base + '/backend-api/codex/responses', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + firstKey },
    body: JSON.stringify({ model: 'gpt-5.5', input: 'paused?', stream: true, store: false }),
  });
  const pausedBody = await paused.json().catch(() => ({}));
  if (paused.status !== 401 || pausedBody?.error?.code !== 'api_key_paused') {
    throw new Error('a paused key was not refused: ' + paused.status + ' ' + JSON.stringify(pausedBody));
  }
  await page.click(`${card} ${tid('key-resume')}`);
  await page.waitForSelector(`${card} ${tid('key-pause')}`);

  // Regenerate its secret: confirmed, then shown once in a dialog with a copy button.
  await page.click(`${card} ${tid('key-regenerate')}`);
  await page.click(`${tid('confirm-dialog')} ${tid('confirm-ok')}`);
  const newKeyEl = await page.waitForSelector(`${tid('key-regenerated-dialog')} ${tid('new-key')}`);
  const key = ((await newKeyEl.textContent()) || '').match(/sk-clb-[A-Za-z0-9_-]+/)?.[0];
  if (!key || key === firstKey) throw new Error('no new key shown: ' + key);
  await page.waitForSelector(`${tid('key-regenerated-dialog')} ${tid('new-key-copy')}`);
  await page.screenshot({ path: join(shotsDir, 'keys-regenerated.png'), fullPage: true }); shots.push('keys-regenerated.png');
  await page.click(`${tid('key-regenerated-dialog')} button[data-close]:has-text("Done")`);
  await page.waitForSelector(tid('key-regenerated-dialog'), { state: 'detached' });

  // The overview is open; a request made through the gateway shows up without a reload.
  await page.click(tid('nav-overview'));
  await page.waitForSelector(tid('live-requests'));
  const model = 'gpt-5.5';
  const res = await fetch(base + '/backend-api/codex/responses', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + key },
    body: JSON.stringify({
      model, instructions: 'You are Codex.', stream: true, store: false,
      input: [{ type: 'message', role: 'user', content: [{ type: 'input_text', text: 'hello from the e2e test' }] }],
    }),
  });
  const text = await res.text();
  if (res.status !== 200 || !text.includes('response.completed')) throw new Error('turn failed: ' + res.status + ' ' + text.slice(0, 300));
  await page.waitForFunction(
    ([sel, m]) => [...document.querySelectorAll(sel)].some((r) => r.textContent.includes(m) && r.textContent.includes('200')),
    [tid('live-row'), model], { timeout: 20000 });
  await page.waitForTimeout(500);

  // Every page, desktop and phone, light and dark.
  for (const [width, height, label] of [[1280, 900, 'desktop'], [375, 812, 'phone']]) {
    for (const scheme of ['light', 'dark']) {
      if (label === 'phone' && scheme === 'dark') continue;
      await page.setViewportSize({ width, height });
      await page.emulateMedia({ colorScheme: scheme });
      for (const name of PAGES) {
        await page.goto(base + '/#/' + name);
        await page.waitForSelector(tid('page-' + name));
        await page.waitForTimeout(700);
        const file = `${name}-${label}-${scheme}.png`;
        await page.screenshot({ path: join(shotsDir, file), fullPage: true });
        shots.push(file);
      }
    }
  }
  console.log(JSON.stringify({ key, first_key: firstKey, account, shots, console_errors: consoleErrors, foreign_requests: foreign }));
} finally {
  await browser.close();
}
