// Card-number, expiry and CVC rules for the card frame: pure functions, no DOM.
// A plain ES module: the frame imports it in the browser, the unit tests in Node.

/** Brands the frame recognises, most specific prefixes first. `lengths`: valid PAN
 * lengths; `gaps`: where the display puts a space; `cvc`: digits of the security code. */
export const BRANDS = Object.freeze([
  { brand: 'amex', pattern: /^3[47]/, lengths: [15], gaps: [4, 10], cvc: 4 },
  { brand: 'diners', pattern: /^3(0[0-5]|[689])/, lengths: [14, 16, 19], gaps: [4, 10], cvc: 3 },
  { brand: 'discover', pattern: /^(6011|64[4-9]|65|622(12[6-9]|1[3-9]\d|[2-8]\d\d|9[01]\d|92[0-5]))/, lengths: [16, 19], gaps: [4, 8, 12], cvc: 3 },
  { brand: 'jcb', pattern: /^35(2[89]|[3-8])/, lengths: [16, 19], gaps: [4, 8, 12], cvc: 3 },
  { brand: 'unionpay', pattern: /^62/, lengths: [16, 17, 18, 19], gaps: [4, 8, 12], cvc: 3 },
  { brand: 'mastercard', pattern: /^(5[1-5]|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)/, lengths: [16], gaps: [4, 8, 12], cvc: 3 },
  { brand: 'visa', pattern: /^4/, lengths: [13, 16, 19], gaps: [4, 8, 12], cvc: 3 },
]);

const UNKNOWN = Object.freeze({ brand: 'unknown', lengths: [12, 13, 14, 15, 16, 17, 18, 19], gaps: [4, 8, 12], cvc: 3 });
export const MAX_PAN_LENGTH = 19;

/** Only the decimal digits of `text`. */
export function digits(text) {
  return String(text ?? '').replace(/\D/g, '');
}

/** The brand rule for a (partial) number; `brand: 'unknown'` when none matches. */
export function brandInfo(number) {
  const d = digits(number);
  return BRANDS.find((b) => b.pattern.test(d)) ?? UNKNOWN;
}

/** The brand name for a (partial) number: visa, mastercard, amex, ... or unknown. */
export function detectBrand(number) {
  return brandInfo(number).brand;
}

/** The Luhn (mod 10) check on a string of digits. */
export function luhnValid(number) {
  const d = digits(number);
  if (d.length === 0 || d.length !== String(number).length) return false;
  let sum = 0;
  for (let i = 0; i < d.length; i += 1) {
    let n = d.charCodeAt(d.length - 1 - i) - 48;
    if (i % 2 === 1) {
      n *= 2;
      if (n > 9) n -= 9;
    }
    sum += n;
  }
  return sum % 10 === 0;
}

/** The number as typed, grouped for display ("4242 4242 4242 4242", amex "3782 822463 10005"). */
export function formatNumber(input) {
  const info = brandInfo(input);
  const max = Math.max(...info.lengths);
  const d = digits(input).slice(0, max);
  let out = '';
  for (let i = 0; i < d.length; i += 1) {
    if (info.gaps.includes(i)) out += ' ';
    out += d[i];
  }
  return out;
}

/** Expiry as typed, shown "MM / YY": "1" stays "1", "2" becomes "02 / ", "1226" "12 / 26". */
export function formatExpiry(input, { deleting = false } = {}) {
  let d = digits(input).slice(0, 4);
  if (d.length === 1 && d > '1') d = `0${d}`;
  if (d.length >= 2) {
    const rest = d.slice(2);
    return rest || !deleting ? `${d.slice(0, 2)} / ${rest}` : d.slice(0, 2);
  }
  return d;
}

/** `{month, year}` (four-digit year) from "MM / YY" or "MM/YYYY"; null if it is not a date. */
export function parseExpiry(text) {
  const m = /^\s*(\d{1,2})\s*\/?\s*(\d{2}|\d{4})\s*$/.exec(String(text ?? '').replace(/\s+/g, ' '));
  if (!m) return null;
  const month = Number(m[1]);
  let year = Number(m[2]);
  if (m[2].length === 2) year += 2000;
  if (month < 1 || month > 12) return null;
  return { month, year };
}

/** Whether a card valid through the end of `month`/`year` is expired at `now`. */
export function isExpired(month, year, now = new Date()) {
  const y = now.getFullYear();
  const m = now.getMonth() + 1;
  return year < y || (year === y && month < m);
}

const FAR_FUTURE_YEARS = 20;

/** The field error codes of the card number, or null when it is valid. */
export function validateNumber(text) {
  const d = digits(text);
  if (d.length === 0) return 'incomplete_number';
  const info = brandInfo(d);
  if (d.length < Math.min(...info.lengths)) return 'incomplete_number';
  if (!info.lengths.includes(d.length)) return 'invalid_number';
  if (!luhnValid(d)) return 'invalid_number';
  return null;
}

/** The field error code of the expiry ("MM / YY"), or null. */
export function validateExpiry(text, now = new Date()) {
  const d = digits(text);
  if (d.length < 4) return 'incomplete_expiry';
  const parsed = parseExpiry(text);
  if (!parsed) return 'invalid_expiry';
  if (isExpired(parsed.month, parsed.year, now)) return 'expired_card';
  if (parsed.year > now.getFullYear() + FAR_FUTURE_YEARS) return 'invalid_expiry_year';
  return null;
}

/** The field error code of the CVC for the number's brand, or null. */
export function validateCvc(text, number) {
  const d = digits(text);
  const want = brandInfo(number).cvc;
  if (d.length === 0) return 'incomplete_cvc';
  if (d.length !== String(text).trim().length) return 'invalid_cvc';
  if (d.length < want) return 'incomplete_cvc';
  if (d.length > want) return 'invalid_cvc';
  return null;
}

/** Messages shown (and announced) for each field error code. */
export const MESSAGES = Object.freeze({
  incomplete_number: 'Your card number is incomplete.',
  invalid_number: 'Your card number is invalid.',
  incomplete_expiry: "Your card's expiration date is incomplete.",
  invalid_expiry: "Your card's expiration date is invalid.",
  invalid_expiry_year: "Your card's expiration year is invalid.",
  expired_card: 'Your card has expired.',
  incomplete_cvc: "Your card's security code is incomplete.",
  invalid_cvc: "Your card's security code is invalid.",
});

/** Validate the three fields: `{valid, errors: {number?, expiry?, cvc?}, card?}` where
 * `card` is `{number, exp_month, exp_year, cvc}` when valid (what gets encrypted). */
export function validateCard({ number, expiry, cvc }, now = new Date()) {
  const errors = {};
  const n = validateNumber(number);
  if (n) errors.number = n;
  const e = validateExpiry(expiry, now);
  if (e) errors.expiry = e;
  const c = validateCvc(cvc, number);
  if (c) errors.cvc = c;
  if (Object.keys(errors).length) return { valid: false, errors };
  const { month, year } = parseExpiry(expiry);
  return {
    valid: true,
    errors,
    card: { number: digits(number), exp_month: month, exp_year: year, cvc: digits(cvc) },
  };
}
