// The live side of a web dialer: the user's state as firebase-sync keeps it in the provider's
// Realtime Database (docs/firebase.md), read with the Firebase JS SDK. The login answer's
// `reports.firebase` carries a custom token (signed by the gateway, valid for signing in only)
// and the node to read, `users/<uniqueId>`; the database rules let a browser read its own node.
import { initializeApp, deleteApp } from '/vendor/firebase/firebase-app.js';
import { getAuth, connectAuthEmulator, signInWithCustomToken, signOut } from '/vendor/firebase/firebase-auth.js';
import { getDatabase, connectDatabaseEmulator, ref, onValue } from '/vendor/firebase/firebase-database.js';

/**
 * Signs in to the provider's Firebase with the login's custom token (rejects with the SDK's
 * error, whose `code` tells a network failure, `auth/network-request-failed`, from a refusal). Answers `watch(path,
 * onChange, onError)`, which calls `onChange(value)` each time the location changes and answers
 * a function that stops, and `close()`, which stops everything and signs out.
 */
export async function connect(settings, report) {
  const database = new URL(report.database_url);
  const emulated = database.protocol === 'http:';
  const app = initializeApp(
    {
      projectId: settings.projectId,
      apiKey: settings.apiKey,
      ...(emulated ? {} : { databaseURL: report.database_url }),
    },
    `dialer-${Date.now()}`,
  );
  const auth = getAuth(app);
  if (settings.authEmulator) connectAuthEmulator(auth, settings.authEmulator, { disableWarnings: true });
  try {
    await signInWithCustomToken(auth, report.custom_token);
  } catch (error) {
    // A caller that tries again makes a new app; this one must not linger.
    await deleteApp(app).catch(() => {});
    throw error;
  }
  const db = getDatabase(app);
  if (emulated) connectDatabaseEmulator(db, database.hostname, Number(database.port));
  const watching = new Set();
  return {
    node: report.path,
    watch(path, onChange, onError) {
      const stop = onValue(ref(db, path), (snapshot) => onChange(snapshot.val()), onError);
      watching.add(stop);
      return () => { watching.delete(stop); stop(); };
    },
    async close() {
      for (const stop of watching) stop();
      watching.clear();
      await signOut(auth).catch(() => {});
      await deleteApp(app).catch(() => {});
    },
  };
}
