// Compact JWE (RFC 7516) with WebCrypto: RSA-OAEP-256 (or RSA-OAEP, SHA-1, for HSMs
// that only do that) key wrapping and A256GCM content encryption. No dependencies:
// a plain ES module for the card frame and, through globalThis.crypto, for Node >= 20.

/** Key-management algorithms and the RSA-OAEP hash WebCrypto uses for each. */
export const ALGORITHMS = Object.freeze({ 'RSA-OAEP-256': 'SHA-256', 'RSA-OAEP': 'SHA-1' });
export const ENC = 'A256GCM';

function subtle() {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('WebCrypto is not available (a secure context is required)');
  return s;
}

/** Unpadded base64url of bytes (RFC 7515 section 2). */
export function base64url(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let bin = '';
  for (let i = 0; i < b.length; i += 0x8000) {
    bin += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  }
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Bytes of unpadded base64url text; throws on anything else. */
export function base64urlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new Error('not base64url');
  const bin = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

/** The first key of a JWKS usable for encryption with one of `algs` (in that order of
 * preference): `{jwk, alg}`; throws when there is none. */
export function selectKey(jwks, algs = ['RSA-OAEP-256', 'RSA-OAEP']) {
  const keys = Array.isArray(jwks?.keys) ? jwks.keys : [];
  for (const alg of algs) {
    const jwk = keys.find((k) => k && k.kty === 'RSA' && (k.use === undefined || k.use === 'enc')
      && (k.alg === undefined || k.alg === alg) && typeof k.kid === 'string' && k.n && k.e);
    if (jwk && ALGORITHMS[alg]) return { jwk, alg };
  }
  throw new Error('the JWKS has no RSA encryption key for ' + algs.join(' or '));
}

/** Import the public part of an RSA JWK for RSA-OAEP with `alg`'s hash. */
export async function importPublicKey(jwk, alg) {
  const hash = ALGORITHMS[alg];
  if (!hash) throw new Error(`unsupported alg ${alg}`);
  const clean = { kty: 'RSA', n: jwk.n, e: jwk.e, alg, ext: true };
  return subtle().importKey('jwk', clean, { name: 'RSA-OAEP', hash }, false, ['encrypt']);
}

/** Encrypt `plaintext` (bytes or string) to the RSA public `jwk` as a compact JWE:
 * `BASE64URL(header).BASE64URL(encrypted CEK).BASE64URL(IV).BASE64URL(ciphertext).BASE64URL(tag)`
 * with header `{alg, enc: "A256GCM", kid}`; the ASCII header segment is the GCM AAD. */
export async function encryptCompact(plaintext, jwk, { alg = jwk.alg ?? 'RSA-OAEP-256' } = {}) {
  if (!ALGORITHMS[alg]) throw new Error(`unsupported alg ${alg}`);
  if (typeof jwk.kid !== 'string' || !jwk.kid) throw new Error('the JWK has no kid');
  const s = subtle();
  const data = typeof plaintext === 'string' ? new TextEncoder().encode(plaintext) : plaintext;
  const header = { alg, enc: ENC, kid: jwk.kid };
  const protectedB64 = base64url(new TextEncoder().encode(JSON.stringify(header)));
  const cek = globalThis.crypto.getRandomValues(new Uint8Array(32));
  const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
  const rsaKey = await importPublicKey(jwk, alg);
  const encryptedKey = new Uint8Array(await s.encrypt({ name: 'RSA-OAEP' }, rsaKey, cek));
  const aesKey = await s.importKey('raw', cek, { name: 'AES-GCM' }, false, ['encrypt']);
  cek.fill(0);
  const sealed = new Uint8Array(await s.encrypt(
    { name: 'AES-GCM', iv, additionalData: new TextEncoder().encode(protectedB64), tagLength: 128 },
    aesKey, data));
  const ciphertext = sealed.subarray(0, sealed.length - 16);
  const tag = sealed.subarray(sealed.length - 16);
  return [protectedB64, base64url(encryptedKey), base64url(iv), base64url(ciphertext), base64url(tag)].join('.');
}

/** The card payload the gateway expects, encrypted to the JWKS's preferred key. */
export async function encryptCard(card, jwks, { now = Date.now(), algs } = {}) {
  const { jwk, alg } = selectKey(jwks, algs);
  const payload = JSON.stringify({
    number: card.number,
    exp_month: card.exp_month,
    exp_year: card.exp_year,
    cvc: card.cvc,
    iat: Math.floor(now / 1000),
  });
  return encryptCompact(payload, jwk, { alg });
}
