// The busy lamp field as each watcher's browser sees it, on the real Firebase JS SDK: for each
// user of PLAN, log in through xsigate, sign in with the custom token (Auth emulator), read the
// lamps in the own node (waiting until their number is the expected one), then try each other
// node named. Prints one JSON report: per user, the lamps' names and states, and for each other
// path the value read or `permission_denied`.
//
// env: XSIGATE_URL, AUTH_EMULATOR, PLAN = [{"user", "password", "lamps": n, "others": [path]}]
import { initializeApp } from 'firebase/app';
import { getAuth, connectAuthEmulator, signInWithCustomToken } from 'firebase/auth';
import { getDatabase, connectDatabaseEmulator, ref, onValue } from 'firebase/database';

const env = process.env;
const WAIT_MS = 10000;

setTimeout(() => {
  console.error('blf.mjs: gave up after 90 s');
  process.exit(2);
}, 90000).unref();

/** Reads a location once: its value, or `permission_denied`. */
function read(db, path) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('no answer'), WAIT_MS);
    onValue(
      ref(db, path),
      (snapshot) => { clearTimeout(timer); resolve(snapshot.val()); },
      (error) => {
        clearTimeout(timer);
        resolve(String(error).includes('permission_denied') ? 'permission_denied' : String(error));
      },
      { onlyOnce: true },
    );
  });
}

/** Listens to the own lamps until there are `count` of them. */
function lamps(db, path, count) {
  return new Promise((resolve) => {
    let last = null;
    const timer = setTimeout(() => { stop(); resolve(last); }, WAIT_MS);
    const stop = onValue(ref(db, path), (snapshot) => {
      last = snapshot.val();
      if (Object.keys(last ?? {}).length === count) {
        clearTimeout(timer);
        stop();
        resolve(last);
      }
    }, () => { clearTimeout(timer); resolve('permission_denied'); });
  });
}

const report = {};
for (const watcher of JSON.parse(env.PLAN)) {
  const response = await fetch(`${env.XSIGATE_URL}/api/access/services/idp/broadsoft`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: watcher.user, password: watcher.password }),
  });
  if (!response.ok) throw new Error(`login of ${watcher.user}: ${response.status}`);
  const firebase = (await response.json()).reports.firebase;
  const app = initializeApp({ projectId: 'demo-xsigate', apiKey: 'demo-api-key' }, watcher.user);
  const auth = getAuth(app);
  connectAuthEmulator(auth, `http://${env.AUTH_EMULATOR}`, { disableWarnings: true });
  await signInWithCustomToken(auth, firebase.custom_token);
  const db = getDatabase(app);
  const database = new URL(firebase.database_url);
  connectDatabaseEmulator(db, database.hostname, Number(database.port));
  const own = await lamps(db, `${firebase.path}/blf`, watcher.lamps);
  const others = {};
  for (const path of watcher.others) others[path] = await read(db, path);
  report[watcher.user] = {
    lamps: Object.values(own ?? {}).map((lamp) => `${lamp.name}: ${lamp.state}`).sort(),
    others,
  };
}
console.log(JSON.stringify(report));
process.exit(0);
