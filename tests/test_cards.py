"""Card checks: Luhn, brand detection for the accepted networks, expiry, masking."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.cards import BRANDS, brand_of, cvc_length, expired, luhn_digit, luhn_ok


@pytest.mark.parametrize(("pan", "brand"), [
    ("4242424242424242", "visa"),
    ("4000000000000002", "visa"),
    ("4222222222222", "visa"),
    ("5555555555554444", "mastercard"),
    ("5105105105105100", "mastercard"),
    ("2223003122003222", "mastercard"),
    ("2720990000000007", "mastercard"),
    ("378282246310005", "amex"),
    ("371449635398431", "amex"),
    ("6011111111111117", "discover"),
    ("6445644564456445", "discover"),
    ("3566002020360505", "jcb"),
    ("6200000000000005", "unionpay"),
    ("6250941006528599", "unionpay"),
    ("30569309025904", "diners"),
    ("36227206271667", "diners"),
    ("3852000002323700", "diners"),
])
def test_brands_are_detected_from_prefix_and_length(pan: str, brand: str) -> None:
    """Each network's test numbers are recognised (Mastercard's 2-series included)."""
    assert luhn_ok(pan), pan
    assert brand_of(pan) == brand


@pytest.mark.parametrize("pan", [
    "9900000000000009",      # no network
    "2220990000000000",      # just below Mastercard's 2-series
    "2721000000000000",      # just above it
    "42424242424242424",     # Visa prefix, 17 digits
    "3782822463100",         # Amex prefix, 13 digits
])
def test_unknown_prefixes_and_wrong_lengths_have_no_brand(pan: str) -> None:
    """A number outside every range, or of a length the brand does not issue, is None."""
    assert brand_of(pan) is None


def test_luhn_rejects_any_single_digit_change() -> None:
    """Changing one digit of a valid number always breaks the check."""
    pan = "4242424242424242"
    for i in range(len(pan)):
        for d in "0123456789":
            if d != pan[i]:
                assert not luhn_ok(pan[:i] + d + pan[i + 1:])
    assert luhn_ok("424242424242424" + luhn_digit("424242424242424"))


def test_a_card_is_valid_through_the_end_of_its_expiry_month() -> None:
    """11/2026 is valid on 30 Nov 2026 and expired on 1 Dec 2026."""
    assert not expired(11, 2026, dt.date(2026, 11, 30))
    assert expired(11, 2026, dt.date(2026, 12, 1))
    assert not expired(1, 2027, dt.date(2026, 12, 31))


def test_amex_has_four_digit_security_codes_the_rest_three() -> None:
    """CVC length is 4 for Amex and 3 for every other accepted brand."""
    assert {b: cvc_length(b) for b in BRANDS} == {
        b: (4 if b == "amex" else 3) for b in BRANDS}
    with pytest.raises(ValueError):
        cvc_length("nope")
