// A real OpenID Provider for the single-sign-on tests: npm `oidc-provider` (OpenID Certified),
// shaped as Microsoft Entra ID or OneLogin as far as a relying party can tell (issuer path,
// claims in the ID token), on loopback. Its login form is oidc-provider's own: any login name
// signs in as that account, whose e-mail is the name.
//
// Usage: node tests/idp/oidc-provider.mjs <shape> <port> <client_id> <client_secret> <redirect_uri>
//   shape: entra:<tenant-id> | onelogin:<subdomain>
// Prints `ready <issuer>` when it listens.

import http from 'node:http';
import Provider from 'oidc-provider';

const [shape, port, clientId, clientSecret, redirectUri] = process.argv.slice(2);
const [kind, name] = (shape ?? '').split(':');
// Where each service puts its issuer (docs: shared reference, integrations §4).
const prefix = { entra: `/${name}/v2.0`, onelogin: '/oidc/2' }[kind];
if (!prefix || !name || !port || !clientId || !clientSecret || !redirectUri) {
  console.error('usage: oidc-provider.mjs entra:<tenant>|onelogin:<subdomain> <port> <client_id> <client_secret> <redirect_uri>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}${prefix}`;

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
  pkce: { required: () => true },
  // Both services put the profile claims in the ID token itself.
  conformIdTokenClaims: false,
  features: { clientCredentials: { enabled: true } },
  claims: { email: ['email'], profile: ['preferred_username', 'name'] },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, preferred_username: id, name: id }),
  }),
});

const handle = provider.callback();
http.createServer((req, res) => {
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
