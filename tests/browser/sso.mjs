// The single-sign-on browser driver: real headless Chromium (Debian's), driven by
// puppeteer-core, signs in through the reference dialer with a single-sign-on method, on the
// identity provider's own forms, and reads its own profile; then tries an address no
// BroadWorks user has. It watches everything the browser held on the way — each address the
// tab showed, every response body, storage and the cookies a script can read — and prints one
// JSON report. tests/suites/sso.rs starts the world, runs this, and asserts on the report.
//
// env: DIALER_URL, METHOD (o365 | onelogin | saml), LOGIN, IDP_PASSWORD (default any),
//      REFUSED_LOGIN, OUT (screenshot folder), CHROMIUM (default /usr/bin/chromium)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { atIdentityProvider, forgetCookies } from './identity-provider.mjs';

const env = process.env;
const WAIT_MS = 15000;

setTimeout(() => {
  console.error('sso.mjs: gave up after 90 s');
  process.exit(2);
}, 90000).unref();

const profile = mkdtempSync(join(tmpdir(), 'xsigate-chromium-'));
const browser = await puppeteer.launch({
  executablePath: env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  args: [
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--window-size=1280,900',
  ],
  defaultViewport: { width: 1280, height: 900 },
});
const page = await browser.newPage();
const report = {
  screenshots: [],
  addresses: [],
  callback_requests: [],
  bodies: [],
  console_errors: [],
};
// Errors of the dialer's own page and its gateway; the identity provider's pages and what they
// load are its business. Told apart by where a message comes from, since one may arrive after
// the tab has moved on.
const dialerOrigin = new URL(env.DIALER_URL).origin;
const gatewayOrigin = new URL((await (await fetch(new URL('/config.json', env.DIALER_URL))).json()).gateway).origin;
page.on('console', (message) => {
  if (message.type() !== 'error') return;
  const from = message.location()?.url;
  const ours = from
    ? [dialerOrigin, gatewayOrigin].includes(new URL(from).origin)
    : new URL(page.url()).origin === dialerOrigin;
  if (ours) report.console_errors.push(`${message.text()} (${from ?? ''})`);
});
page.on('pageerror', (error) => report.console_errors.push(String(error)));
// Committed addresses of the tab: what its address bar and history showed.
page.on('framenavigated', (frame) => { if (frame === page.mainFrame()) report.addresses.push(frame.url()); });
page.on('request', (request) => {
  if (request.url().includes('/callback?')) report.callback_requests.push(request.url());
});
page.on('response', async (response) => {
  const status = response.status();
  if (status >= 300 && status < 400) return;
  const body = await response.text().catch(() => '');
  report.bodies.push({ url: response.url(), status, body });
});

let shot = 0;
async function screenshot(name) {
  shot += 1;
  const file = join(env.OUT, `${String(shot).padStart(2, '0')}-${env.METHOD}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
}
const text = (selector) => page.$eval(selector, (node) => node.textContent.trim());
async function waitText(selector, wanted, what) {
  try {
    await page.waitForFunction(
      (s, w) => (document.querySelector(s)?.textContent ?? '').includes(w),
      { timeout: WAIT_MS, polling: 50 },
      selector,
      wanted,
    );
  } catch {
    throw new Error(`${what}: ${selector} shows "${await text(selector).catch(() => '?')}"; status "${await text('#status').catch(() => '?')}"`);
  }
}

/** Types the address, picks the method's option, and goes through the identity provider. */
async function signOn(login, first) {
  await page.goto(env.DIALER_URL, { waitUntil: 'networkidle0' });
  await waitText('#status', 'Type', 'the page starts');
  await page.type('#query', login);
  await page.click('#identify-form button');
  await page.waitForSelector(`#options button[data-method="${env.METHOD}"]`, { timeout: WAIT_MS });
  if (first) await screenshot('login-options');
  await Promise.all([
    page.waitForNavigation({ timeout: WAIT_MS }),
    page.click(`#options button[data-method="${env.METHOD}"]`),
  ]);
  await atIdentityProvider(page, {
    login,
    password: env.IDP_PASSWORD,
    home: env.DIALER_URL,
    timeout: WAIT_MS,
    onLoginForm: first ? () => screenshot('identity-provider') : undefined,
  });
}

try {
  await signOn(env.LOGIN, true);
  await waitText('#profile-user', '@', 'back on the dialer, logged in');
  await page.waitForNetworkIdle({ idleTime: 300, timeout: WAIT_MS });
  report.profile_user = await text('#profile-user');
  report.status = await text('#status');
  report.address_after_login = page.url();
  report.storage = await page.evaluate(() => ({
    local: JSON.stringify({ ...localStorage }),
    session: JSON.stringify({ ...sessionStorage }),
    cookies: document.cookie,
  }));
  await screenshot('signed-in');

  await page.click('#logout');
  await waitText('#status', 'Logged out', 'logout');
  // Another person at this browser: the identity provider's session goes too.
  await forgetCookies(page);

  // An address the identity provider vouches for, but that no BroadWorks user has.
  await signOn(env.REFUSED_LOGIN, false);
  await waitText('#status', 'Single sign-on refused', 'the refusal shows');
  report.refusal_status = await text('#status');
  report.address_after_refusal = page.url();
  await screenshot('refused');
} catch (error) {
  report.error = String(error.message ?? error);
  await screenshot('failed').catch(() => {});
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
