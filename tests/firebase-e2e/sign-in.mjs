// What a browser does to read its live state, on the real Firebase JS SDK, for the scripts that
// play browsers outside a page: log in through xsigate, sign in with the custom token the login
// answers (the Auth emulator), and read the database with the rules applied.
import { initializeApp } from 'firebase/app';
import { getAuth, connectAuthEmulator, signInWithCustomToken } from 'firebase/auth';
import { getDatabase, connectDatabaseEmulator, ref, onValue } from 'firebase/database';

/**
 * Logs `user` in by BroadSoft login at `gateway` and signs in to Firebase as them. Answers the
 * login answer, the login's Firebase report, the signed-in credential and the database.
 */
export async function signIn({ gateway, authEmulator, user, password, projectId = 'demo-xsigate', apiKey = 'demo-api-key' }) {
  const response = await fetch(`${gateway}/api/access/services/idp/broadsoft`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user, password }),
  });
  if (!response.ok) throw new Error(`login of ${user}: ${response.status}`);
  const answer = await response.json();
  const firebase = answer.reports.firebase;
  const app = initializeApp({ projectId, apiKey }, user);
  const auth = getAuth(app);
  connectAuthEmulator(auth, authEmulator, { disableWarnings: true });
  const credential = await signInWithCustomToken(auth, firebase.custom_token);
  const db = getDatabase(app);
  const database = new URL(firebase.database_url);
  connectDatabaseEmulator(db, database.hostname, Number(database.port));
  return { answer, firebase, credential, db };
}

/** Reads a location once: its value, `permission_denied`, or `no answer` after `waitMs`. */
export function readOnce(db, path, waitMs) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('no answer'), waitMs);
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
