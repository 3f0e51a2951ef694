// The demo's Realtime Database: firebase-server (npm) with the shipped rules, its websocket
// protocol for the browser's Firebase SDK and its REST API for firebase-sync's writes.
//
// firebase-server checks rules against its own copy of the data, which only websocket writes
// update: rules that read data (`root.child(…)`, as the call-centre rule does) would see an
// empty database. This keeps that copy in step with every write, REST ones included, so the
// shipped rules are evaluated here as Firebase evaluates them.
//
//   node firebase/demo-database.mjs [address:port] [rules file]
//   (default 127.0.0.1:9000 and firebase/database.rules.json)
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import FirebaseServer from 'firebase-server';

const here = dirname(fileURLToPath(import.meta.url));
const [address, port] = (process.argv[2] ?? '127.0.0.1:9000').split(':');
const rules = JSON.parse(readFileSync(process.argv[3] ?? join(here, 'database.rules.json'), 'utf8'));

const server = new FirebaseServer({ port: Number(port), address, rest: true }, 'localhost.firebaseio.test', {});
server.setRules(rules);
server.baseRef.on('value', (snapshot) => {
  server.targaryen = server.targaryen.with({ data: snapshot.exportVal() });
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
console.log(`database on http://${address}:${port}/ with the rules of ${process.argv[3] ?? 'firebase/database.rules.json'}`);
