/*! paygate.js - the merchant-page half of paygate's card iframe SDK. Apache-2.0.
 *
 * A classic script with no dependencies and no build step:
 *   <script src="https://GATEWAY/sdk/v1/paygate.js"></script>
 *   const pg = Paygate('pk_live_...', { origin: 'https://GATEWAY' });
 *   const card = pg.mountCard('#card', { style: { color: '#222' } });
 *   card.on('change', (state) => { payButton.disabled = !state.complete; });
 *   const { token, brand, last4, exp_month, exp_year } = await card.tokenize();
 *
 * The card fields live in an iframe served by the gateway; this script never sees
 * card data. It talks to the frame with postMessage: it sends only to the gateway's
 * exact origin and accepts only messages whose origin is the gateway's and whose
 * source is its own iframe's window.
 */
(function (root) {
  'use strict';

  var FRAME_PATH = '/sdk/v1/frame.html';
  var DEFAULT_TIMEOUT_MS = 30000;
  var EVENTS = ['ready', 'change', 'focus', 'blur'];
  var STYLE_KEYS = ['color', 'fontFamily', 'fontSize', 'errorColor', 'borderColor', 'focusColor', 'background'];
  var scriptOrigin = (function () {
    try {
      var s = root.document && root.document.currentScript;
      return s && s.src ? new URL(s.src).origin : null;
    } catch (e) {
      return null;
    }
  })();

  /** Every failure of the SDK: `code` is one of validation_error (with `fields`:
   * {number?, expiry?, cvc?} -> field error code), network_error, api_error (with
   * `problem`: the gateway's problem code, and `status`), timeout, invalid_argument,
   * not_ready, destroyed. */
  function PaygateError(code, message, extra) {
    var err = new Error(message);
    Object.setPrototypeOf(err, PaygateError.prototype);
    err.name = 'PaygateError';
    err.code = code;
    err.fields = (extra && extra.fields) || null;
    err.problem = (extra && extra.problem) || null;
    err.status = (extra && extra.status) || null;
    return err;
  }
  PaygateError.prototype = Object.create(Error.prototype, {
    constructor: { value: PaygateError, writable: true, configurable: true },
  });

  function normaliseOrigin(value) {
    var url;
    try {
      url = new URL(String(value));
    } catch (e) {
      throw PaygateError('invalid_argument', 'origin must be an absolute http(s) URL');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw PaygateError('invalid_argument', 'origin must be http(s)');
    }
    return url.origin;
  }

  function randomId() {
    var bytes = new Uint8Array(16);
    root.crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return (b + 256).toString(16).slice(1); }).join('');
  }

  function pickStyle(style) {
    var out = {};
    if (!style || typeof style !== 'object') return out;
    STYLE_KEYS.forEach(function (k) {
      if (typeof style[k] === 'string') out[k] = style[k];
    });
    return out;
  }

  function CardElement(gatewayOrigin, publishableKey, container, options) {
    var self = this;
    this._origin = gatewayOrigin;
    this._handlers = {};
    this._pending = {};
    this._ready = false;
    this._destroyed = false;
    this._style = pickStyle(options && options.style);
    this.state = { complete: false, empty: true, brand: 'unknown', errors: {} };

    var src = gatewayOrigin + FRAME_PATH + '?key=' + encodeURIComponent(publishableKey)
      + '&parent=' + encodeURIComponent(root.location.origin);
    var iframe = root.document.createElement('iframe');
    iframe.src = src;
    iframe.title = (options && options.title) || 'Secure card payment input';
    iframe.name = 'paygate-card-' + randomId().slice(0, 8);
    iframe.setAttribute('allow', '');
    iframe.setAttribute('sandbox', 'allow-scripts allow-same-origin');
    iframe.setAttribute('referrerpolicy', 'no-referrer');
    iframe.setAttribute('scrolling', 'no');
    iframe.style.border = '0';
    iframe.style.width = '100%';
    iframe.style.height = '150px';
    iframe.style.display = 'block';
    this.iframe = iframe;

    this._onMessage = function (event) {
      // Exactly our gateway's origin, and exactly our own frame (not another frame of
      // the same origin, not another window).
      if (event.origin !== self._origin || event.source !== iframe.contentWindow) return;
      var msg = event.data;
      if (!msg || typeof msg !== 'object' || msg.paygate !== 1 || typeof msg.type !== 'string') return;
      self._receive(msg);
    };
    root.addEventListener('message', this._onMessage);
    container.appendChild(iframe);
  }

  CardElement.prototype._post = function (msg) {
    msg.paygate = 1;
    if (this.iframe.contentWindow) this.iframe.contentWindow.postMessage(msg, this._origin);
  };

  CardElement.prototype._emit = function (name, payload) {
    (this._handlers[name] || []).slice().forEach(function (h) {
      try {
        h(payload);
      } catch (e) {
        setTimeout(function () { throw e; });
      }
    });
  };

  CardElement.prototype._receive = function (msg) {
    switch (msg.type) {
      case 'ready':
        this._ready = true;
        this._post({ type: 'configure', style: this._style });
        this._emit('ready', {});
        break;
      case 'change':
        this.state = {
          complete: !!msg.complete,
          empty: !!msg.empty,
          brand: typeof msg.brand === 'string' ? msg.brand : 'unknown',
          errors: msg.errors && typeof msg.errors === 'object' ? msg.errors : {},
        };
        this._emit('change', this.state);
        break;
      case 'focus':
      case 'blur':
        this._emit(msg.type, { field: msg.field });
        break;
      case 'resize':
        if (typeof msg.height === 'number' && msg.height > 0 && msg.height < 2000) {
          this.iframe.style.height = Math.ceil(msg.height) + 'px';
        }
        break;
      case 'result': {
        var pending = this._pending[msg.id];
        if (!pending) return;
        delete this._pending[msg.id];
        clearTimeout(pending.timer);
        if (msg.ok) {
          var r = msg.result || {};
          pending.resolve({ token: r.token, brand: r.brand, last4: r.last4,
            exp_month: r.exp_month, exp_year: r.exp_year });
        } else {
          var e = msg.error || {};
          pending.reject(PaygateError(e.code || 'api_error', e.message || 'tokenization failed',
            { fields: e.fields, problem: e.problem, status: e.status }));
        }
        break;
      }
      default:
        break;
    }
  };

  /** Subscribe to 'ready', 'change' ({complete, empty, brand, errors}), 'focus', 'blur'. */
  CardElement.prototype.on = function (name, handler) {
    if (EVENTS.indexOf(name) < 0) throw PaygateError('invalid_argument', 'unknown event ' + name);
    (this._handlers[name] = this._handlers[name] || []).push(handler);
    return this;
  };

  CardElement.prototype.off = function (name, handler) {
    this._handlers[name] = (this._handlers[name] || []).filter(function (h) { return h !== handler; });
    return this;
  };

  /** Ask the frame to validate, encrypt and tokenize the card: resolves to
   * {token, brand, last4, exp_month, exp_year}; rejects with a PaygateError. */
  CardElement.prototype.tokenize = function (options) {
    var self = this;
    var timeout = (options && options.timeout) || DEFAULT_TIMEOUT_MS;
    if (this._destroyed) return Promise.reject(PaygateError('destroyed', 'the card element was destroyed'));
    if (!this._ready) return Promise.reject(PaygateError('not_ready', 'the card frame is not loaded yet'));
    return new Promise(function (resolve, reject) {
      var id = randomId();
      var timer = setTimeout(function () {
        delete self._pending[id];
        reject(PaygateError('timeout', 'the card frame did not answer in time'));
      }, timeout);
      self._pending[id] = { resolve: resolve, reject: reject, timer: timer };
      self._post({ type: 'tokenize', id: id });
    });
  };

  /** Move the focus into a field: 'number', 'expiry' or 'cvc'. */
  CardElement.prototype.focus = function (field) {
    this._post({ type: 'focus', field: field || 'number' });
  };

  /** Empty the fields. */
  CardElement.prototype.clear = function () {
    this._post({ type: 'clear' });
  };

  /** Remove the frame and stop listening; pending tokenizations reject. */
  CardElement.prototype.destroy = function () {
    var self = this;
    this._destroyed = true;
    root.removeEventListener('message', this._onMessage);
    Object.keys(this._pending).forEach(function (id) {
      clearTimeout(self._pending[id].timer);
      self._pending[id].reject(PaygateError('destroyed', 'the card element was destroyed'));
    });
    this._pending = {};
    if (this.iframe.parentNode) this.iframe.parentNode.removeChild(this.iframe);
  };

  /** `Paygate(publishableKey, {origin})`: origin is the gateway's (default: where this
   * script was loaded from). */
  function Paygate(publishableKey, options) {
    if (typeof publishableKey !== 'string' || publishableKey.indexOf('pk_') !== 0) {
      throw PaygateError('invalid_argument', "a publishable key ('pk_...') is required");
    }
    var given = options && options.origin;
    if (!given && !scriptOrigin) throw PaygateError('invalid_argument', 'origin is required');
    var origin = normaliseOrigin(given || scriptOrigin);
    return {
      origin: origin,
      mountCard: function (target, mountOptions) {
        var container = typeof target === 'string' ? root.document.querySelector(target) : target;
        if (!container || typeof container.appendChild !== 'function') {
          throw PaygateError('invalid_argument', 'mountCard needs an element or a selector that matches one');
        }
        return new CardElement(origin, publishableKey, container, mountOptions || {});
      },
    };
  }
  Paygate.PaygateError = PaygateError;
  Paygate.version = '0.1.0';

  if (typeof module === 'object' && module && module.exports) module.exports = Paygate;
  root.Paygate = Paygate;
})(typeof window !== 'undefined' ? window : globalThis);
