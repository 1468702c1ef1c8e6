// Unit tests of src/card.js: Luhn, brands, formatting, expiry, CVC and whole-card rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MESSAGES, detectBrand, formatExpiry, formatNumber, isExpired, luhnValid, parseExpiry,
  validateCard, validateCvc, validateExpiry, validateNumber,
} from '../src/card.js';

const NOW = new Date(2026, 10, 23); // 23 November 2026, local time

test('Luhn accepts valid test numbers and rejects one-digit changes', () => {
  for (const pan of ['4242424242424242', '4000000000000002', '5555555555554444', '378282246310005',
    '6011111111111117', '3056930009020004', '3566002020360505', '79927398713']) {
    assert.equal(luhnValid(pan), true, pan);
  }
  for (const pan of ['4242424242424241', '4242424242424243', '79927398710', '1234567812345678']) {
    assert.equal(luhnValid(pan), false, pan);
  }
  assert.equal(luhnValid(''), false);
  assert.equal(luhnValid('4242 4242 4242 4242'), false, 'only bare digits are checked');
});

test('brands are detected from the leading digits', () => {
  const cases = {
    4: 'visa', 4242: 'visa', 51: 'mastercard', 5555: 'mastercard', 2221: 'mastercard', 2720: 'mastercard',
    2721: 'unknown', 34: 'amex', 37: 'amex', 6011: 'discover', 65: 'discover', 644: 'discover',
    3528: 'jcb', 3589: 'jcb', 36: 'diners', 300: 'diners', 62: 'unionpay', 9: 'unknown', '': 'unknown',
  };
  for (const [prefix, brand] of Object.entries(cases)) assert.equal(detectBrand(prefix), brand, prefix);
  assert.equal(detectBrand('4242 4242'), 'visa');
});

test('numbers are grouped for display by brand and cut at the brand maximum', () => {
  assert.equal(formatNumber('4242424242424242'), '4242 4242 4242 4242');
  assert.equal(formatNumber('42424'), '4242 4');
  assert.equal(formatNumber('4242-4242 42ab42'), '4242 4242 4242');
  assert.equal(formatNumber('378282246310005'), '3782 822463 10005');
  assert.equal(formatNumber('3782822463100059999'), '3782 822463 10005');
  assert.equal(formatNumber('55555555555544449'), '5555 5555 5555 4444');
  assert.equal(formatNumber(''), '');
});

test('expiry is formatted as MM / YY while typing', () => {
  assert.equal(formatExpiry('1'), '1');
  assert.equal(formatExpiry('2'), '02 / ');
  assert.equal(formatExpiry('12'), '12 / ');
  assert.equal(formatExpiry('12', { deleting: true }), '12');
  assert.equal(formatExpiry('123'), '12 / 3');
  assert.equal(formatExpiry('12345'), '12 / 34');
  assert.equal(formatExpiry('12 / 34'), '12 / 34');
});

test('expiry parses two- and four-digit years and rejects impossible months', () => {
  assert.deepEqual(parseExpiry('12 / 34'), { month: 12, year: 2034 });
  assert.deepEqual(parseExpiry('1/2030'), { month: 1, year: 2030 });
  assert.equal(parseExpiry('13 / 30'), null);
  assert.equal(parseExpiry('00 / 30'), null);
  assert.equal(parseExpiry('ab'), null);
});

test('a card is valid through the last day of its expiry month', () => {
  assert.equal(isExpired(11, 2026, NOW), false);
  assert.equal(isExpired(10, 2026, NOW), true);
  assert.equal(isExpired(12, 2025, NOW), true);
  assert.equal(isExpired(1, 2027, NOW), false);
  assert.equal(validateExpiry('11 / 26', NOW), null);
  assert.equal(validateExpiry('10 / 26', NOW), 'expired_card');
  assert.equal(validateExpiry('01 / 20', NOW), 'expired_card');
  assert.equal(validateExpiry('13 / 30', NOW), 'invalid_expiry');
  assert.equal(validateExpiry('12 / 3', NOW), 'incomplete_expiry');
  assert.equal(validateExpiry('', NOW), 'incomplete_expiry');
  assert.equal(validateExpiry('12 / 99', NOW), 'invalid_expiry_year');
});

test('number errors distinguish incomplete from invalid', () => {
  assert.equal(validateNumber('4242 4242 4242 4242'), null);
  assert.equal(validateNumber(''), 'incomplete_number');
  assert.equal(validateNumber('4242 4242'), 'incomplete_number');
  assert.equal(validateNumber('4242 4242 4242 4241'), 'invalid_number');
  assert.equal(validateNumber('37828224631000'), 'incomplete_number');
  assert.equal(validateNumber('378282246310005'), null);
  assert.equal(validateNumber('42424242424242424'), 'invalid_number', '17 digits is no Visa length');
});

test('the CVC length follows the brand', () => {
  assert.equal(validateCvc('123', '4242424242424242'), null);
  assert.equal(validateCvc('', '4242424242424242'), 'incomplete_cvc');
  assert.equal(validateCvc('12', '4242424242424242'), 'incomplete_cvc');
  assert.equal(validateCvc('1234', '4242424242424242'), 'invalid_cvc');
  assert.equal(validateCvc('123', '378282246310005'), 'incomplete_cvc');
  assert.equal(validateCvc('1234', '378282246310005'), null);
  assert.equal(validateCvc('12a', '4242424242424242'), 'invalid_cvc');
});

test('validateCard returns the card to encrypt, or every field error', () => {
  assert.deepEqual(validateCard({ number: '4242 4242 4242 4242', expiry: '12 / 34', cvc: '123' }, NOW), {
    valid: true, errors: {}, card: { number: '4242424242424242', exp_month: 12, exp_year: 2034, cvc: '123' },
  });
  assert.deepEqual(validateCard({ number: '4242 4242 4242 4241', expiry: '01 / 20', cvc: '' }, NOW), {
    valid: false, errors: { number: 'invalid_number', expiry: 'expired_card', cvc: 'incomplete_cvc' },
  });
  for (const code of ['invalid_number', 'expired_card', 'incomplete_cvc', 'incomplete_expiry']) {
    assert.equal(typeof MESSAGES[code], 'string');
  }
});
