"""netsim's pure parts: issuer rules (test cards, Luhn, expiry, decisions against a
hold) and fault knobs. No network, no files."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from netsim import Faults, Status, rules
from netsim.rules import Delivery, Hold, Request

TODAY = date(2026, 11, 22)


def _auth(pan: str, *, expiry: str = "3012", code: str = "000000") -> Request:
    return Request(mti="0100", processing_code=code, stan="000001", transmitted="1122193012",
                   rrn="633219000001", terminal="TERM0001", merchant="MERCHANT0000001",
                   acquirer="440001", amount=1999, currency="978", expiry=expiry, pan=pan)


def _ref(mti: str, amount: int, *, code: str = "000000", rrn: str = "633219000001",
         approval: str = "", currency: str = "978") -> Request:
    return Request(mti=mti, processing_code=code, stan="000002", transmitted="1122193013",
                   rrn=rrn, terminal="TERM0001", merchant="MERCHANT0000001", acquirer="440001",
                   amount=amount, currency=currency, approval_code=approval,
                   original=rules.Original("0100", "000001", "1122193012", "440001"))


HOLD = Hold(status=Status.APPROVED, amount=1000, currency="978", rrn="633219000001",
            approval_code="ABC123")


@pytest.mark.parametrize(("pan", "code", "delivery"), [
    ("4242424242424242", "00", Delivery.NORMAL),
    ("4000000000000002", "05", Delivery.NORMAL),
    ("4000000000009995", "51", Delivery.NORMAL),
    ("4000000000000119", "96", Delivery.NORMAL),
    ("4000000000000259", "00", Delivery.LOST),
    ("4000000000000267", "00", Delivery.SLOW),
    ("5555555555554444", "00", Delivery.NORMAL),   # any other valid card
    ("4242424242424241", "14", Delivery.NORMAL),   # Luhn fails
    ("42424242", "14", Delivery.NORMAL),           # too short to be a card
])
def test_test_card_table(pan: str, code: str, delivery: Delivery) -> None:
    """Each test card gets the response code and delivery the architecture's table says."""
    decision = rules.authorize(_auth(pan), TODAY)
    assert (decision.code, decision.delivery) == (code, delivery)


def test_expiry_is_valid_through_the_end_of_its_month() -> None:
    """A card expiring this month approves; one that expired last month gets 54."""
    assert rules.authorize(_auth("4242424242424242", expiry="2611"), TODAY).code == "00"
    assert rules.authorize(_auth("4242424242424242", expiry="2610"), TODAY).code == "54"
    assert rules.authorize(_auth("4000000000000002", expiry="2001"), TODAY).code == "54"


def test_luhn_comes_before_expiry_and_a_non_purchase_is_invalid() -> None:
    """A Luhn-invalid expired card is 14, and a 0100 that is not a purchase is 12."""
    assert rules.authorize(_auth("4242424242424241", expiry="2001"), TODAY).code == "14"
    assert rules.authorize(_auth("4242424242424242", code="200000"), TODAY).code == "12"


def test_approval_codes_are_six_uppercase_alphanumerics() -> None:
    """Approval codes are 6 characters from A-Z and 0-9 and vary between calls."""
    codes = {rules.new_approval_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isalnum() and c == c.upper() and c.isascii() for c in codes)
    assert len(codes) > 150


def test_request_from_doc_keeps_the_pan_out_of_repr_and_rejects_bad_values() -> None:
    """The parsed request never shows the PAN in repr, and a bad month or field 90 is a
    ValueError."""
    doc = {"t": "0100", "2": "4242424242424242", "3": "000000", "4": "000000001999",
           "7": "1122193012", "11": "000123", "14": "3012", "37": "633219000123",
           "41": "TERM0001", "42": "MERCHANT0000001", "49": "978"}
    request = Request.from_doc(doc)
    assert "4242424242424242" not in repr(request)
    assert (request.card_bin, request.card_last4, request.amount) == ("424242", "4242", 1999)
    with pytest.raises(ValueError):
        Request.from_doc({**doc, "14": "3013"})
    with pytest.raises(ValueError):
        Request.from_doc({**doc, "t": "0220", "90": "0100"})


def test_capture_rules() -> None:
    """Captures succeed up to the hold in total, and are refused above it (13), against a
    reversed or declined hold (12) and with no original (25)."""
    assert rules.decide(HOLD, _ref("0220", 1000)) == rules.Decision("00", "captured", 1000, True)
    assert rules.decide(replace(HOLD, captured=600), _ref("0220", 400)).code == "00"
    assert rules.decide(replace(HOLD, captured=600), _ref("0220", 401)).code == "13"
    assert rules.decide(HOLD, _ref("0220", 0)).code == "13"
    assert rules.decide(replace(HOLD, status=Status.REVERSED), _ref("0220", 1)).code == "12"
    assert rules.decide(replace(HOLD, status=Status.DECLINED), _ref("0220", 1)).code == "12"
    assert rules.decide(HOLD, _ref("0220", 10, currency="840")).code == "12"
    assert rules.decide(None, _ref("0220", 10)).code == "25"


def test_locate_requires_the_same_rrn_and_approval_code() -> None:
    """A hold is only the original of a message carrying its RRN and (if any) approval code."""
    assert rules.locate(HOLD, _ref("0220", 1, approval="ABC123")) is HOLD
    assert rules.locate(HOLD, _ref("0220", 1, approval="XYZ999")) is None
    assert rules.locate(HOLD, _ref("0220", 1, rrn="999999999999")) is None
    assert rules.locate(None, _ref("0420", 1)) is None


def test_refund_rules() -> None:
    """Refunds need a 20xxxx processing code and a capture, and may not exceed it in total."""
    captured = replace(HOLD, captured=800)
    assert rules.decide(captured, _ref("0200", 800, code="200000")).code == "00"
    assert rules.decide(replace(captured, refunded=500), _ref("0200", 301, code="200000")
                        ).code == "13"
    assert rules.decide(HOLD, _ref("0200", 1, code="200000")).code == "12"
    assert rules.decide(captured, _ref("0200", 1, code="000000")).code == "12"
    assert rules.decide(None, _ref("0200", 1, code="200000")).code == "25"


def test_void_rules() -> None:
    """A void releases an uncaptured hold; after a partial capture only exactly the
    remainder; fully captured is 12, unknown 25, already reversed 00 with no change."""
    assert rules.decide(HOLD, _ref("0400", 1000)) == rules.Decision("00", "reversed", 1000, True)
    partly = replace(HOLD, captured=1)
    assert rules.decide(partly, _ref("0400", 1000)).code == "13"
    assert rules.decide(partly, _ref("0400", 999)) == rules.Decision(
        "00", "remainder-reversed", 999, True)
    assert rules.decide(replace(HOLD, captured=1000), _ref("0400", 1000)).code == "12"
    assert rules.decide(None, _ref("0400", 1000)).code == "25"
    again = rules.decide(replace(HOLD, status=Status.REVERSED), _ref("0400", 1000))
    assert (again.code, again.changed) == ("00", False)
    assert rules.decide(HOLD, _ref("0400", 999)).code == "13"


def test_advice_rules() -> None:
    """An advice is always 00; it releases the uncaptured remainder once and nothing else."""
    for mti in ("0420", "0421"):
        assert rules.decide(HOLD, _ref(mti, 1000)) == rules.Decision("00", "reversed", 1000, True)
        part = rules.decide(replace(HOLD, captured=300), _ref(mti, 1000))
        assert part == rules.Decision("00", "remainder-reversed", 700, True)
        for hold, outcome in ((replace(HOLD, status=Status.REVERSED), "already-reversed"),
                              (replace(HOLD, status=Status.DECLINED), "not-approved"),
                              (replace(HOLD, captured=1000), "fully-captured"),
                              (None, "nothing-to-reverse")):
            assert rules.decide(hold, _ref(mti, 1000)) == rules.Decision("00", outcome)


def test_faults_validate_and_are_reproducible_with_a_seed() -> None:
    """Fault knobs reject impossible values, and the same seed gives the same decisions."""
    with pytest.raises(ValueError):
        Faults(drop_rate=1.5)
    with pytest.raises(ValueError):
        Faults(latency=-1)
    faults = Faults(jitter=0.5, drop_rate=0.5, seed=42)
    with pytest.raises(ValueError):
        faults.reset_rate = float("nan")
    first = [(faults.delay(), faults.drops()) for _ in range(50)]
    faults.seed = 42
    assert [(faults.delay(), faults.drops()) for _ in range(50)] == first
    assert all(0.0 <= d <= 0.5 for d, _ in first)
    assert {dropped for _, dropped in first} == {True, False}
    assert Faults(drop_rate=1.0).drops() and not Faults().drops()


@pytest.mark.parametrize(("base", "repeat", "code", "amount"), [
    ("0220", "0221", "000000", 400), ("0200", "0201", "200000", 100),
    ("0400", "0401", "000000", 1000), ("0400", "0401", "000000", 999)])
def test_a_repeat_is_decided_as_the_message_it_repeats(base: str, repeat: str, code: str,
                                                       amount: int) -> None:
    """A 0221, 0201 or 0401 (processed because its original was not) gets exactly the
    decision of its 0220, 0200 or 0400, refusals included."""
    hold = replace(HOLD, captured=500) if base == "0200" else HOLD
    assert rules.base_mti(repeat) == base and rules.base_mti(base) == base
    assert rules.kind_of(repeat) is rules.kind_of(base)
    decision = rules.decide(hold, _ref(repeat, amount, code=code))
    assert decision == rules.decide(hold, _ref(base, amount, code=code))
    assert rules.decide(None, _ref(repeat, amount, code=code)).code == "25"


def test_repeats_original_compares_the_journalled_fields() -> None:
    """A repeat matches its processed original only when 3, 4, 32, 37, 42, 49, field 90's
    STAN and field 7 (and 38, when both have one) are the same."""
    request = _ref("0221", 600, approval="ABC123")
    processed = rules.Processed(
        processing_code="000000", amount=600, acquirer="440001", rrn="633219000001",
        merchant="MERCHANT0000001", currency="978", original_stan="000001",
        original_transmitted="1122193012", approval_code="ABC123")
    assert rules.repeats_original(processed, request)
    assert rules.repeats_original(replace(processed, approval_code=""), request)
    for change in ({"processing_code": "200000"}, {"amount": 601}, {"acquirer": "440002"},
                   {"rrn": "633219000002"}, {"merchant": "OTHER"}, {"currency": "840"},
                   {"original_stan": "000009"}, {"original_transmitted": "1122193099"},
                   {"approval_code": "XYZ999"}):
        assert not rules.repeats_original(replace(processed, **change), request), change
    assert not rules.repeats_original(processed, replace(request, original=None))


def test_the_security_code_is_checked_and_never_kept() -> None:
    """Field 48's code 000 declines N7 (after Luhn and expiry); another code approves;
    a malformed field 48 is unusable (format error); the request keeps no code."""
    doc = {"t": "0100", "2": "4242424242424242", "3": "000000", "4": "000000001999",
           "7": "1122193012", "11": "000001", "14": "3012", "37": "633219000001",
           "41": "TERM0001", "42": "MERCHANT0000001", "49": "978"}
    wrong = Request.from_doc({**doc, "48": "CVC03000"})
    assert rules.authorize(wrong, TODAY).code == "N7"
    assert rules.authorize(Request.from_doc({**doc, "48": "CVC03123"}), TODAY).code == "00"
    assert rules.authorize(Request.from_doc({**doc, "48": "CVC03000", "14": "2001"}),
                           TODAY).code == "54"
    assert "CVC" not in repr(wrong) and not hasattr(wrong, "security_code")
    with pytest.raises(ValueError):
        Request.from_doc({**doc, "48": "CVC3123"})
