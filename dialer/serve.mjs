// Serves the reference dialer for the demo: the files of this folder, the Firebase JS SDK's
// browser modules from node_modules/firebase under /vendor/firebase/, and /config.json, which
// tells the page where the gateway and the Firebase Auth emulator are. Any static web server
// does for a real dialer; this one exists so that the demo needs nothing but Node.js.
//
//   node dialer/serve.mjs [address:port]        (default 127.0.0.1:5173)
//   env XSIGATE_URL (http://127.0.0.1:8080), FIREBASE_AUTH_EMULATOR (http://127.0.0.1:9099)
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const sdk = join(here, '..', 'node_modules', 'firebase');
const [host, port] = (process.argv[2] ?? '127.0.0.1:5173').split(':');
const config = JSON.stringify({
  gateway: process.env.XSIGATE_URL ?? 'http://127.0.0.1:8080',
  firebase: {
    projectId: 'demo-xsigate',
    apiKey: 'demo-api-key',
    authEmulator: process.env.FIREBASE_AUTH_EMULATOR ?? 'http://127.0.0.1:9099',
  },
});
const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
};

// Only names made of safe characters, so no path ever leaves its folder.
const SAFE = /^[A-Za-z0-9_.-]+$/;

function file(path) {
  if (path === '/') return join(here, 'index.html');
  const vendor = path.match(/^\/vendor\/firebase\/(firebase-[a-z-]+\.js(?:\.map)?)$/);
  if (vendor) return join(sdk, vendor[1]);
  const name = path.slice(1);
  if (SAFE.test(name) && !name.startsWith('.') && name !== 'serve.mjs') return join(here, name);
  return null;
}

createServer(async (request, response) => {
  const path = new URL(request.url, 'http://dialer').pathname;
  const headers = { 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' };
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.writeHead(405, { ...headers, allow: 'GET, HEAD' }).end();
    return;
  }
  if (path === '/config.json') {
    response.writeHead(200, { ...headers, 'content-type': 'application/json' }).end(config);
    return;
  }
  const target = file(path);
  const type = target && types[extname(target)];
  try {
    if (!type) throw new Error('not served');
    const body = await readFile(target);
    response.writeHead(200, { ...headers, 'content-type': type }).end(request.method === 'HEAD' ? undefined : body);
  } catch {
    response.writeHead(404, { ...headers, 'content-type': 'text/plain' }).end('not found\n');
  }
}).listen(Number(port), host, () => console.log(`dialer on http://${host}:${port}/`));
