// The reference dialer: each step a dialer takes with xsigate, in the order a user meets them.
// gateway.js talks to xsigate, live.js to Firebase; this module only wires them to the page.
import { Gateway, GatewayError, xsiText } from './gateway.js';
import { connect } from './live.js';

const $ = (id) => document.getElementById(id);
const show = (id, visible = true) => { $(id).hidden = !visible; };

const config = await (await fetch('/config.json')).json();
const gateway = new Gateway(config.gateway);
let userId = null;
let live = null;
let channel = null;

function status(text, failed = false) {
  $('status').textContent = text;
  $('status').classList.toggle('failed', failed);
}

/** Runs a step, showing what failed in the status line (never a stack). */
function step(action) {
  return async (event) => {
    event?.preventDefault();
    try {
      await action(event);
    } catch (error) {
      const text = error instanceof GatewayError ? error.message : String(error.message ?? error);
      status(`Failed: ${text}`, true);
    }
  };
}

function list(id, items, render) {
  const ul = $(id);
  ul.replaceChildren();
  for (const item of items) ul.append(render(item));
  if (!items.length) {
    const li = document.createElement('li');
    li.className = 'empty';
    li.textContent = 'none';
    ul.append(li);
  }
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// 1. Identify: ZTP answers the login methods open to what the user typed.
$('identify-form').addEventListener('submit', step(async () => {
  const query = $('query').value.trim();
  const answer = await gateway.options(query);
  list('options', answer.options, (option) => {
    const li = element('li');
    const button = element('button', option.label);
    button.type = 'button';
    button.dataset.method = option.method;
    button.addEventListener('click', option.sign_in === 'redirect'
      ? step(() => signOn(option, query))
      : () => choose(option, query));
    li.append(button, element('span', preconditions(option), 'details'));
    return li;
  });
  status(answer.options.length
    ? `${answer.options.length} login option(s)${answer.password_reset ? '; password reset available' : ''}`
    : 'No login option: check what you typed', !answer.options.length);
}));

/** What a method needs, as the product's login menu marks it. */
function preconditions(option) {
  const facts = [`method ${option.method}`];
  if (option.user_id) facts.push(`account ${option.user_id}`);
  if (option.sign_in === 'redirect') facts.push('single sign-on');
  if (['email', 'phone'].includes(option.method) || option.details?.requires?.includes('master')) {
    facts.push('*m master credentials', '*e on the BroadWorks profile');
  }
  if (option.details?.levels) facts.push(`levels: ${option.details.levels.join(', ')}`);
  return facts.join(' · ');
}

function choose(option, query) {
  $('login-method').textContent = option.label;
  $('login-form').dataset.method = option.method;
  $('login-user').value = option.user_id ?? query;
  $('choices').replaceChildren();
  show('login');
  $('login-password').focus();
}

// 2a. Single sign-on: off to the company's identity provider; it sends the browser back here.
// The tab remembers that it went (a method name, nothing secret), so that only the page load
// that ends a sign-on asks the gateway for its login.
const SIGN_ON = 'xsigate.sign-on';

async function signOn(option, query) {
  status(`Signing in with ${option.label}…`);
  const location = await gateway.startSignOn(option.method, query);
  sessionStorage.setItem(SIGN_ON, option.method);
  window.location.assign(location);
}

// 2b. Log in; a lookup that finds several accounts asks which one.
$('login-form').addEventListener('submit', step(() => logIn()));

async function logIn(params) {
  const method = $('login-form').dataset.method;
  const answer = await gateway.logIn(method, $('login-user').value, $('login-password').value, params);
  if (answer.choose) {
    list('choices', answer.choose, (account) => {
      const button = element('button', account.label ?? account.user_id);
      button.type = 'button';
      button.addEventListener('click', step(() => logIn({ user_id: account.user_id })));
      const li = element('li');
      li.append(button);
      return li;
    });
    status('Several accounts match: pick one');
    return;
  }
  $('login-password').value = '';
  await start(answer);
}

// 3. The account: who the session is, then the services, the live view and the channel.
async function start(login) {
  const session = await gateway.session();
  userId = session.user_id;
  const profile = await gateway.xsi('GET', `/user/${encodeURIComponent(userId)}/profile`);
  $('profile-name').textContent = `${xsiText(profile, 'firstName') ?? ''} ${xsiText(profile, 'lastName') ?? ''}`.trim();
  $('profile-user').textContent = userId;
  $('profile-number').textContent = xsiText(profile, 'number') ?? '–';
  $('profile-extension').textContent = xsiText(profile, 'extension') ?? '–';
  $('session-level').textContent = `${session.level}, until ${new Date(session.expires_at_ms).toLocaleTimeString()}`;
  const reports = login.reports ?? {};
  $('report-srs').textContent = reports.srs?.state ?? 'not used';
  $('report-firebase').textContent = reports.firebase ? 'connecting…' : 'not used';
  const dnd = await gateway.xsi('GET', `/user/${encodeURIComponent(userId)}/services/DoNotDisturb`);
  $('dnd').checked = xsiText(dnd, 'active') === 'true';
  const cfa = await gateway.xsi('GET', `/user/${encodeURIComponent(userId)}/services/CallForwardingAlways`);
  $('cfa').checked = xsiText(cfa, 'active') === 'true';
  if (xsiText(cfa, 'forwardToPhoneNumber')) $('cfa-number').value = xsiText(cfa, 'forwardToPhoneNumber');
  for (const id of ['identify', 'login']) show(id, false);
  for (const id of ['account', 'services', 'channel']) show(id);
  status(`Logged in as ${userId}`);
  // The live view connects on its own: a Firebase that is slow to answer holds up nothing else.
  if (reports.firebase?.custom_token) follow(reports.firebase);
}

// 4. Services: each change is an XSI-Actions PUT through the session, with the CSRF token.
$('dnd').addEventListener('change', step(async () => {
  await gateway.setService(userId, 'DoNotDisturb', { active: $('dnd').checked });
  status(`Do Not Disturb ${$('dnd').checked ? 'on' : 'off'} sent`);
}));

$('cfa-form').addEventListener('submit', step(async () => {
  const fields = { active: $('cfa').checked };
  if ($('cfa').checked) fields.forwardToPhoneNumber = $('cfa-number').value.trim();
  await gateway.setService(userId, 'CallForwardingAlways', fields);
  status(`Call Forwarding Always ${$('cfa').checked ? 'on' : 'off'} sent`);
}));
$('cfa').addEventListener('change', () => $('cfa-form').requestSubmit());

$('call-form').addEventListener('submit', step(async () => {
  const address = $('call-address').value.trim();
  await gateway.dial(userId, address);
  status(`Calling ${address}`);
}));

// 5. Live state: the user's node, and the queues of the call centres the user is an agent of.
// A network failure (Firebase unreachable, or slower than the SDK's timeout, which is 5 s while
// the browser believes it is offline) is retried while the login lasts, as a phone app would;
// the custom token stays good for an hour. A refusal of the token is shown and not retried.
const RETRY_DELAYS_MS = [1000, 2000, 4000, 8000, 15000, 30000];
const NETWORK_FAILURE = 'auth/network-request-failed';
// Which login the live view belongs to: a logout, or the next login, ends the one before.
let liveFor = 0;

async function follow(report) {
  const mine = ++liveFor;
  for (let attempt = 0; ; attempt += 1) {
    let session;
    try {
      session = await connect(config.firebase, report);
    } catch (error) {
      if (liveFor !== mine) return;
      if (error.code !== NETWORK_FAILURE) {
        $('report-firebase').textContent = 'not connected';
        status(`Live view failed: ${error.message}`, true);
        return;
      }
      const delay = RETRY_DELAYS_MS[Math.min(attempt, RETRY_DELAYS_MS.length - 1)];
      $('report-firebase').textContent = `unreachable; trying again in ${delay / 1000} s`;
      await new Promise((resolve) => setTimeout(resolve, delay));
      if (liveFor !== mine) return;
      $('report-firebase').textContent = 'connecting…';
      continue;
    }
    if (liveFor !== mine) {
      await session.close();
      return;
    }
    showLive(session, report);
    return;
  }
}

function showLive(session, report) {
  live = session;
  show('live');
  const queues = new Map();
  // A snapshot may still arrive after logout closed the session: it belongs to no one.
  const current = () => live === session;
  session.watch(report.path, (node) => {
    if (!current()) return;
    render(node);
    const centres = Object.keys(node?.agent?.call_centers ?? {});
    for (const centre of centres) {
      if (queues.has(centre)) continue;
      queues.set(centre, []);
      session.watch(`users/${centre}/queue`, (queue) => {
        if (!current()) return;
        queues.set(centre, Object.values(queue ?? {}));
        renderQueues(queues);
      }, () => {});
    }
  }, (error) => status(`Live view stopped: ${error.message}`, true));
  $('report-firebase').textContent = 'following your node';
  $('report-firebase').title = report.path;
}

function render(node) {
  const dnd = node?.dnd;
  $('live-dnd').textContent = dnd ? (dnd.active ? 'on' : 'off') : '–';
  const cfa = node?.forwarding?.always;
  $('live-cfa').textContent = cfa ? (cfa.active ? `always to ${cfa.forward_to ?? '?'}` : 'off') : '–';
  $('live-hook').textContent = node?.hook_status ?? '–';
  $('live-agent').textContent = node?.agent ? node.agent.state : '–';
  $('live-updated').textContent = node?.updated_ms ? new Date(node.updated_ms).toLocaleTimeString() : '–';
  renderLamps(node?.blf);
  const calls = Object.entries(node?.calls ?? {});
  list('live-calls', calls, ([id, call]) => {
    const li = element('li');
    li.dataset.call = id;
    li.append(
      element('strong', call.state ?? '?'),
      element('span', ` ${call.personality ?? ''} `),
      element('span', call.remote?.name || call.remote?.number || 'unknown party'),
    );
    return li;
  });
}

/** The lamps of the colleagues BroadWorks lets the user watch (`blf` in the own node). */
function renderLamps(lamps) {
  const entries = Object.entries(lamps ?? {}).sort(([, a], [, b]) => (a.name ?? '').localeCompare(b.name ?? ''));
  list('live-blf', entries, ([id, lamp]) => {
    const li = element('li');
    li.dataset.lamp = id;
    li.dataset.state = lamp.state;
    const since = lamp.since_ms ? ` since ${new Date(lamp.since_ms).toLocaleTimeString()}` : '';
    li.append(
      element('span', '●', `lamp ${lamp.state}`),
      element('span', ` ${lamp.name || 'colleague'}: `),
      element('strong', lamp.state),
      element('span', since, 'details-inline'),
    );
    return li;
  });
}

function renderQueues(queues) {
  const waiting = [...queues.values()].flat().sort((a, b) => (a.position ?? 0) - (b.position ?? 0));
  list('live-queue', waiting, (entry) => element(
    'li',
    `${entry.position ?? '?'}. ${entry.remote?.name || entry.remote?.number || 'caller'} waiting in ${entry.acd_name ?? 'a queue'}`,
  ));
}

// 6. A channel of the page's own, its heartbeats pinned to the XSP that holds it.
let heartbeats = { sent: 0, failed: 0 };

$('channel-open').addEventListener('click', step(async () => {
  channel = await gateway.openChannel('xsigate-reference-dialer');
  heartbeats = { sent: 0, failed: 0 };
  channel.listeners.add(() => { $('channel-received').textContent = channel.documents.join(', '); });
  $('channel-pin').textContent = channel.pin ?? 'not readable (X-Xsigate-Xsp not exposed)';
  $('channel-id').textContent = channel.id;
  $('channel-received').textContent = channel.documents.join(', ');
  $('channel-heartbeats').textContent = '0 sent';
  $('channel-open').disabled = true;
  $('channel-heartbeat').disabled = false;
  $('channel-close').disabled = false;
  status(channel.pin ? `Channel open on ${channel.pin}` : 'Channel open, but its XSP is unknown', !channel.pin);
}));

$('channel-heartbeat').addEventListener('click', step(async () => {
  try {
    await channel.heartbeat();
    heartbeats.sent += 1;
  } catch (error) {
    heartbeats.failed += 1;
    throw error;
  } finally {
    $('channel-heartbeats').textContent = `${heartbeats.sent} sent${heartbeats.failed ? `, ${heartbeats.failed} failed` : ''}`;
  }
  status(`Heartbeat ${heartbeats.sent} answered by ${channel.pin}`);
}));

$('channel-close').addEventListener('click', step(() => closeChannel()));

async function closeChannel() {
  if (!channel) return;
  const closing = channel;
  channel = null;
  $('channel-open').disabled = false;
  $('channel-heartbeat').disabled = true;
  $('channel-close').disabled = true;
  await closing.close();
}

// Log out: the session ends, and with it the live view and the page's channel.
$('logout').addEventListener('click', step(async () => {
  await closeChannel().catch(() => {});
  await gateway.logOut();
  const closing = live;
  live = null;
  liveFor += 1;
  userId = null;
  await closing?.close();
  for (const id of ['account', 'services', 'live', 'channel', 'login']) show(id, false);
  show('identify');
  $('options').replaceChildren();
  for (const id of ['live-dnd', 'live-cfa', 'live-hook', 'live-agent', 'live-updated']) $(id).textContent = '–';
  list('live-calls', [], () => null);
  list('live-queue', [], () => null);
  list('live-blf', [], () => null);
  status('Logged out');
}));

// Back from a single sign-on? A refusal comes as `?sso_error=<code>`, which the address bar
// loses at once; a success as the session cookie, whose login answer the gateway hands over.
const signingOn = sessionStorage.getItem(SIGN_ON);
sessionStorage.removeItem(SIGN_ON);
const refused = new URLSearchParams(window.location.search).get('sso_error');
if (refused) {
  window.history.replaceState(null, '', window.location.pathname);
  status(`Single sign-on refused: ${refused}`, true);
} else if (signingOn) {
  await step(async () => {
    const login = await gateway.finishSignOn();
    if (login) await start(login);
    else status('The single sign-on did not finish: try again', true);
  })();
} else {
  status('Type a user id, an e-mail address or a phone number');
}
