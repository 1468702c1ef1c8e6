#!/usr/bin/env node
// Encrypt a card with the SDK's jwe.js *inside Chromium* and print the compact JWE.
// stdin: {"jwks": {...}, "card": {number, exp_month, exp_year, cvc}, "algs": ["RSA-OAEP-256"],
//         "force_alg": "RSA-OAEP" (optional: use the first key with this alg)}
// Used by tests/test_sdk_chromium_jwe.py to decrypt a browser-made JWE on the server.
import { launchChromium } from './chromium.mjs';
import { startServer } from './static-server.mjs';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const server = await startServer({ '/': '<!doctype html><title>jwe</title>' });
const browser = await launchChromium();
try {
  const page = await browser.context.newPage();
  await page.goto(`${server.origin}/`);
  const jwe = await page.evaluate(async ({ jwks, card, algs, forceAlg }) => {
    const m = await import('/src/jwe.js');
    if (forceAlg) {
      const payload = JSON.stringify({ ...card, iat: Math.floor(Date.now() / 1000) });
      return m.encryptCompact(payload, jwks.keys[0], { alg: forceAlg });
    }
    return m.encryptCard(card, jwks, { algs });
  }, { jwks: input.jwks, card: input.card, algs: input.algs, forceAlg: input.force_alg || null });
  const ua = await page.evaluate(() => navigator.userAgent);
  process.stdout.write(JSON.stringify({ jwe, user_agent: ua }) + '\n');
} finally {
  await browser.close();
  await server.close();
}
