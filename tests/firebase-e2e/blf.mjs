// The busy lamp field as each watcher's browser sees it, on the real Firebase JS SDK: for each
// user of PLAN, log in through xsigate, sign in with the custom token (Auth emulator), read the
// lamps in the own node (waiting until their number is the expected one), then try each other
// node named. Prints one JSON report: per user, the lamps' names and states, and for each other
// path the value read or `permission_denied`.
//
// env: XSIGATE_URL, AUTH_EMULATOR, PLAN = [{"user", "password", "lamps": n, "others": [path]}]
import { ref, onValue } from 'firebase/database';
import { readOnce, signIn } from './sign-in.mjs';

const env = process.env;
const WAIT_MS = 10000;

setTimeout(() => {
  console.error('blf.mjs: gave up after 90 s');
  process.exit(2);
}, 90000).unref();

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
  const { firebase, db } = await signIn({
    gateway: env.XSIGATE_URL,
    authEmulator: `http://${env.AUTH_EMULATOR}`,
    user: watcher.user,
    password: watcher.password,
  });
  const own = await lamps(db, `${firebase.path}/blf`, watcher.lamps);
  const others = {};
  for (const path of watcher.others) others[path] = await readOnce(db, path, WAIT_MS);
  report[watcher.user] = {
    lamps: Object.values(own ?? {}).map((lamp) => `${lamp.name}: ${lamp.state}`).sort(),
    others,
  };
}
console.log(JSON.stringify(report));
process.exit(0);
