// The operator console in real headless Chromium (Debian's), driven by puppeteer-core: an
// operator signs in through the form, watches the status page refresh itself while the test
// changes what the gateway keeps, ends a user's sessions with the page's own button, and the
// page's origin posts an action without the CSRF token, which must be refused. One JSON report
// on the last line; screenshots in OUT.
//
// env: CONSOLE_URL, OPERATOR, OPERATOR_PASSWORD, USER (whose sessions are ended), OUT,
//      CHROMIUM (default /usr/bin/chromium). The test writes a line to stdin when it has
//      changed the gateway's state (`changed`), after the driver printed `watching`.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import puppeteer from 'puppeteer-core';

const env = process.env;
const WAIT_MS = 15000;

setTimeout(() => {
  console.error('console.mjs: gave up after 90 s');
  process.exit(2);
}, 90000).unref();

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const report = { screenshots: [] };
const consoleErrors = [];
const browser = await puppeteer.launch({
  executablePath: env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  userDataDir: mkdtempSync(join(tmpdir(), 'xsigate-console-')),
  args: [
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--window-size=1280,1000',
  ],
  defaultViewport: { width: 1280, height: 1000 },
});
const page = await browser.newPage();
page.on('console', (m) => m.type() === 'error' && consoleErrors.push(m.text()));
page.on('pageerror', (e) => consoleErrors.push(String(e)));

let shot = 0;
async function screenshot(name) {
  shot += 1;
  const file = join(env.OUT, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
}
const sessions = () => page.$eval(
  'section[data-provider] .figure',
  (figure) => Number(figure.querySelector('b').textContent),
);

try {
  await page.goto(new URL('/', env.CONSOLE_URL), { waitUntil: 'load' });
  report.redirected_to = new URL(page.url()).pathname;
  await page.type('#user', env.OPERATOR);
  await page.type('#password', env.OPERATOR_PASSWORD);
  await screenshot('sign-in');
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  report.signed_in_at = new URL(page.url()).pathname;
  report.sessions_before = await sessions();
  await screenshot('status');

  // The page refreshes itself: the test logs another session in meanwhile.
  console.log('watching');
  await lines.next();
  await page.waitForFunction(
    (before) => Number(document.querySelector('section[data-provider] .figure b').textContent) > before,
    { timeout: WAIT_MS, polling: 100 },
    report.sessions_before,
  );
  report.sessions_live = await sessions();
  report.refreshed = await page.$eval('html', (html) => Boolean(html.dataset.refreshed));
  await screenshot('refreshed');

  // An action through the page's own form and button.
  await page.type('form.actions input[name=user]', env.USER);
  await Promise.all([
    page.waitForNavigation(),
    page.click('button[formaction="/actions/end_sessions"]'),
  ]);
  report.notice = await page.$eval('.notice', (n) => n.textContent.trim());
  report.sessions_after = await sessions();
  await screenshot('sessions-ended');

  // What went wrong in the page until now; the refusal below is logged as an error too.
  report.console_errors = consoleErrors.slice();
  // The same action posted from the console's own origin without the token.
  report.without_csrf = await page.evaluate(async (user) => {
    const response = await fetch('/api/actions/end_sessions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user }),
    });
    return { status: response.status, body: await response.json() };
  }, env.USER);
  report.audit = await page.$$eval('table.audit tr td:nth-child(3)', (cells) => cells.map((c) => c.textContent));
} catch (error) {
  report.error = String(error.message ?? error);
  await screenshot('failed').catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
process.exit(report.error ? 1 : 0);
