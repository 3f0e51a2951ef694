// Writes the signing key of the demo's identity providers (sim/idp/oidc-provider.mjs): the
// private JWK for them, and the public JWK Set for the demo's Microsoft Graph stand-in, which
// accepts only tokens that key signed. Never use it for anything real. An existing key is kept.
// Usage: node sim/idp/make-key.mjs <private-jwk-file> <public-jwks-file>
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';

const [privateFile, publicFile] = process.argv.slice(2);
if (!privateFile || !publicFile) {
  console.error('usage: make-key.mjs <private-jwk-file> <public-jwks-file>');
  process.exit(2);
}
if (!existsSync(privateFile) || !existsSync(publicFile)) {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(privateFile, JSON.stringify(privateKey.export({ format: 'jwk' })) + '\n', { mode: 0o600 });
  const jwks = { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'signing-1', alg: 'RS256', use: 'sig' }] };
  writeFileSync(publicFile, JSON.stringify(jwks, null, 2) + '\n');
}
