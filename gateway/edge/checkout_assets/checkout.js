// The demo merchant's own page script: mounts paygate's card frame, asks it for a
// token, and sends only the token to the merchant's backend (/demo/checkout/pay).
(function () {
  'use strict';
  var root = document.getElementById('checkout');
  var pay = document.getElementById('pay');
  var result = document.getElementById('result');
  var brand = document.getElementById('card-brand');
  var complete = document.getElementById('card-complete');
  var pg = window.Paygate(root.dataset.publishableKey, { origin: root.dataset.gatewayOrigin });
  var card = pg.mountCard('#card', { style: { fontSize: '16px', focusColor: '#3d5afe' } });

  function say(state, text) {
    result.dataset.state = state;
    result.textContent = text;
  }

  card.on('ready', function () {
    pay.disabled = false;
    root.dataset.ready = 'true';
  });
  card.on('change', function (s) {
    brand.textContent = s.brand === 'unknown' ? '-' : s.brand;
    complete.textContent = s.complete ? 'yes' : 'no';
    root.dataset.cardComplete = String(s.complete);
  });

  var paid = false;
  document.getElementById('pay-form').addEventListener('submit', function (event) {
    event.preventDefault();
    if (paid || pay.disabled) return;
    pay.disabled = true;
    say('working', 'Processing payment...');
    card.tokenize().then(function (tok) {
      return fetch('/demo/checkout/pay', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: tok.token }),
      }).then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) {
            say('error', 'Payment failed: ' + (body.detail || body.code || response.status));
          } else if (body.status === 'succeeded' || body.status === 'requires_capture') {
            paid = true;   // one order, one payment: the button stays disabled
            say('success', 'Payment succeeded: ' + body.intent + ' (' + tok.brand + ' ending ' + tok.last4 + ').');
          } else if (body.error) {
            say('declined', 'Payment declined: ' + body.error.message + ' (' + (body.error.decline_code || body.error.code) + ')');
          } else {
            say('error', 'Payment status: ' + body.status);
          }
        });
      });
    }).catch(function (err) {
      if (err && err.code === 'validation_error') {
        say('error', 'Please check your card details.');
      } else {
        say('error', 'Payment failed: ' + (err && (err.problem || err.code) || 'error'));
      }
    }).then(function () {
      pay.disabled = paid;
    });
  });
})();
