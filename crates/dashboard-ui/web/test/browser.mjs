// The dashboard in a real browser (Debian's Chromium, driven by
// playwright-core) against a running `ben up --demo`. Run by
// crates/ben/tests/dashboard_browser.rs, which starts Ben, stages a
// version and hands over:
//   BEN_LOGIN        the one-time login link `ben up` printed
//   BEN_BASE         the API's base URL
//   BEN_TOKEN        the API token (the deploy needs it: a browser session only reads)
//   BEN_VERSION      that version
//   BEN_SCREENSHOTS  where the screenshots go
//   CHROMIUM         the browser (default /usr/bin/chromium)
// Exits 0 when every check held; otherwise prints what failed and exits 1.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set (see the head of test/browser.mjs)`);
  return v;
};
const login = env('BEN_LOGIN');
const base = env('BEN_BASE');
const token = env('BEN_TOKEN');
const version = env('BEN_VERSION');
const shots = env('BEN_SCREENSHOTS');
mkdirSync(shots, { recursive: true });

const say = (m) => console.log(`browser: ${m}`);
const check = (ok, what) => {
  if (!ok) throw new Error(`check failed: ${what}`);
  say(`ok: ${what}`);
};

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let code = 0;
try {
  // Without the link: the page asks to log in, no data shows.
  const stranger = await browser.newPage();
  await stranger.goto(`${base}/`);
  await stranger.waitForSelector('[data-testid=login-needed]', { timeout: 10_000 });
  check(true, 'a browser without a session is asked to log in');
  const direct = await stranger.request.get(`${base}/api/dashboard/overview`);
  check(direct.status() === 401, `the overview without a session answers 401 (got ${direct.status()})`);

  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (e) => { console.error(`browser: page error: ${e.message}`); code = 1; });
  await page.goto(login);
  check(new URL(page.url()).pathname === '/', 'the login link lands on the dashboard');
  const again = await stranger.request.get(login, { maxRedirects: 0 });
  check(again.status() === 401, 'the login link works once');

  // The overview, updating live while the demo runs.
  await page.waitForSelector('[data-testid=records-total]', { timeout: 15_000 });
  await page.waitForFunction(() => document.querySelector('[data-testid=live]')?.textContent === 'live', null, { timeout: 10_000 });
  const read = () => page.evaluate(() => ({
    updated: document.querySelector('[data-testid=updated]')?.textContent,
    records: document.querySelector('[data-testid=records-total]')?.parentElement?.querySelector('.sub')?.textContent,
  }));
  const first = await read();
  await page.waitForFunction((before) => {
    const u = document.querySelector('[data-testid=updated]')?.textContent;
    const r = document.querySelector('[data-testid=records-total]')?.parentElement?.querySelector('.sub')?.textContent;
    return u !== before.updated && r !== before.records;
  }, first, { timeout: 15_000 });
  const later = await read();
  check(true, `the overview updates live (${first.records} → ${later.records})`);
  await page.waitForFunction(() => (document.querySelector('[data-testid=chart-records] path')?.getAttribute('d') || '').split('L').length > 8, null, { timeout: 15_000 });
  const height = Number((await page.textContent('[data-testid=chain-height]')).replace(/,/g, ''));
  check(height >= 1, `the chain height shows (${height})`);
  const rows = await page.locator('[data-testid=components] tbody tr').count();
  check(rows >= 5, `the components show with their health (${rows})`);
  await page.screenshot({ path: join(shots, 'overview.png'), fullPage: true });

  // One blocked attacker, from anomaly to ack.
  await page.click('nav a[data-view=security]');
  const attacker = page.locator('[data-testid=attacker]', { hasText: '203.0.113.66' });
  await attacker.first().waitFor({ timeout: 20_000 });
  check(true, 'the blocked attacker 203.0.113.66 is listed');
  await attacker.first().click();
  await page.waitForSelector('[data-testid=timeline] li[data-step=ack]', { timeout: 15_000 });
  const steps = await page.$$eval('[data-testid=timeline] li', (lis) => lis.map((li) => li.dataset.step));
  const want = ['flows', 'detected', 'published', 'admitted', 'committed', 'policy', 'ack', 'feedback'];
  check(want.every((s) => steps.includes(s)), `the timeline runs flow → anomaly → block → policy → ack → feedback (${steps.join(' → ')})`);
  const ack = await page.textContent('[data-testid=timeline] li[data-step=ack]');
  check(/enforcer-1 applied/.test(ack), `the ack names the agent that applied it (${ack.trim()})`);
  await page.screenshot({ path: join(shots, 'security-path.png'), fullPage: true });

  // A deploy, finalizing component by component.
  await page.click('nav a[data-view=intent]');
  await page.waitForSelector('[data-testid=deploy-phase]', { timeout: 10_000 });
  // The session cannot deploy (it only reads); the token can.
  const refused = await page.request.post(`${base}/api/v1/deploy`, { data: { version } });
  check(refused.status() === 401, `a browser session cannot deploy (got ${refused.status()})`);
  const r = await fetch(`${base}/api/v1/deploy`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ version }),
  });
  check(r.status === 202, `the deploy of ${version} was accepted (${r.status} ${await r.text()})`);
  await page.waitForFunction((v) => {
    const t = document.querySelector('[data-testid=deploy-phase]')?.textContent || '';
    return t.startsWith(`${v}:`) && t.includes('finalized');
  }, version, { timeout: 30_000 });
  const log = await page.$$eval('[data-testid=deploy-log] li', (lis) => lis.map((li) => li.textContent));
  const comps = await page.$$eval('[data-testid=deploy-components] [data-component]', (els) => els.map((e) => [e.dataset.component, e.textContent]));
  check(comps.length >= 5 && comps.every(([, s]) => s === 'active'), `every required component is active (${comps.length})`);
  const times = await page.$$eval('[data-testid=deploy-components] tbody tr', (trs) => trs.map((tr) => [
    tr.querySelector('[data-prepared]')?.textContent, tr.querySelector('[data-active]')?.textContent]));
  check(times.every(([p, a]) => /^\+/.test(p) && /^\+/.test(a)), `each component shows when it prepared and when it activated (${JSON.stringify(times)})`);
  const activeLines = comps.map(([id]) => log.find((l) => l.includes(` ${id} `) && l.includes('→ active')));
  check(activeLines.every(Boolean), 'the live log shows each component switching to active');
  check(log.some((l) => l.includes(`${version}: finalized`)), 'the live log shows the deploy finalized');
  await page.screenshot({ path: join(shots, 'deploy.png'), fullPage: true });

  // Lucius search.
  await page.goto(`${base}/#/search?limit=5`);
  await page.waitForFunction(() => /found/.test(document.querySelector('[data-testid=search-results]')?.textContent || ''), null, { timeout: 15_000 });
  check(true, 'Lucius search answers');
} catch (e) {
  console.error(`browser: ${e.stack || e}`);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
