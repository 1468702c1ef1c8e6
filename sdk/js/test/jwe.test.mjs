// Unit tests of src/jwe.js: a compact JWE made with WebCrypto (globalThis.crypto in Node)
// opened with Node's own crypto (OpenSSL), for both key-management algorithms.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, createDecipheriv, generateKeyPairSync, privateDecrypt } from 'node:crypto';
import { base64url, base64urlDecode, encryptCard, encryptCompact, selectKey } from '../src/jwe.js';

const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PUBLIC_JWK = { ...publicKey.export({ format: 'jwk' }), kid: 'k-test-1', use: 'enc' };
const HASH = { 'RSA-OAEP-256': 'sha256', 'RSA-OAEP': 'sha1' };

function b64(part) {
  assert.match(part, /^[A-Za-z0-9_-]*$/, 'not unpadded base64url');
  return Buffer.from(part, 'base64url');
}

/** Open a compact JWE the way the server does (RFC 7516 section 5.2), with OpenSSL. */
function open(compact, key = privateKey) {
  const parts = compact.split('.');
  assert.equal(parts.length, 5);
  const header = JSON.parse(b64(parts[0]).toString('utf8'));
  const cek = privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: HASH[header.alg] }, b64(parts[1]));
  const decipher = createDecipheriv('aes-256-gcm', cek, b64(parts[2]));
  decipher.setAAD(Buffer.from(parts[0], 'ascii'));
  decipher.setAuthTag(b64(parts[4]));
  const plaintext = Buffer.concat([decipher.update(b64(parts[3])), decipher.final()]);
  return { header, cek, iv: b64(parts[2]), tag: b64(parts[4]), plaintext };
}

for (const alg of ['RSA-OAEP-256', 'RSA-OAEP']) {
  test(`${alg} + A256GCM: header, sizes and plaintext survive a round trip through OpenSSL`, async () => {
    const jwe = await encryptCompact('{"hello":"world"}', { ...PUBLIC_JWK, alg }, { alg });
    const opened = open(jwe);
    assert.deepEqual(opened.header, { alg, enc: 'A256GCM', kid: 'k-test-1' });
    assert.equal(opened.cek.length, 32);
    assert.equal(opened.iv.length, 12);
    assert.equal(opened.tag.length, 16);
    assert.equal(b64(jwe.split('.')[1]).length, 256, 'RSA-2048 wraps to 256 bytes');
    assert.equal(opened.plaintext.toString('utf8'), '{"hello":"world"}');
  });
}

test('changing any of the five parts makes decryption fail', async () => {
  const jwe = await encryptCompact('secret card', PUBLIC_JWK, { alg: 'RSA-OAEP-256' });
  const parts = jwe.split('.');
  for (let i = 0; i < 5; i += 1) {
    const bytes = b64(parts[i]);
    bytes[bytes.length - 1] ^= 0x01;
    const tampered = parts.slice();
    tampered[i] = base64url(bytes);
    assert.throws(() => open(tampered.join('.')), undefined, `part ${i} tampered`);
  }
  // Another header (the AAD) with the same key, IV, ciphertext and tag fails too.
  const header = base64url(Buffer.from(JSON.stringify({ alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: 'other' })));
  assert.throws(() => open([header, ...parts.slice(1)].join('.')));
});

test('every encryption uses a fresh key and IV', async () => {
  const a = await encryptCompact('same', PUBLIC_JWK, { alg: 'RSA-OAEP-256' });
  const b = await encryptCompact('same', PUBLIC_JWK, { alg: 'RSA-OAEP-256' });
  assert.notEqual(a.split('.')[1], b.split('.')[1]);
  assert.notEqual(a.split('.')[2], b.split('.')[2]);
  assert.notDeepEqual(open(a).cek, open(b).cek);
});

test('encryptCard sends exactly {number, exp_month, exp_year, cvc, iat}', async () => {
  const jwks = { keys: [{ ...PUBLIC_JWK, alg: 'RSA-OAEP-256' }] };
  const now = Date.UTC(2026, 10, 23, 1, 2, 3, 999);
  const jwe = await encryptCard({ number: '4242424242424242', exp_month: 12, exp_year: 2034, cvc: '123', extra: 'x' }, jwks, { now });
  const payload = JSON.parse(open(jwe).plaintext.toString('utf8'));
  assert.deepEqual(payload, { number: '4242424242424242', exp_month: 12, exp_year: 2034, cvc: '123', iat: Math.floor(now / 1000) });
  assert.ok(!jwe.includes('4242424242424242'));
});

test('selectKey prefers RSA-OAEP-256, falls back to RSA-OAEP, skips unusable keys', () => {
  const sig = { ...PUBLIC_JWK, kid: 'sig', use: 'sig', alg: 'RSA-OAEP-256' };
  const sha1 = { ...PUBLIC_JWK, kid: 'sha1', alg: 'RSA-OAEP' };
  const sha256 = { ...PUBLIC_JWK, kid: 'sha256', alg: 'RSA-OAEP-256' };
  assert.deepEqual(selectKey({ keys: [sig, sha1, sha256] }), { jwk: sha256, alg: 'RSA-OAEP-256' });
  assert.deepEqual(selectKey({ keys: [sig, sha1] }), { jwk: sha1, alg: 'RSA-OAEP' });
  assert.deepEqual(selectKey({ keys: [sha256, sha1] }, ['RSA-OAEP']), { jwk: sha1, alg: 'RSA-OAEP' });
  assert.throws(() => selectKey({ keys: [sig] }), /no RSA encryption key/);
  assert.throws(() => selectKey({ keys: [{ kty: 'EC', kid: 'ec', crv: 'P-256' }] }));
  assert.throws(() => selectKey({}));
});

test('unsupported algorithms and keys without kid are refused', async () => {
  await assert.rejects(encryptCompact('x', PUBLIC_JWK, { alg: 'RSA1_5' }), /unsupported alg/);
  const { kid, ...noKid } = PUBLIC_JWK;
  assert.equal(kid, 'k-test-1');
  await assert.rejects(encryptCompact('x', noKid, { alg: 'RSA-OAEP-256' }), /no kid/);
});

test('base64url is unpadded, URL-safe and strict', () => {
  const bytes = Uint8Array.from([0xfb, 0xff, 0xbf, 0x00, 0x01]);
  assert.equal(base64url(bytes), '-_-_AAE');
  assert.deepEqual(base64urlDecode('-_-_AAE'), bytes);
  assert.throws(() => base64urlDecode('-_-_AAE='));
  assert.throws(() => base64urlDecode('ab+/'));
  assert.throws(() => base64urlDecode('abcde'));
  const big = new Uint8Array(100000).map((_, i) => i % 251);
  assert.deepEqual(base64urlDecode(base64url(big)), big);
});
