// The card iframe SDK in a real browser (Debian's Chromium via playwright-core) against
// the whole stack (`paygate up`): the demo checkout page on http://localhost:PORT mounts
// the card frame from the gateway's origin http://127.0.0.1:PORT.
//
// Proves: an approving card pays and the intent succeeds; a declined card shows the
// decline; a bad number, an expired card and an empty CVC show field errors and no
// request leaves for /v1/tokens; the page's script cannot read the frame's inputs;
// no request the browser made carries the PAN (only the JWE, encrypted, carries the
// card); a message from a foreign origin is ignored by the frame; frame-ancestors
// stops a foreign origin from framing the card fields. Writes the screenshots.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { launchChromium } from '../tools/chromium.mjs';
import { startServer } from '../tools/static-server.mjs';
import { startStack } from '../tools/stack.mjs';

// `make screenshots` sets PAYGATE_SCREENSHOTS=screenshots to refresh the ones the README
// shows; otherwise (`make test`) they go to a temporary folder and the tree stays clean.
const SCREENSHOTS = `${process.env.PAYGATE_SCREENSHOTS
  ? resolve(process.env.PAYGATE_SCREENSHOTS)
  : mkdtempSync(join(tmpdir(), 'paygate-screenshots-'))}/`;
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const FRAME = 'iframe[title="Secure card payment input"]';
const APPROVED = '4242424242424242';
const DECLINED = '4000000000000002';
const PANS = [APPROVED, DECLINED, '4242424242424241'];
const UI_TIMEOUT = 30000;

let stack;
let browser;
const requests = [];   // every request of every page and frame of the browser context

function record(request) {
  requests.push({
    url: request.url(),
    method: request.method(),
    headers: request.headers(),
    body: request.postData() ?? '',
    frameUrl: (() => {
      try {
        return request.frame().url();
      } catch {
        return '';
      }
    })(),
    request,
  });
}

const tokenRequests = () => requests.filter((r) => new URL(r.url).pathname === '/v1/tokens');
const payRequests = () => requests.filter((r) => new URL(r.url).pathname === '/demo/checkout/pay');

async function openCheckout() {
  const page = await browser.context.newPage();
  await page.goto(stack.checkoutUrl);
  await page.waitForSelector('#checkout[data-ready="true"]', { timeout: UI_TIMEOUT });
  return page;
}

async function typeCard(page, { number, expiry, cvc }) {
  const frame = page.frameLocator(FRAME);
  if (number) await frame.getByLabel('Card number').pressSequentially(number);
  if (expiry) await frame.getByLabel('Expiry date (MM / YY)').pressSequentially(expiry);
  if (cvc) await frame.getByLabel('Security code (CVC)').pressSequentially(cvc);
}

async function resultOf(page) {
  await page.waitForSelector('#result:not([data-state="idle"]):not([data-state="working"])', { timeout: UI_TIMEOUT });
  return page.locator('#result').evaluate((el) => ({ state: el.dataset.state, text: el.textContent }));
}

function decodeSegment(segment) {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
}

describe('the demo checkout in Chromium', () => {
  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    stack = await startStack();
    browser = await launchChromium();
    browser.context.on('request', record);
  });

  after(async () => {
    if (browser) await browser.close();
    if (stack) await stack.stop();
    if (!process.env.PAYGATE_SCREENSHOTS) rmSync(SCREENSHOTS, { recursive: true, force: true });
  });

  test('the page and the card frame are on different origins; the fields are labelled', async () => {
    assert.notEqual(stack.pageOrigin, stack.gatewayOrigin);
    const page = await openCheckout();
    assert.equal(new URL(page.url()).origin, stack.pageOrigin);
    const frameEl = await page.$(FRAME);
    const frame = await frameEl.contentFrame();
    assert.equal(new URL(frame.url()).origin, stack.gatewayOrigin);
    const attrs = await frame.evaluate(() => ['number', 'expiry', 'cvc'].map((id) => {
      const el = document.getElementById(id);
      return [id, el.getAttribute('autocomplete'), el.getAttribute('inputmode'),
        document.querySelector(`label[for="${id}"]`) !== null, el.getAttribute('aria-describedby')];
    }));
    assert.deepEqual(attrs, [
      ['number', 'cc-number', 'numeric', true, 'number-error'],
      ['expiry', 'cc-exp', 'numeric', true, 'expiry-error'],
      ['cvc', 'cc-csc', 'numeric', true, 'cvc-error'],
    ]);
    await page.screenshot({ path: `${SCREENSHOTS}checkout-idle.png`, fullPage: true });
    await page.close();
  });

  test('live formatting, brand detection and the change event reach the page', async () => {
    const page = await openCheckout();
    await typeCard(page, { number: '4242424242424242', expiry: '1234', cvc: '123' });
    const frame = page.frameLocator(FRAME);
    assert.equal(await frame.locator('#number').inputValue(), '4242 4242 4242 4242');
    assert.equal(await frame.locator('#expiry').inputValue(), '12 / 34');
    await page.waitForSelector('#checkout[data-card-complete="true"]', { timeout: UI_TIMEOUT });
    assert.equal(await page.locator('#card-brand').textContent(), 'visa');
    await frame.locator('#number').fill('');
    await frame.locator('#number').pressSequentially('378282246310005');
    assert.equal(await frame.locator('#number').inputValue(), '3782 822463 10005');
    await page.waitForFunction(() => document.getElementById('card-brand').textContent === 'amex');
    // An amex needs a 4-digit CVC: 3 digits make the card incomplete again.
    await page.waitForSelector('#checkout[data-card-complete="false"]', { timeout: UI_TIMEOUT });
    await page.close();
  });

  test('a bad number, an expired card and an empty CVC show field errors without any request', async () => {
    const before = { tokens: tokenRequests().length, pay: payRequests().length };
    const cases = [
      { card: { number: '4242424242424241', expiry: '1234', cvc: '123' }, field: 'number', text: /card number is invalid/i },
      { card: { number: APPROVED, expiry: '0120', cvc: '123' }, field: 'expiry', text: /card has expired/i },
      { card: { number: APPROVED, expiry: '1234' }, field: 'cvc', text: /security code is incomplete/i },
    ];
    for (const { card, field, text } of cases) {
      const page = await openCheckout();
      await typeCard(page, card);
      await page.click('#pay');
      const result = await resultOf(page);
      assert.deepEqual(result, { state: 'error', text: 'Please check your card details.' });
      const frame = page.frameLocator(FRAME);
      await frame.locator(`#${field}[aria-invalid="true"]`).waitFor({ timeout: UI_TIMEOUT });
      assert.match(await frame.locator(`#${field}-error`).textContent(), text);
      assert.equal(await frame.locator(`#${field}-error`).getAttribute('aria-live'), 'polite');
      for (const other of ['number', 'expiry', 'cvc'].filter((f) => f !== field)) {
        assert.equal(await frame.locator(`#${other}`).getAttribute('aria-invalid'), 'false', other);
      }
      if (field === 'number') await page.screenshot({ path: `${SCREENSHOTS}checkout-error.png`, fullPage: true });
      await page.close();
    }
    assert.equal(tokenRequests().length, before.tokens, 'a request went to /v1/tokens');
    assert.equal(payRequests().length, before.pay, 'a request went to the merchant backend');
  });

  test('an approving card pays: the intent succeeds, through one JWE to /v1/tokens', async () => {
    const before = tokenRequests().length;
    const page = await openCheckout();
    await typeCard(page, { number: APPROVED, expiry: '1234', cvc: '123' });
    const payResponse = page.waitForResponse((r) => new URL(r.url()).pathname === '/demo/checkout/pay');
    await page.click('#pay');
    const paid = await (await payResponse).json();
    assert.equal(paid.status, 'succeeded');
    assert.match(paid.intent, /^pi_/);
    assert.equal(paid.error, null);
    const result = await resultOf(page);
    assert.equal(result.state, 'success');
    assert.match(result.text, new RegExp(`Payment succeeded: ${paid.intent} \\(visa ending 4242\\)`));
    await page.screenshot({ path: `${SCREENSHOTS}checkout-success.png`, fullPage: true });

    const tokens = tokenRequests().slice(before);
    assert.equal(tokens.length, 1);
    const [tok] = tokens;
    assert.equal(tok.method, 'POST');
    assert.equal(new URL(tok.url).origin, stack.gatewayOrigin);
    assert.equal(new URL(tok.frameUrl).origin, stack.gatewayOrigin, 'the frame, not the page, posts the card');
    assert.equal(tok.headers.authorization, `Bearer ${stack.info.merchant.publishable_key}`);
    const body = JSON.parse(tok.body);
    assert.deepEqual(Object.keys(body), ['encrypted_card']);
    const parts = body.encrypted_card.split('.');
    assert.equal(parts.length, 5);
    for (const p of parts) assert.match(p, /^[A-Za-z0-9_-]+$/);
    const jwks = await (await fetch(`${stack.info.http}/v1/keys`)).json();
    assert.deepEqual(decodeSegment(parts[0]), { alg: 'RSA-OAEP-256', enc: 'A256GCM', kid: jwks.keys[0].kid });
    assert.equal(Buffer.from(parts[2], 'base64url').length, 12);
    assert.equal(Buffer.from(parts[4], 'base64url').length, 16);

    const pay = payRequests().at(-1);
    assert.equal(new URL(pay.frameUrl).origin, stack.pageOrigin);
    const payBody = JSON.parse(pay.body);
    assert.deepEqual(Object.keys(payBody), ['token']);
    assert.notEqual(payBody.token, APPROVED);
    assert.match(payBody.token, /^\d{12}4242$/);
    // The merchant page's DOM never held the card number.
    const html = await page.content();
    for (const pan of PANS) assert.ok(!html.includes(pan));
    await page.close();
  });

  test('a declined card shows the decline', async () => {
    const page = await openCheckout();
    await typeCard(page, { number: DECLINED, expiry: '1234', cvc: '123' });
    const payResponse = page.waitForResponse((r) => new URL(r.url()).pathname === '/demo/checkout/pay');
    await page.click('#pay');
    const paid = await (await payResponse).json();
    assert.equal(paid.status, 'requires_payment_method');
    assert.equal(paid.error.code, 'card_declined');
    assert.equal(paid.error.decline_code, 'generic_decline');
    assert.equal(paid.error.network_response_code, '05');
    const result = await resultOf(page);
    assert.equal(result.state, 'declined');
    assert.match(result.text, /^Payment declined: .+ \(generic_decline\)$/);
    assert.ok(result.text.includes(paid.error.message));
    await page.close();
  });

  test("the merchant page's script cannot read the frame's inputs", async () => {
    const page = await openCheckout();
    await typeCard(page, { number: APPROVED, expiry: '1234', cvc: '123' });
    const probe = await page.evaluate(() => {
      const iframe = document.querySelector('iframe');
      const out = { contentDocument: iframe.contentDocument === null };
      try {
        out.read = iframe.contentWindow.document.getElementById('number').value;
      } catch (e) {
        out.error = e.name;
      }
      try {
        out.frameRead = window.frames[0].document.body.innerHTML;
      } catch (e) {
        out.frameError = e.name;
      }
      return out;
    });
    assert.deepEqual(probe, { contentDocument: true, error: 'SecurityError', frameError: 'SecurityError' });
    await page.close();
  });

  test('a message from a foreign origin is ignored by the frame', async () => {
    const evil = await startServer({ '/evil.html': '<!doctype html><title>evil</title><p>evil</p>' });
    try {
      assert.notEqual(evil.origin, stack.pageOrigin);
      assert.notEqual(evil.origin, stack.gatewayOrigin);
      const attacker = await browser.context.newPage();
      await attacker.goto(`${evil.origin}/evil.html`);
      // The attacker opens the merchant's checkout: it gets a WindowProxy of it, and of
      // its card frame (window.frames is readable across origins).
      const [popup] = await Promise.all([
        browser.context.waitForEvent('page'),
        attacker.evaluate((url) => {
          window.received = [];
          window.addEventListener('message', (e) => window.received.push(e.data));
          window.victim = window.open(url);
        }, stack.checkoutUrl),
      ]);
      await popup.waitForSelector('#checkout[data-ready="true"]', { timeout: UI_TIMEOUT });
      await typeCard(popup, { number: APPROVED, expiry: '1234', cvc: '123' });
      const before = tokenRequests().length;
      await popup.waitForSelector('#checkout[data-card-complete="true"]', { timeout: UI_TIMEOUT });
      const sent = await attacker.evaluate(() => {
        const frame = window.victim.frames[0];
        for (const type of ['tokenize', 'clear', 'configure']) {
          frame.postMessage({ paygate: 1, type, id: 'evil-1', style: { color: 'red' } }, '*');
        }
        // ...and paygate.js on the merchant page must not believe a forged frame either.
        window.victim.postMessage({ paygate: 1, type: 'change', complete: false, empty: true, brand: 'amex', errors: {} }, '*');
        return true;
      });
      assert.equal(sent, true);
      // Nothing can prove a negative instantly: give the frame a generous second to
      // (not) act, then check that it neither tokenized nor answered nor changed.
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(tokenRequests().length, before, 'the foreign message caused a tokenization');
      assert.deepEqual(await attacker.evaluate(() => window.received), []);
      const frame = popup.frameLocator(FRAME);
      assert.equal(await frame.locator('#number').inputValue(), '4242 4242 4242 4242', 'clear was obeyed');
      assert.equal(await popup.locator('#card-brand').textContent(), 'visa', 'a forged change event was believed');
      assert.equal(await popup.locator('#card-complete').textContent(), 'yes', 'a forged change event was believed');
      // The same frame still obeys its real parent.
      await popup.click('#pay');
      assert.equal((await resultOf(popup)).state, 'success');
      assert.equal(tokenRequests().length, before + 1);
      await popup.close();
      await attacker.close();
    } finally {
      await evil.close();
    }
  });

  test("frame-ancestors keeps the card frame out of a foreign origin's page", async () => {
    const frameUrl = `${stack.gatewayOrigin}/sdk/v1/frame.html?key=${stack.info.merchant.publishable_key}`
      + `&parent=${encodeURIComponent(stack.pageOrigin)}`;
    const evil = await startServer({
      '/frame-it.html': `<!doctype html><title>framing</title><iframe id="f" src="${frameUrl}"></iframe>`,
    });
    try {
      const attacker = await browser.context.newPage();
      const logs = [];
      attacker.on('console', (m) => logs.push(m.text()));
      const frameResponse = attacker.waitForResponse((r) => r.url() === frameUrl);
      await attacker.goto(`${evil.origin}/frame-it.html`);
      // The gateway did answer (200, the policy in its header)...
      const response = await frameResponse;
      assert.equal(response.status(), 200);
      assert.match(response.headers()['content-security-policy'], new RegExp(`frame-ancestors ${stack.pageOrigin}$`));
      // ...and the browser refused to render it inside the foreign page.
      const child = attacker.frames().find((f) => f !== attacker.mainFrame());
      assert.ok(child, 'no child frame');
      await assert.rejects(child.waitForSelector('#number', { timeout: 2000 }));
      assert.notEqual(child.url(), frameUrl);
      await attacker.close();
    } finally {
      await evil.close();
    }
  });

  test('no request the browser made carries the PAN in clear', () => {
    assert.ok(requests.length > 20, `only ${requests.length} requests recorded`);
    assert.ok(tokenRequests().length >= 3);
    for (const r of requests) {
      const haystack = [r.url, JSON.stringify(r.headers), r.body].join('\n');
      for (const pan of PANS) {
        const spaced = pan.replace(/(\d{4})(?=\d)/g, '$1 ');
        for (const needle of [pan, spaced, encodeURIComponent(spaced), pan.slice(0, 12)]) {
          assert.ok(!haystack.includes(needle), `${r.method} ${r.url} carries card digits`);
        }
      }
    }
    // The card left the browser only in /v1/tokens, and only as {"encrypted_card": JWE}.
    for (const r of requests.filter((x) => x.method !== 'GET')) {
      const path = new URL(r.url).pathname;
      assert.ok(['/v1/tokens', '/demo/checkout/pay'].includes(path), `unexpected ${r.method} ${path}`);
    }
  });

  test('the idle, field-error and paid screens were captured as PNG images', () => {
    for (const name of ['checkout-idle', 'checkout-error', 'checkout-success']) {
      const image = readFileSync(`${SCREENSHOTS}${name}.png`);
      assert.ok(image.length > 1000, `${name}.png is only ${image.length} bytes`);
      assert.deepEqual(image.subarray(0, 8), PNG, `${name}.png is not a PNG`);
    }
  });
});
