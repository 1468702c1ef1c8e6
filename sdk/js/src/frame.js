// The card frame: served by the gateway from its own origin, embedded by paygate.js.
// It owns the card fields, validates them, encrypts the card (compact JWE, WebCrypto)
// to the gateway's key and posts it to /v1/tokens (same origin). The parent page gets
// only {token, brand, last4, exp_month, exp_year}, field error codes and state.
import {
  MESSAGES, detectBrand, digits, formatExpiry, formatNumber, validateCard, validateCvc,
  validateExpiry, validateNumber,
} from './card.js';
import { encryptCard } from './jwe.js';

const params = new URLSearchParams(window.location.search);
const publishableKey = params.get('key') || '';
// The server only serves this page when `parent` is one of the merchant's allowed
// origins, and its CSP frame-ancestors is that origin: so window.parent is it.
const parentOrigin = (() => {
  try {
    const origin = new URL(params.get('parent') || '').origin;
    return origin === 'null' ? null : origin;
  } catch {
    return null;
  }
})();

const FIELDS = ['number', 'expiry', 'cvc'];
const STYLE_VARS = {
  color: '--pg-color', fontFamily: '--pg-font-family', fontSize: '--pg-font-size',
  errorColor: '--pg-error-color', borderColor: '--pg-border-color',
  focusColor: '--pg-focus-color', background: '--pg-background',
};
const SAFE_CSS_VALUE = /^[#(),.%\w\s"'-]{1,80}$/;

const inputs = Object.fromEntries(FIELDS.map((f) => [f, document.getElementById(f)]));
const errorBoxes = Object.fromEntries(FIELDS.map((f) => [f, document.getElementById(`${f}-error`)]));
const brandBadge = document.getElementById('brand');
const statusBox = document.getElementById('status');
const shown = {};          // field -> error code currently displayed
const touched = new Set(); // fields the user has left at least once
let busy = false;

function post(message) {
  if (!parentOrigin || window.parent === window) return;
  window.parent.postMessage({ paygate: 1, ...message }, parentOrigin);
}

function values() {
  return { number: inputs.number.value, expiry: inputs.expiry.value, cvc: inputs.cvc.value };
}

function fieldError(field) {
  const v = values();
  if (field === 'number') return validateNumber(v.number);
  if (field === 'expiry') return validateExpiry(v.expiry);
  return validateCvc(v.cvc, v.number);
}

function show(field, code) {
  const input = inputs[field];
  if (code) {
    shown[field] = code;
    input.setAttribute('aria-invalid', 'true');
    errorBoxes[field].textContent = MESSAGES[code] || 'This field is invalid.';
  } else {
    delete shown[field];
    input.setAttribute('aria-invalid', 'false');
    errorBoxes[field].textContent = '';
  }
}

function emitChange() {
  const v = values();
  const result = validateCard(v);
  post({
    type: 'change',
    complete: result.valid,
    empty: !digits(v.number) && !digits(v.expiry) && !digits(v.cvc),
    brand: detectBrand(v.number),
    errors: { ...shown },
  });
}

/** Reformat an input, keeping the caret after the same number of digits. */
function reformat(input, format) {
  const caret = input.selectionStart ?? input.value.length;
  const atEnd = caret >= input.value.length;
  const digitsBefore = digits(input.value.slice(0, caret)).length;
  const next = format(input.value);
  if (next === input.value) return;
  input.value = next;
  let pos = 0;
  let seen = 0;
  while (pos < next.length && seen < digitsBefore) {
    if (/\d/.test(next[pos])) seen += 1;
    pos += 1;
  }
  if (atEnd || digitsBefore >= digits(next).length) pos = next.length;
  input.setSelectionRange(pos, pos);
}

inputs.number.addEventListener('input', () => {
  reformat(inputs.number, formatNumber);
  const brand = detectBrand(inputs.number.value);
  brandBadge.dataset.brand = brand;
  brandBadge.textContent = brand === 'unknown' ? '' : brand;
  inputs.cvc.maxLength = brand === 'amex' ? 4 : 3;
  const code = validateNumber(inputs.number.value);
  // A complete-length number that fails Luhn is reported at once; otherwise errors
  // wait for blur, and clear as soon as the field becomes valid.
  if (code === 'invalid_number' || (touched.has('number') && code) || (shown.number && !code)) {
    show('number', code === 'incomplete_number' && !touched.has('number') ? null : code);
  }
  emitChange();
});

inputs.expiry.addEventListener('input', (event) => {
  const deleting = typeof event.inputType === 'string' && event.inputType.startsWith('delete');
  const caretAtEnd = (inputs.expiry.selectionStart ?? 0) >= inputs.expiry.value.length;
  if (caretAtEnd) inputs.expiry.value = formatExpiry(inputs.expiry.value, { deleting });
  const code = validateExpiry(inputs.expiry.value);
  if ((code && code !== 'incomplete_expiry') || (touched.has('expiry') && code) || (shown.expiry && !code)) {
    show('expiry', code);
  }
  emitChange();
});

inputs.cvc.addEventListener('input', () => {
  const clean = digits(inputs.cvc.value).slice(0, inputs.cvc.maxLength);
  if (clean !== inputs.cvc.value) inputs.cvc.value = clean;
  if (shown.cvc && !fieldError('cvc')) show('cvc', null);
  emitChange();
});

for (const field of FIELDS) {
  inputs[field].addEventListener('focus', () => post({ type: 'focus', field }));
  inputs[field].addEventListener('blur', () => {
    if (inputs[field].value) {
      touched.add(field);
      show(field, fieldError(field));
      emitChange();
    }
    post({ type: 'blur', field });
  });
}

document.getElementById('card-form').addEventListener('submit', (event) => event.preventDefault());

function applyStyle(style) {
  if (!style || typeof style !== 'object') return;
  for (const [key, variable] of Object.entries(STYLE_VARS)) {
    const value = style[key];
    if (typeof value === 'string' && SAFE_CSS_VALUE.test(value) && !/url\s*\(|expression|\\/i.test(value)) {
      document.documentElement.style.setProperty(variable, value);
    }
  }
}

async function problemOf(response) {
  try {
    const body = await response.json();
    return body && typeof body === 'object' ? body : {};
  } catch {
    return {};
  }
}

// The gateway's field-level refusals, mapped onto the field that shows them.
const PROBLEM_FIELDS = { incorrect_number: ['number', 'invalid_number'], expired_card: ['expiry', 'expired_card'] };

async function tokenize() {
  const result = validateCard(values());
  if (!result.valid) {
    for (const field of FIELDS) {
      touched.add(field);
      show(field, result.errors[field] || null);
    }
    const first = FIELDS.find((f) => result.errors[f]);
    inputs[first].focus();
    emitChange();
    return { ok: false, error: { code: 'validation_error', message: 'the card details are not valid', fields: { ...result.errors } } };
  }
  statusBox.textContent = 'Processing card…';
  let response;
  try {
    const keys = await fetch('/v1/keys', { credentials: 'omit' });
    if (!keys.ok) {
      const p = await problemOf(keys);
      return { ok: false, error: { code: 'api_error', message: 'the gateway keys are unavailable', problem: p.code || 'http_error', status: keys.status } };
    }
    const jwe = await encryptCard(result.card, await keys.json());
    response = await fetch('/v1/tokens', {
      method: 'POST',
      credentials: 'omit',
      cache: 'no-store',
      headers: { Authorization: `Bearer ${publishableKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ encrypted_card: jwe }),
    });
  } catch {
    return { ok: false, error: { code: 'network_error', message: 'the gateway could not be reached' } };
  } finally {
    statusBox.textContent = '';
  }
  const body = await problemOf(response);
  if (!response.ok) {
    const mapped = PROBLEM_FIELDS[body.code];
    if (mapped) {
      show(mapped[0], mapped[1]);
      emitChange();
    }
    return {
      ok: false,
      error: {
        code: 'api_error', message: typeof body.detail === 'string' ? body.detail : 'tokenization was refused',
        problem: typeof body.code === 'string' ? body.code : 'http_error', status: response.status,
        fields: mapped ? { [mapped[0]]: mapped[1] } : null,
      },
    };
  }
  return {
    ok: true,
    result: { token: body.token, brand: body.brand, last4: body.last4, exp_month: body.exp_month, exp_year: body.exp_year },
  };
}

window.addEventListener('message', async (event) => {
  // Commands only from the configured parent, and only from our parent window.
  if (!parentOrigin || event.origin !== parentOrigin || event.source !== window.parent) return;
  const msg = event.data;
  if (!msg || typeof msg !== 'object' || msg.paygate !== 1) return;
  switch (msg.type) {
    case 'configure':
      applyStyle(msg.style);
      break;
    case 'focus':
      if (FIELDS.includes(msg.field)) inputs[msg.field].focus();
      break;
    case 'clear':
      for (const field of FIELDS) {
        inputs[field].value = '';
        show(field, null);
      }
      touched.clear();
      brandBadge.dataset.brand = 'unknown';
      brandBadge.textContent = '';
      emitChange();
      break;
    case 'tokenize': {
      if (typeof msg.id !== 'string' || msg.id.length > 64) return;
      if (busy) {
        post({ type: 'result', id: msg.id, ok: false, error: { code: 'busy', message: 'a tokenization is already in progress' } });
        return;
      }
      busy = true;
      try {
        post({ type: 'result', id: msg.id, ...(await tokenize()) });
      } finally {
        busy = false;
      }
      break;
    }
    default:
      break;
  }
});

if (typeof ResizeObserver === 'function') {
  new ResizeObserver(() => post({ type: 'resize', height: document.documentElement.scrollHeight }))
    .observe(document.body);
}
post({ type: 'ready' });
