// Unit tests of src/paygate.js outside a browser: arguments and the typed error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Paygate, { PaygateError } from '../src/index.js';

test('the npm entry exports Paygate and PaygateError', () => {
  assert.equal(typeof Paygate, 'function');
  assert.equal(Paygate.PaygateError, PaygateError);
  assert.equal(globalThis.Paygate, Paygate, 'the classic script exposes the global too');
});

test('Paygate needs a publishable key and an http(s) gateway origin', () => {
  for (const [key, options] of [[undefined, { origin: 'https://gw.example' }], ['sk_live_x', { origin: 'https://gw.example' }],
    ['pk_test_x', {}], ['pk_test_x', { origin: 'javascript:alert(1)' }], ['pk_test_x', { origin: 'not a url' }]]) {
    assert.throws(() => Paygate(key, options), (err) => err instanceof PaygateError && err.code === 'invalid_argument',
      JSON.stringify([key, options]));
  }
});

test('the gateway origin is normalised to scheme, host and port', () => {
  assert.equal(Paygate('pk_test_x', { origin: 'https://GW.example:443/some/path?q=1' }).origin, 'https://gw.example');
  assert.equal(Paygate('pk_test_x', { origin: 'http://127.0.0.1:8080/' }).origin, 'http://127.0.0.1:8080');
});

test('PaygateError is an Error with a code and typed details', () => {
  const err = new PaygateError('api_error', 'refused', { problem: 'replayed_jwe', status: 409 });
  assert.ok(err instanceof Error);
  assert.ok(err instanceof PaygateError);
  assert.equal(err.name, 'PaygateError');
  assert.deepEqual([err.code, err.message, err.problem, err.status, err.fields], ['api_error', 'refused', 'replayed_jwe', 409, null]);
});
