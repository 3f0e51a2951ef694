// The browser side of the end-to-end check, on the real Firebase JS SDK: log in through
// xsigate, sign in with the custom token it returns (Auth emulator), listen to the own node
// (firebase-server with the shipped rules), toggle DND in the simulator and time how long each
// toggle takes to reach the listener, and try another user's node. Prints one JSON report.
import { ref, onValue } from 'firebase/database';
import { readOnce, signIn } from './sign-in.mjs';

const env = process.env;
const TOGGLES = 4;
const WAIT_MS = 5000;

// Every wait ends by itself; a stuck SDK fails the run instead of hanging it.
setTimeout(() => {
  console.error('browser.mjs: gave up after 60 s');
  process.exit(2);
}, 60000).unref();

async function json(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(`${options?.method ?? 'GET'} ${url}: ${response.status}`);
  return response.json();
}

const { answer, firebase, credential, db } = await signIn({
  gateway: env.XSIGATE_URL,
  authEmulator: `http://${env.AUTH_EMULATOR}`,
  user: env.XSIGATE_USER,
  password: env.XSIGATE_PASSWORD,
});

let node = null;
let waiter = null;
onValue(ref(db, firebase.path), (snapshot) => {
  node = snapshot.val();
  if (waiter && waiter.test(node)) waiter.resolve();
});
function until(test) {
  if (test(node)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out; node: ${JSON.stringify(node)}`)), WAIT_MS);
    waiter = { test, resolve: () => { clearTimeout(timer); waiter = null; resolve(); } };
  });
}
await until((n) => n?.dnd !== undefined);

const control = env.SIM_CONTROL;
const user = env.XSIGATE_USER;
const latencies = [];
for (let i = 0; i < TOGGLES; i++) {
  const state = await json(`${control}/users/${user}`);
  const wanted = !state.do_not_disturb.active;
  state.do_not_disturb.active = wanted;
  const started = performance.now();
  const put = await fetch(`${control}/users/${user}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(state),
  });
  if (!put.ok) throw new Error(`simulator PUT: ${put.status}`);
  await until((n) => n?.dnd?.active === wanted);
  latencies.push(Math.round(performance.now() - started));
}

const other = await readOnce(db, `users/${env.OTHER_UID}`, WAIT_MS);

console.log(JSON.stringify({
  unique_id: answer.unique_id,
  signed_in_uid: credential.user.uid,
  own_node_readable: node !== null,
  dnd_latency_ms: latencies,
  other_node: typeof other === 'string' ? other : `read: ${JSON.stringify(other)}`,
}));
process.exit(0);
