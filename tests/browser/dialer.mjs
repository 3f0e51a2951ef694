// The browser suite's driver: real headless Chromium (Debian's), driven by puppeteer-core,
// walks the reference dialer of the running demo as a user would, takes a screenshot of each
// step, and prints one JSON report of what the page showed and what the simulator saw.
// tests/suites/browser.rs starts the demo, runs this, and asserts on the report.
//
// env: DIALER_URL, SIM_CONTROL, OUT (screenshot folder), CHROMIUM (default /usr/bin/chromium)
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';
import { readOnce, signIn } from '../firebase-e2e/sign-in.mjs';
import { atIdentityProvider, forgetCookies } from './identity-provider.mjs';

const env = process.env;
const USER = 'alice@demo.xsigate.test';
const PASSWORD = 'alice-demo-password';
const OTHER = 'bob@demo.xsigate.test';
const OTHER_PASSWORD = 'bob-demo-password';
const WAIT_MS = 10000;

// Every wait ends by itself; a stuck page fails the run instead of hanging it.
setTimeout(() => {
  console.error('dialer.mjs: gave up after 120 s');
  process.exit(2);
}, 120000).unref();

const profile = mkdtempSync(join(tmpdir(), 'xsigate-chromium-'));
const browser = await puppeteer.launch({
  executablePath: env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  userDataDir: profile,
  // This machine's network is closed: Chromium's own background traffic only fails slowly.
  args: [
    ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
    '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--window-size=1280,1000',
  ],
  defaultViewport: { width: 1280, height: 1000 },
});
const page = await browser.newPage();
const consoleErrors = [];
// Errors of the dialer's own page and its gateway; the identity providers' pages (single
// sign-on) and what they load are theirs. Told apart by where a message comes from, since one
// may arrive after the tab has moved on.
const dialerOrigin = new URL(env.DIALER_URL).origin;
const gatewayOrigin = new URL((await (await fetch(new URL('/config.json', env.DIALER_URL))).json()).gateway).origin;
page.on('console', (message) => {
  if (message.type() !== 'error') return;
  const from = message.location()?.url;
  const ours = from
    ? [dialerOrigin, gatewayOrigin].includes(new URL(from).origin)
    : new URL(page.url()).origin === dialerOrigin;
  if (ours) consoleErrors.push(message.text());
});
page.on('pageerror', (error) => consoleErrors.push(String(error)));

const report = { screenshots: [], logins: {}, console_errors: consoleErrors };
let shot = 0;
async function screenshot(name) {
  shot += 1;
  const file = join(env.OUT, `${String(shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
}

const text = (selector) => page.$eval(selector, (node) => node.textContent.trim());
const visible = (selector) => page.$eval(selector, (node) => !node.hidden);
async function waitText(selector, test, what, timeout = WAIT_MS) {
  try {
    await page.waitForFunction(
      (s, source) => new Function('t', `return (${source})(t)`)(document.querySelector(s)?.textContent.trim() ?? ''),
      { timeout, polling: 50 },
      selector,
      test.toString(),
    );
  } catch {
    throw new Error(`${what}: ${selector} shows "${await text(selector).catch(() => '?')}"; status "${await text('#status')}"`);
  }
}
async function sim(path, options) {
  const response = await fetch(`${env.SIM_CONTROL}${path}`, options);
  if (!response.ok) throw new Error(`simulator ${path}: ${response.status}`);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Types a query, picks the option of `method`, and logs in as alice with it. */
async function logIn(query, method, first) {
  await page.$eval('#query', (input) => { input.value = ''; });
  await page.type('#query', query);
  await page.click('#identify-form button');
  await page.waitForSelector(`#options button[data-method="${method}"]`, { timeout: WAIT_MS });
  if (first) await screenshot('login-options');
  await page.click(`#options button[data-method="${method}"]`);
  await page.type('#login-password', PASSWORD);
  await page.click('#login-form button');
  await page.waitForFunction(() => !document.querySelector('#account').hidden, { timeout: WAIT_MS });
  await waitText('#profile-user', (t) => t.includes('@'), `login by ${method}`);
  return text('#profile-user');
}

/**
 * Types an address, picks the single-sign-on option of `method`, and signs in at its identity
 * provider (the demo's take any address) as alice's e-mail address.
 */
async function signOn(query, method) {
  await forgetCookies(page);
  await page.$eval('#query', (input) => { input.value = ''; });
  await page.type('#query', query);
  await page.click('#identify-form button');
  await page.waitForSelector(`#options button[data-method="${method}"]`, { timeout: WAIT_MS });
  await Promise.all([
    page.waitForNavigation({ timeout: WAIT_MS }),
    page.click(`#options button[data-method="${method}"]`),
  ]);
  await atIdentityProvider(page, {
    login: query,
    home: env.DIALER_URL,
    timeout: WAIT_MS,
    onLoginForm: method === 'o365' ? () => screenshot('identity-provider') : undefined,
  });
  await page.waitForFunction(() => !document.querySelector('#account').hidden, { timeout: WAIT_MS });
  await waitText('#profile-user', (t) => t.includes('@'), `sign-on by ${method}`);
  return text('#profile-user');
}

async function logOut() {
  await page.click('#logout');
  await page.waitForFunction(() => !document.querySelector('#identify').hidden, { timeout: WAIT_MS });
}

/**
 * What `user` may read of the database outside the page, on the Firebase JS SDK: logs in
 * through the gateway, signs in with the custom token, and answers, for each path, the value
 * or `permission_denied`.
 */
async function readAs(user, password, paths) {
  const config = await (await fetch(new URL('/config.json', env.DIALER_URL))).json();
  const { firebase, db } = await signIn({
    gateway: config.gateway,
    authEmulator: config.firebase.authEmulator,
    user,
    password,
    projectId: config.firebase.projectId,
    apiKey: config.firebase.apiKey,
  });
  const answers = { path: firebase.path, own: await readOnce(db, firebase.path, WAIT_MS) };
  for (const [name, path] of Object.entries(paths(answers.own))) answers[name] = await readOnce(db, path, WAIT_MS);
  return answers;
}

try {
  await page.goto(env.DIALER_URL, { waitUntil: 'networkidle0' });
  await waitText('#status', (t) => t.startsWith('Type'), 'the page starts');
  await screenshot('start');

  // The first sign-in to Firebase fails as an unreachable network would (connection refused):
  // the live view must try again by itself.
  await page.setRequestInterception(true);
  const firebaseSignIns = { refused: 0, passed: 0 };
  const refuseFirstSignIn = (request) => {
    if (request.isInterceptResolutionHandled()) return;
    if (request.method() === 'POST' && request.url().includes('accounts:signInWithCustomToken')) {
      if (firebaseSignIns.refused === 0) {
        firebaseSignIns.refused += 1;
        request.abort('connectionrefused');
        return;
      }
      firebaseSignIns.passed += 1;
    }
    request.continue();
  };
  page.on('request', refuseFirstSignIn);

  // The whole flow on a BroadSoft login (the other password methods follow at the end).
  report.logins.broadsoft = await logIn(USER, 'broadsoft', true);
  report.screening = { srs: await text('#report-srs') };

  // The live view follows the user's node in Firebase (the first state may take a while on a
  // loaded machine: the provider's channel set has just opened).
  await waitText('#live-dnd', (t) => t === 'on' || t === 'off', 'the live view shows DND', 30000);
  page.off('request', refuseFirstSignIn);
  await page.setRequestInterception(false);
  report.firebase_sign_ins = firebaseSignIns;
  await screenshot('logged-in');

  // DND toggled in the page: XSI PUT → simulator → XSI-Events → firebase-sync → Firebase → page.
  const before = await text('#live-dnd');
  const wanted = before === 'on' ? 'off' : 'on';
  const toggled = Date.now();
  await page.click('#dnd');
  await waitText('#live-dnd', new Function('t', `return t === '${wanted}'`), 'DND comes back live');
  report.dnd = {
    before,
    page: await text('#live-dnd'),
    round_trip_ms: Date.now() - toggled,
    simulator: (await sim(`/users/${USER}`)).do_not_disturb.active,
  };
  await screenshot('dnd-toggled');

  // Call Forwarding Always, the same way.
  if (await page.$eval('#cfa', (box) => box.checked)) {
    await page.click('#cfa');
    await waitText('#live-cfa', (t) => t === 'off', 'CFA off comes back live');
  }
  await page.click('#cfa');
  await waitText('#live-cfa', (t) => t.startsWith('always to'), 'CFA comes back live');
  report.cfa = { page: await text('#live-cfa'), simulator: (await sim(`/users/${USER}`)).call_forwarding_always };

  // Bob is on alice's Busy Lamp Field list: his lamp shows, free.
  await waitText('#live-blf', (t) => t.includes('Bob Berg: idle'), "bob's lamp shows");
  // A call started in the simulator (dialled from the page, placed by the XSP) shows up, and
  // rings at bob's: his lamp says so.
  await page.click('#call-form button');
  await page.waitForSelector('#live-calls li[data-call]', { timeout: WAIT_MS });
  report.call = await text('#live-calls');
  await waitText('#live-blf', (t) => t.includes('Bob Berg: ringing'), "bob's lamp rings");
  report.blf = await text('#live-blf');
  // Alice is an agent of the Sales call centre: her node names it (read at login), and she
  // signs in to it (on her phone).
  const agent = await sim(`/users/${USER}`);
  agent.agent_state = 'Available';
  await sim(`/users/${USER}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(agent),
  });
  await waitText('#live-agent', (t) => t === 'Available', 'the agent state shows');
  // A caller waits in the queue of alice's call centre: the page follows that centre's node.
  await sim('/callcenters/sales-cc@demo.xsigate.test/queue', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ address: 'tel:+12025550777', name: 'Carol Caller' }),
  });
  await waitText('#live-queue', (t) => t.includes('Carol'), 'the queued caller shows up');
  report.queue = await text('#live-queue');
  await screenshot('call-and-queue');

  // The page's own XSI-Events channel, its heartbeats pinned by the cross-origin X-Xsigate-Xsp.
  await page.click('#channel-open');
  await waitText('#channel-id', (t) => t !== '–', 'the channel opens');
  for (let i = 1; i <= 2; i++) {
    await page.click('#channel-heartbeat');
    await waitText('#channel-heartbeats', new Function('t', `return t.startsWith('${i} sent')`), `heartbeat ${i}`);
  }
  const channelId = await text('#channel-id');
  const held = (await sim('/channels')).find((channel) => channel.channel_id === channelId);
  report.channel = {
    pin: await text('#channel-pin'),
    heartbeats: await text('#channel-heartbeats'),
    simulator: held ?? null,
  };
  await screenshot('channel-pinned');

  // Logout ends the session and the live view.
  await logOut();
  const session = await page.evaluate(async (gateway) => {
    const response = await fetch(`${gateway}/api/access/services/session`, { credentials: 'include' });
    return response.status;
  }, JSON.parse(await page.evaluate(() => fetch('/config.json').then((r) => r.text()))).gateway);
  report.after_logout = {
    session_status: session,
    live_shown: await visible('#live'),
    live_dnd: await text('#live-dnd'),
    status: await text('#status'),
  };
  await screenshot('logged-out');

  // The other password methods, by what a user would type for each.
  report.logins.email = await logIn('alice.anders@demo.example', 'email', false);
  await logOut();
  report.logins.phone = await logIn('+1 (202) 555-0101', 'phone', false);
  await logOut();
  // Single sign-on: the tab leaves for the method's identity provider and comes back logged in.
  for (const method of ['o365', 'onelogin', 'saml']) {
    report.logins[method] = await signOn('alice.anders@demo.example', method);
    await logOut();
  }

  // The database rules: an agent reads the node of its call centre; nobody else does.
  const alice = await readAs(USER, PASSWORD, (own) => {
    const centre = Object.keys(own?.agent?.call_centers ?? {})[0];
    return { centre: `users/${centre}/queue` };
  });
  const centre = Object.keys(alice.own?.agent?.call_centers ?? {})[0];
  const bob = await readAs(OTHER, OTHER_PASSWORD, () => ({ centre: `users/${centre}`, alice: alice.path }));
  report.rules = {
    agent_reads_its_centre_queue: alice.centre,
    other_reads_the_centre: bob.centre,
    other_reads_alice: bob.alice,
  };
} catch (error) {
  report.error = String(error.message ?? error);
  await screenshot('failed').catch(() => {});
  // What the database held then (the demo's database answers REST reads without rules): each
  // node's children, to tell a write that never came from a page that missed it.
  if (env.DATABASE_URL) {
    const users = await fetch(`${env.DATABASE_URL}/users.json`).then((r) => r.json()).catch(String);
    report.database = Object.fromEntries(Object.entries(users ?? {}).map(([id, node]) => [id, Object.keys(node ?? {})]));
  }
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
process.exit(report.error ? 1 : 0);
