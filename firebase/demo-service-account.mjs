// Writes a Firebase service-account key file for the demo (the shape Google's console
// downloads), with a fresh RSA key: firebase-sync signs the demo's custom tokens with it, and
// the Auth emulator accepts them. Never use it for a real project. Usage: node … <file>
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
if (!file) {
  console.error('usage: demo-service-account.mjs <file>');
  process.exit(2);
}
if (!existsSync(file)) {
  const { privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  });
  const account = {
    type: 'service_account',
    project_id: 'demo-xsigate',
    private_key_id: randomBytes(20).toString('hex'),
    private_key: privateKey,
    client_email: 'firebase-adminsdk@demo-xsigate.iam.gserviceaccount.com',
    client_id: '100000000000000000000',
    token_uri: 'https://oauth2.googleapis.com/token',
  };
  writeFileSync(file, JSON.stringify(account, null, 2) + '\n', { mode: 0o600 });
}
