// A real OpenID Provider for the single-sign-on tests and the demo: npm `oidc-provider` (OpenID
// Certified), shaped as Microsoft Entra ID or OneLogin as far as a relying party can tell
// (issuer path, claims in the ID token, Entra ID's app-only tokens for Graph), on loopback. Its
// login form is oidc-provider's own: any login name signs in as that account, whose e-mail is
// the name, with any password. Never a real identity provider.
//
// Usage: node sim/idp/oidc-provider.mjs <shape> <port> <client_id> <client_secret> <redirect_uri>
//   shape: entra:<tenant-id> | onelogin:<subdomain>
// env: OIDC_SIGNING_KEY_FILE  sign with this private JWK (made by make-key.mjs), so that others
//                             can hold its public half; else a key made at start
//      OIDC_TEST_CONTROLS=1   serve the test controls below
// Prints `ready <issuer>` when it listens.

import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const GRAPH = 'https://graph.microsoft.com';

const [shape, port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const [kind, name] = (shape ?? '').split(':');
// Where each service puts its issuer (docs: shared reference, integrations §4).
const prefix = { entra: `/${name}/v2.0`, onelogin: '/oidc/2' }[kind];
if (!prefix || !name || !port || !clientId || !clientSecret || !redirectUri) {
  console.error('usage: oidc-provider.mjs entra:<tenant>|onelogin:<subdomain> <port> <client_id> <client_secret> <redirect_uri>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}${prefix}`;

// The signing key is ours, so that a test can have this provider lie with it: see `forge`.
const keyFile = process.env.OIDC_SIGNING_KEY_FILE;
const privateKey = keyFile
  ? crypto.createPrivateKey({ key: JSON.parse(readFileSync(keyFile, 'utf8')), format: 'jwk' })
  : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const publicKey = crypto.createPublicKey(privateKey);
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'signing-1', alg: 'RS256', use: 'sig' };
const testControls = process.env.OIDC_TEST_CONTROLS === '1';

// How the next ID tokens are spoiled (`POST /__test/tamper/<mode>`; `honest` undoes it), and
// how often the key set was read (`GET /__test/jwks-reads`).
let tamper = 'honest';
let jwksReads = 0;

const b64 = (data) => Buffer.from(data).toString('base64url');
const signed = (header, payload, sign) => {
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(payload))}`;
  return `${input}.${b64(sign(Buffer.from(input)))}`;
};
const rs256 = (key) => (input) => crypto.sign('sha256', input, key);

// Each lie a relying party must see through, told with what an attacker could have.
function forge(idToken, mode) {
  const [encodedHeader, encodedPayload, signature] = idToken.split('.');
  const header = JSON.parse(Buffer.from(encodedHeader, 'base64url'));
  const payload = JSON.parse(Buffer.from(encodedPayload, 'base64url'));
  const now = Math.floor(Date.now() / 1000);
  const ours = rs256(privateKey);
  switch (mode) {
    // Another user's address under the genuine signature.
    case 'signature':
      return `${encodedHeader}.${b64(JSON.stringify({ ...payload, email: 'alice@mail.example', preferred_username: 'alice@mail.example' }))}.${signature}`;
    case 'aud':
      return signed(header, { ...payload, aud: 'another-client' }, ours);
    case 'iss':
      return signed(header, { ...payload, iss: issuer.replace('127.0.0.1', '127.0.0.2') }, ours);
    case 'expired':
      return signed(header, { ...payload, iat: now - 7200, exp: now - 3600 }, ours);
    case 'nonce':
      return signed(header, { ...payload, nonce: 'not-the-flows-nonce' }, ours);
    // A key the provider never published, however often its key set is read.
    case 'kid': {
      const { privateKey: stranger } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
      return signed({ ...header, kid: 'never-published' }, payload, rs256(stranger));
    }
    case 'none':
      return `${b64(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${encodedPayload}.`;
    // The published public key used as an HMAC secret: the classic algorithm confusion.
    case 'hs256': {
      const secret = publicKey.export({ format: 'pem', type: 'spki' });
      return signed({ ...header, alg: 'HS256' }, payload, (input) => crypto.createHmac('sha256', secret).update(input).digest());
    }
    default:
      return idToken;
  }
}

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'client_credentials'],
    response_types: ['code'],
    // Entra ID takes the secret in the form; OneLogin's default is HTTP Basic.
    token_endpoint_auth_method: kind === 'entra' ? 'client_secret_post' : 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  // Both services put the profile claims in the ID token itself.
  conformIdTokenClaims: false,
  features: {
    clientCredentials: { enabled: true },
    // Entra ID's app-only tokens: JWTs for Microsoft Graph, asked for by `<graph>/.default`.
    resourceIndicators: {
      enabled: kind === 'entra',
      defaultResource: () => GRAPH,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, resource) => {
        if (resource !== GRAPH) throw new errors.InvalidTarget();
        return { scope: `${GRAPH}/.default`, audience: GRAPH, accessTokenFormat: 'jwt', accessTokenTTL: 3600 };
      },
    },
  },
  ttl: { ClientCredentials: 3600 },
  claims: { email: ['email'], profile: ['preferred_username', 'name'] },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, preferred_username: id, name: id }),
  }),
});

provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.body?.id_token && tamper !== 'honest') {
    ctx.body = { ...ctx.body, id_token: forge(ctx.body.id_token, tamper) };
  }
});

const handle = provider.callback();
http.createServer((req, res) => {
  const test = testControls && req.url.match(/^\/__test\/tamper\/([a-z0-9]+)$/);
  if (req.method === 'POST' && test) {
    tamper = test[1];
    res.end(tamper);
    return;
  }
  if (testControls && req.url === '/__test/jwks-reads') {
    res.end(String(jwksReads));
    return;
  }
  if (req.url === `${prefix}/jwks`) jwksReads += 1;
  if (!req.url.startsWith(prefix)) {
    res.statusCode = 404;
    res.end();
    return;
  }
  // Mounted under the issuer's path, as oidc-provider expects behind a router.
  req.originalUrl = req.url;
  req.url = req.url.slice(prefix.length) || '/';
  handle(req, res);
}).listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));
