"""The small tables of the payments domain: money (ISO 4217, amount validation), decline
mapping (field 39 -> payment error) and the domain error type."""

from __future__ import annotations

import pickle
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codec.dialect import APPROVED, PARTIAL_APPROVAL, RESPONSE_CODES
from gateway.payments import declines, money
from gateway.payments.errors import DomainError

PAN = "4242424242424242"

# code -> (numeric, exponent), from ISO 4217 list one.
REQUIRED = {
    "usd": ("840", 2), "eur": ("978", 2), "gbp": ("826", 2), "jpy": ("392", 0),
    "krw": ("410", 0), "chf": ("756", 2), "cad": ("124", 2), "aud": ("036", 2),
    "nzd": ("554", 2), "sek": ("752", 2), "nok": ("578", 2), "dkk": ("208", 2),
    "pln": ("985", 2), "czk": ("203", 2), "huf": ("348", 2), "ron": ("946", 2),
    "bgn": ("975", 2), "isk": ("352", 0), "try": ("949", 2), "ils": ("376", 2),
    "aed": ("784", 2), "sar": ("682", 2), "qar": ("634", 2), "kwd": ("414", 3),
    "bhd": ("048", 3), "omr": ("512", 3), "jod": ("400", 3), "tnd": ("788", 3),
    "lyd": ("434", 3), "iqd": ("368", 3), "inr": ("356", 2), "cny": ("156", 2),
    "hkd": ("344", 2), "sgd": ("702", 2), "twd": ("901", 2), "thb": ("764", 2),
    "myr": ("458", 2), "idr": ("360", 2), "php": ("608", 2), "vnd": ("704", 0),
    "brl": ("986", 2), "mxn": ("484", 2), "clp": ("152", 0), "cop": ("170", 2),
    "pen": ("604", 2), "ars": ("032", 2), "uyu": ("858", 2), "zar": ("710", 2),
    "ngn": ("566", 2), "kes": ("404", 2), "egp": ("818", 2), "mad": ("504", 2),
}


def reason_of(exc: pytest.ExceptionInfo[DomainError]) -> tuple[str, str]:
    return exc.value.status, exc.value.reason


# -- the table --------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "expected"), sorted(REQUIRED.items()))
def test_required_currency_has_its_iso_numeric_code_and_exponent(
        code: str, expected: tuple[str, int]) -> None:
    """Each required currency carries its ISO 4217 numeric code and minor-unit exponent."""
    assert (money.numeric_code(code), money.exponent(code)) == expected


def test_zero_and_three_decimal_currencies() -> None:
    """JPY, KRW, CLP, ISK and VND have no minor unit; KWD, BHD, OMR, JOD, TND, LYD, IQD
    have three decimals."""
    assert {c for c in ("jpy", "krw", "clp", "isk", "vnd") if money.exponent(c) == 0} == {
        "jpy", "krw", "clp", "isk", "vnd"}
    assert all(money.exponent(c) == 3
               for c in ("kwd", "bhd", "omr", "jod", "tnd", "lyd", "iqd"))


def test_table_codes_are_lower_case_three_letters_with_unique_numeric_codes() -> None:
    """Every code is three lower-case letters and every numeric code three distinct digits."""
    numerics = [c.numeric for c in money.CURRENCIES.values()]
    assert all(re.fullmatch(r"[a-z]{3}", code) for code in money.CURRENCIES)
    assert all(re.fullmatch(r"\d{3}", n) for n in numerics)
    assert len(set(numerics)) == len(numerics)


def test_maximum_fits_field_4_and_allows_at_least_999999_major_units() -> None:
    """Each maximum fits field 4 (n12) and allows at least 999,999 major units."""
    for cur in money.CURRENCIES.values():
        assert cur.max_amount <= money.FIELD4_MAX == 999_999_999_999
        assert cur.max_amount >= 10 ** (6 + cur.exponent) - 1, cur.code
        assert money.max_amount(cur.code) == cur.max_amount


def test_default_maximum_is_999999_99_major_units() -> None:
    """USD and EUR stop at 999,999.99; KWD at 999,999.999."""
    assert money.max_amount("usd") == money.max_amount("eur") == 99_999_999
    assert money.max_amount("kwd") == 999_999_999


def test_funds_metals_and_test_codes_are_not_currencies() -> None:
    """Fund codes, precious metals, SDR and test codes are not accepted."""
    for code in ("xau", "xag", "xdr", "xts", "xxx", "usn", "clf", "che"):
        assert code not in money.CURRENCIES


def test_by_numeric_is_the_inverse_of_numeric_code() -> None:
    """Field 49's numeric code maps back to the same currency."""
    for code in money.CURRENCIES:
        assert money.by_numeric(money.numeric_code(code)).code == code


def test_unknown_numeric_code_is_currency_invalid() -> None:
    """An unknown field 49 value is INVALID_ARGUMENT currency_invalid."""
    with pytest.raises(DomainError) as exc:
        money.by_numeric("999")
    assert reason_of(exc) == ("INVALID_ARGUMENT", "currency_invalid")


# -- validate_amount ----------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["EUR", "Eur", "xyz", "", "euro", "eu", " eur", None, 978])
def test_unknown_or_not_lower_case_currency_is_refused(currency: object) -> None:
    """Unknown, upper-case, mis-sized or non-text currencies are INVALID_ARGUMENT
    currency_invalid."""
    with pytest.raises(DomainError) as exc:
        money.validate_amount(100, currency)
    assert reason_of(exc) == ("INVALID_ARGUMENT", "currency_invalid")


@pytest.mark.parametrize("amount", [0, -1, -10**12, True, False, 10.0, Decimal(10), "100",
                                    None, 99_999_999 + 1])
def test_bad_amounts_are_refused(amount: object) -> None:
    """Zero, negative, bool, float, Decimal, text, None and above-maximum amounts are
    INVALID_ARGUMENT amount_invalid."""
    with pytest.raises(DomainError) as exc:
        money.validate_amount(amount, "usd")
    assert reason_of(exc) == ("INVALID_ARGUMENT", "amount_invalid")


def test_above_maximum_names_the_maximum() -> None:
    """The refusal of a too large amount tells the caller the maximum."""
    with pytest.raises(DomainError) as exc:
        money.validate_amount(10**9, "jod")
    assert exc.value.metadata["max_amount"] == str(money.max_amount("jod"))


def test_currency_is_checked_before_amount() -> None:
    """When both are wrong, the currency is reported."""
    with pytest.raises(DomainError) as exc:
        money.validate_amount(-5, "EUR")
    assert exc.value.reason == "currency_invalid"


def test_one_minor_unit_and_the_maximum_are_accepted() -> None:
    """The smallest (1) and largest amounts pass in every currency."""
    for code, cur in money.CURRENCIES.items():
        money.validate_amount(1, code)
        money.validate_amount(cur.max_amount, code)


def test_jpy_amounts_are_whole_yen() -> None:
    """JPY 500 is 500 minor units (no cents): exponent 0."""
    money.validate_amount(500, "jpy")
    assert money.exponent("jpy") == 0


@given(code=st.sampled_from(sorted(money.CURRENCIES)), amount=st.integers())
def test_any_integer_is_accepted_exactly_when_in_range(code: str, amount: int) -> None:
    """An int amount passes if and only if 1 <= amount <= max_amount(currency)."""
    in_range = 1 <= amount <= money.max_amount(code)
    try:
        money.validate_amount(amount, code)
    except DomainError as exc:
        assert not in_range
        assert exc.reason == "amount_invalid"
    else:
        assert in_range


# -- declines -----------------------------------------------------------------------------


@pytest.mark.parametrize(("field39", "code", "decline_code"), [
    ("05", "card_declined", "generic_decline"),
    ("51", "card_declined", "insufficient_funds"),
    ("54", "expired_card", "expired_card"),
    ("61", "card_declined", "card_velocity_exceeded"),
    ("65", "card_declined", "card_velocity_exceeded"),
    ("14", "incorrect_number", "invalid_number"),
    ("41", "card_declined", "lost_card"),
    ("43", "card_declined", "stolen_card"),
    ("57", "card_declined", "transaction_not_allowed"),
    ("62", "card_declined", "transaction_not_allowed"),
    ("91", "processing_error", "issuer_not_available"),
    ("96", "processing_error", "processing_error"),
    ("30", "processing_error", "processing_error"),
    ("13", "card_declined", "invalid_amount"),
    ("12", "card_declined", "generic_decline"),
    ("N7", "incorrect_cvc", "incorrect_cvc"),
    ("Z9", "card_declined", "generic_decline"),
    ("99", "card_declined", "generic_decline"),
])
def test_response_code_maps_to_stripe_error(field39: str, code: str, decline_code: str) -> None:
    """Field 39 maps to Stripe's code / decline_code and keeps the network code."""
    err = declines.decline(field39)
    assert (err.code, err.decline_code, err.network_response_code) == (code, decline_code,
                                                                       field39)
    assert err.message


def test_lost_and_stolen_cards_show_the_generic_message() -> None:
    """Lost and stolen cards carry the generic decline message, not the reason."""
    generic = declines.decline("05").message
    assert declines.decline("41").message == declines.decline("43").message == generic


def test_malformed_response_code_is_not_echoed() -> None:
    """A field 39 that is not two digits/capitals becomes a generic decline without it."""
    err = declines.decline(PAN)
    assert (err.decline_code, err.network_response_code) == ("generic_decline", "")
    assert PAN not in repr(err)


def test_approval_codes_are_not_declines() -> None:
    """decline() refuses 00 and 10; is_approval accepts exactly them."""
    for code in ("00", "10"):
        assert declines.is_approval(code)
        with pytest.raises(ValueError, match="approval"):
            declines.decline(code)
    assert not declines.is_approval("05")


def test_every_dialect_code_has_a_message_without_digits_runs() -> None:
    """Every response code of the dialect maps to a message with no card-like numbers."""
    assert (declines.APPROVED, declines.PARTIAL_APPROVAL) == (APPROVED, PARTIAL_APPROVAL)
    for field39 in set(RESPONSE_CODES) - declines.APPROVAL_CODES:
        assert not re.search(r"\d{4}", declines.decline(field39).message)


def test_timeout_error_is_network_timeout() -> None:
    """TIMEOUT is the network_timeout payment error, without a response code."""
    assert (declines.TIMEOUT.code, declines.TIMEOUT.network_response_code) == (
        "network_timeout", "")


# -- DomainError --------------------------------------------------------------------------


def test_domain_error_carries_status_reason_message_and_metadata() -> None:
    """A DomainError exposes its gRPC status name, reason, message and metadata."""
    err = DomainError("FAILED_PRECONDITION", "intent_unexpected_state", "no", {"status": "x"})
    assert (err.status, err.reason, err.message, err.metadata) == (
        "FAILED_PRECONDITION", "intent_unexpected_state", "no", {"status": "x"})
    assert isinstance(err, Exception)


def test_domain_error_survives_pickling() -> None:
    """Pickling keeps type, status, reason, message and metadata."""
    err = DomainError("ABORTED", "idempotency_key_in_use", "busy", {"k": "v"})
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is DomainError
    assert (back.status, back.reason, back.message, back.metadata) == (
        err.status, err.reason, err.message, err.metadata)


def test_domain_error_repr_and_str_name_the_reason() -> None:
    """repr shows status, reason, message and metadata; str shows reason and message."""
    err = DomainError("NOT_FOUND", "intent_not_found", "no such intent", {"id": "pi_1"})
    assert repr(err) == ("DomainError('NOT_FOUND', 'intent_not_found', 'no such intent', "
                         "{'id': 'pi_1'})")
    assert str(err) == "intent_not_found: no such intent"


@pytest.mark.parametrize(("status", "reason"), [
    ("OK", "fine"), ("invalid_argument", "x"), ("BOGUS", "x"),
    ("INVALID_ARGUMENT", "Amount"), ("INVALID_ARGUMENT", ""), ("INVALID_ARGUMENT", "a-b"),
])
def test_domain_error_refuses_non_grpc_status_or_non_snake_case_reason(
        status: str, reason: str) -> None:
    """The status must be a gRPC error code name and the reason snake_case."""
    with pytest.raises(ValueError, match=r"status|reason"):
        DomainError(status, reason, "m")


def test_domain_error_metadata_is_a_copy() -> None:
    """Changing the mapping given does not change the error's metadata."""
    given_metadata = {"status": "succeeded"}
    err = DomainError("FAILED_PRECONDITION", "intent_unexpected_state", "m", given_metadata)
    given_metadata["status"] = "canceled"
    assert err.metadata == {"status": "succeeded"}
