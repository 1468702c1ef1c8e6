"""The payment state machine (gateway.payments.machine), one test per row of the command
table in DESIGN.md: create, confirm, authorization outcomes, capture. Cancel, refund and
terminal states are in test_payments_machine_after_capture.py; the stateful property
test of the invariants in test_payments_machine_property.py."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import pytest
from machine_cases import (
    IDS,
    NOW,
    PAN,
    TOKEN,
    apply,
    authorized,
    capturing,
    confirmed,
    create,
    event_types,
    in_state,
    refused,
    succeeded,
    trace,
)

from gateway.network.trace import Trace
from gateway.payments import declines, machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, Declined, Outcome, Unknown
from gateway.payments.model import (
    AttemptKind,
    AttemptStatus,
    CaptureMethod,
    IntentStatus,
)

# -- create -------------------------------------------------------------------------------


def test_create_makes_a_requires_payment_method_intent_at_version_1() -> None:
    """create_intent returns a new intent, version 1, nothing captured, one created event."""
    change = machine.create_intent("acct_1", 2500, "usd", "automatic", "d", {"k": "v"}, NOW,
                                   IDS)
    intent = change.intent
    assert intent.id.startswith("pi_") and intent.merchant_id == "acct_1"
    assert (intent.status, intent.version, intent.created, intent.updated) == (
        IntentStatus.REQUIRES_PAYMENT_METHOD, 1, NOW, NOW)
    assert (intent.amount, intent.currency, intent.capture_method) == (
        2500, "usd", CaptureMethod.AUTOMATIC)
    assert (intent.amount_capturable, intent.amount_received, intent.amount_refunded) == (0, 0, 0)
    assert (intent.description, intent.metadata) == ("d", {"k": "v"})
    assert change.expected_version is None and not change.attempts
    assert event_types(change) == ["payment_intent.created"]
    assert change.events[0].aggregate_id == intent.id


def test_create_uses_the_default_id_provider() -> None:
    """Without an ids provider, intent ids are pi_ + 24 Crockford base32 characters."""
    change = machine.create_intent("acct_1", 100, "eur", "manual", "", None, NOW)
    assert re.fullmatch(r"pi_[0-9a-hjkmnp-tv-z]{24}", change.intent.id)


def test_default_ids_stay_unique_across_refills_of_the_random_pool() -> None:
    """Ids drawn from the buffered CSPRNG never repeat, also past many 4 KiB refills."""
    from gateway.payments.model import new_id
    ids = [new_id("att") for _ in range(3000)]
    assert len(set(ids)) == 3000
    assert all(re.fullmatch(r"att_[0-9a-hjkmnp-tv-z]{24}", i) for i in ids)


@pytest.mark.parametrize(("amount", "currency", "reason"), [
    (0, "eur", "amount_invalid"), (-1, "eur", "amount_invalid"), (True, "eur", "amount_invalid"),
    (1.5, "eur", "amount_invalid"), (10**8, "eur", "amount_invalid"),
    (100, "EUR", "currency_invalid"), (100, "zzz", "currency_invalid"),
])
def test_create_refuses_bad_amounts_and_currencies(amount: int, currency: str,
                                                   reason: str) -> None:
    """create_intent is INVALID_ARGUMENT amount_invalid / currency_invalid for bad money."""
    with pytest.raises(DomainError) as exc:
        machine.create_intent("acct_1", amount, currency, "manual", "", None, NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", reason)


@pytest.mark.parametrize("metadata", [
    {f"k{i}": "v" for i in range(51)}, {"": "v"}, {"k" * 41: "v"}, {"k": "v" * 501},
    {"k": 1}, {1: "v"},
])
def test_create_refuses_bad_metadata(metadata: Mapping[str, str]) -> None:
    """Over 50 keys, empty or over-40 keys, over-500 values, non-text: metadata_invalid."""
    with pytest.raises(DomainError) as exc:
        machine.create_intent("acct_1", 100, "eur", "manual", "", metadata, NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "metadata_invalid")


def test_create_accepts_metadata_at_its_limits() -> None:
    """50 keys of 40 characters with values of 500 characters are accepted."""
    metadata = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(50)}
    change = machine.create_intent("acct_1", 100, "eur", "manual", "", metadata, NOW, IDS)
    assert change.intent.metadata == metadata


def test_create_refuses_unknown_capture_method_and_long_description() -> None:
    """An unknown capture method or a description over 1000 characters is refused."""
    with pytest.raises(DomainError) as exc:
        machine.create_intent("acct_1", 100, "eur", "later", "", None, NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "capture_method_invalid")
    with pytest.raises(DomainError) as exc:
        machine.create_intent("acct_1", 100, "eur", "manual", "x" * 1001, None, NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "description_invalid")


@pytest.mark.parametrize(("description", "metadata", "reason"), [
    ("card 4111111111111111 cvc 123", None, "card_data_in_description"),
    ("paid with 4111 1111 1111 1111", None, "card_data_in_description"),
    (";4111111111111111=29121010000000000000?", None, "card_data_in_description"),
    ("4111.1111.1111.1111", None, "card_data_in_description"),
    ("\uff14" + "\uff11" * 15, None, "card_data_in_description"),   # full-width digits
    ("", {"pan": "4111-1111-1111-1111"}, "card_data_in_metadata"),
    ("", {"4111111111111111": "key"}, "card_data_in_metadata"),
])
def test_create_refuses_card_data_in_free_text(description: str,
                                               metadata: Mapping[str, str] | None,
                                               reason: str) -> None:
    """A card number or track data in the description or the metadata (keys too) is
    refused: free text is stored and returned in clear, card data never is."""
    with pytest.raises(DomainError) as exc:
        machine.create_intent("acct_1", 100, "eur", "manual", description, metadata, NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", reason)
    assert "4111" not in str(exc.value)


def test_create_keeps_numbers_that_are_no_card_numbers() -> None:
    """Order numbers that fail Luhn, or are shorter than 12 digits, are kept as sent."""
    change = machine.create_intent("acct_1", 100, "eur", "manual", "order 4111111111111112",
                                   {"invoice": "12345678901", "ref": "2026-11-23"}, NOW, IDS)
    assert change.intent.description == "order 4111111111111112"
    assert change.intent.metadata == {"invoice": "12345678901", "ref": "2026-11-23"}


# -- confirm ------------------------------------------------------------------------------


def test_confirm_records_the_authorization_and_moves_to_processing() -> None:
    """confirm: intent processing with the token, authorization attempt recorded with the
    trace, events processing + attempt.recorded."""
    intent = create(4200)
    t = trace()
    change = machine.confirm(intent, TOKEN, t, NOW + 5, IDS)
    new = apply(intent, change, NOW + 5)
    assert (new.status, new.payment_method) == (IntentStatus.PROCESSING, TOKEN)
    (att,) = change.attempts
    assert (att.kind, att.status, att.amount, att.currency) == (
        AttemptKind.AUTHORIZATION, AttemptStatus.RECORDED, 4200, "eur")
    assert (att.stan, att.rrn, att.transmitted, att.terminal_id) == (
        t.stan, t.rrn, t.transmitted, t.terminal_id)
    assert att.id.startswith("att_") and att.created == att.updated == NOW + 5
    assert event_types(change) == ["payment_intent.processing", "attempt.recorded"]


def test_confirm_accepts_the_network_trace_type() -> None:
    """gateway.network.Trace can be passed as the trace."""
    net = Trace(stan="000123", rrn="312345000123", transmitted="1122334455",
                local_time="223344", local_date="1122", terminal_id="TERM0001")
    change = machine.confirm(create(), TOKEN, net, NOW, IDS)
    assert (change.attempts[0].stan, change.attempts[0].rrn) == ("000123", "312345000123")


def test_confirm_drops_card_data_from_the_stored_request() -> None:
    """Fields 2, 14, 35, 36, 45, 52 and 55 never reach the attempt's stored request."""
    request = {"t": "0100", "2": PAN, "14": "3012", "35": PAN + "=3012", "36": "x",
               "45": "B" + PAN, "52": "ABCDEF0123456789", "55": "9F2608", "4": "000000010000"}
    change = machine.confirm(create(), TOKEN, trace(), NOW, IDS, request=request)
    assert change.attempts[0].request == {"t": "0100", "4": "000000010000"}


def test_confirm_keeps_the_token_out_of_events() -> None:
    """The token is on the intent, never in an event payload."""
    change = machine.confirm(create(), TOKEN, trace(), NOW, IDS)
    assert all(TOKEN not in json.dumps(e.payload) for e in change.events)


def test_confirm_refuses_an_empty_token() -> None:
    """An empty payment method is INVALID_ARGUMENT payment_method_invalid."""
    with pytest.raises(DomainError) as exc:
        machine.confirm(create(), "", trace(), NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "payment_method_invalid")


@pytest.mark.parametrize("status", [IntentStatus.PROCESSING, IntentStatus.REQUIRES_CAPTURE,
                                    IntentStatus.SUCCEEDED, IntentStatus.CANCELED])
def test_confirm_outside_requires_payment_method_is_refused(status: IntentStatus) -> None:
    """confirm from any other status is FAILED_PRECONDITION intent_unexpected_state, with
    the current status in the metadata."""
    intent, _ = in_state(status)
    with pytest.raises(DomainError) as exc:
        machine.confirm(intent, TOKEN, trace(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "intent_unexpected_state")
    assert exc.value.metadata == {"status": status.value}


# -- authorization outcomes ---------------------------------------------------------------


def test_manual_approval_holds_the_amount_for_capture() -> None:
    """Approved (00), manual capture: requires_capture, amount_capturable = amount."""
    intent, auth = confirmed(10_000)
    change = machine.authorization_outcome(intent, auth, Approved(approval_code="A1"), NOW, IDS)
    new = apply(intent, change)
    assert (new.status, new.amount_capturable, new.amount_received) == (
        IntentStatus.REQUIRES_CAPTURE, 10_000, 0)
    (att,) = change.attempts
    assert (att.status, att.approved_amount, att.response_code, att.approval_code) == (
        AttemptStatus.APPROVED, 10_000, "00", "A1")
    assert event_types(change) == ["attempt.approved", "payment_intent.requires_capture"]


def test_manual_partial_approval_holds_only_the_approved_amount() -> None:
    """Approved 10 for less: amount_capturable is the approved amount."""
    intent, auth = authorized(10_000, approved=6_000)
    assert (intent.status, intent.amount_capturable) == (IntentStatus.REQUIRES_CAPTURE, 6_000)
    assert (auth.approved_amount, auth.response_code) == (6_000, "10")


def test_automatic_approval_records_the_capture_and_stays_processing() -> None:
    """Approved, automatic capture: a capture attempt of the approved amount is recorded and
    the intent stays processing; its approval makes the intent succeeded."""
    intent, auth = confirmed(10_000, "automatic")
    change = machine.authorization_outcome(intent, auth, Approved(), NOW, IDS,
                                           capture_trace=trace())
    new = apply(intent, change)
    settled, cap = change.attempts
    assert (new.status, new.amount_capturable) == (IntentStatus.PROCESSING, 0)
    assert (cap.kind, cap.status, cap.amount, cap.original_attempt_id) == (
        AttemptKind.CAPTURE, AttemptStatus.RECORDED, 10_000, auth.id)
    assert event_types(change) == ["attempt.approved", "attempt.recorded"]
    done = apply(new, machine.capture_outcome(new, settled, cap, Approved(), NOW, IDS))
    assert (done.status, done.amount_received, done.amount_capturable) == (
        IntentStatus.SUCCEEDED, 10_000, 0)


def test_automatic_partial_approval_captures_the_approved_amount() -> None:
    """Approved 10 for less, automatic: the capture and amount_received are the approved
    amount."""
    intent, auth = confirmed(10_000, "automatic")
    change = machine.authorization_outcome(intent, auth, Approved("10", 7_500), NOW, IDS,
                                           capture_trace=trace())
    new = apply(intent, change)
    settled, cap = change.attempts
    assert cap.amount == 7_500
    done = apply(new, machine.capture_outcome(new, settled, cap, Approved(), NOW, IDS))
    assert (done.status, done.amount_received, done.amount) == (
        IntentStatus.SUCCEEDED, 7_500, 10_000)


def test_automatic_approval_needs_a_capture_trace() -> None:
    """An automatic capture cannot be recorded without a trace for its 0220."""
    intent, auth = confirmed(100, "automatic")
    with pytest.raises(ValueError, match="capture_trace"):
        machine.authorization_outcome(intent, auth, Approved(), NOW, IDS)


def test_decline_returns_to_requires_payment_method_with_the_error() -> None:
    """Declined: requires_payment_method with last_payment_error from declines.py, and the
    intent can be confirmed again."""
    intent, auth = confirmed()
    change = machine.authorization_outcome(intent, auth, Declined("51"), NOW, IDS)
    new = apply(intent, change)
    assert new.status is IntentStatus.REQUIRES_PAYMENT_METHOD
    assert new.last_payment_error == declines.decline("51")
    assert change.attempts[0].status is AttemptStatus.DECLINED
    assert change.attempts[0].response_code == "51"
    assert event_types(change) == ["attempt.declined", "payment_intent.payment_failed"]
    assert change.events[1].payload["decline_code"] == "insufficient_funds"
    retry = apply(new, machine.confirm(new, TOKEN, trace(), NOW, IDS))
    assert retry.status is IntentStatus.PROCESSING and retry.last_payment_error is None


def test_unknown_outcome_leaves_the_intent_processing() -> None:
    """Unknown: attempt unknown, intent still processing (the reconciler's)."""
    intent, auth = confirmed()
    change = machine.authorization_outcome(intent, auth, Unknown(), NOW, IDS)
    new = apply(intent, change)
    assert (new.status, change.attempts[0].status) == (IntentStatus.PROCESSING,
                                                       AttemptStatus.UNKNOWN)
    assert event_types(change) == ["attempt.unknown"]


def test_late_reply_to_an_unknown_attempt_is_applied() -> None:
    """An unknown attempt still takes a late approval (the reconciler's late 0110)."""
    intent, auth = confirmed()
    change = machine.authorization_outcome(intent, auth, Unknown(), NOW, IDS)
    intent, auth = apply(intent, change), change.attempts[0]
    late = machine.authorization_outcome(intent, auth, Approved(), NOW, IDS)
    assert apply(intent, late).status is IntentStatus.REQUIRES_CAPTURE


@pytest.mark.parametrize("second", [Approved(), Declined("05"), Unknown()])
def test_duplicate_authorization_outcome_is_refused(second: Outcome) -> None:
    """Any outcome for an authorization already approved is FAILED_PRECONDITION
    attempt_already_final."""
    intent, auth = authorized()
    with pytest.raises(DomainError) as exc:
        machine.authorization_outcome(intent, auth, second, NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "attempt_already_final")
    assert exc.value.metadata == {"attempt_status": "approved"}


def test_second_unknown_for_the_same_attempt_is_refused() -> None:
    """An unknown attempt does not take another Unknown."""
    intent, auth = confirmed()
    change = machine.authorization_outcome(intent, auth, Unknown(), NOW, IDS)
    with pytest.raises(DomainError) as exc:
        machine.authorization_outcome(change.intent, change.attempts[0], Unknown(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "attempt_already_final")


def test_approval_above_the_amount_asked_is_refused() -> None:
    """A reply approving more than was asked is INTERNAL approved_amount_invalid."""
    intent, auth = confirmed(1_000)
    with pytest.raises(DomainError) as exc:
        machine.authorization_outcome(intent, auth, Approved("10", 1_001), NOW, IDS)
    assert refused(exc) == ("INTERNAL", "approved_amount_invalid")


def test_outcome_codes_must_fit_their_kind() -> None:
    """Approved takes only 00/10; Declined never takes 00/10."""
    with pytest.raises(ValueError, match="approval"):
        Approved("05")
    with pytest.raises(ValueError, match="approval"):
        Declined("00")


# -- capture ------------------------------------------------------------------------------


def test_capture_of_zero_takes_all_and_success_moves_the_money() -> None:
    """capture(0) records a capture of amount_capturable; its approval: succeeded,
    amount_received = that amount, amount_capturable 0."""
    intent, auth = authorized(8_000)
    change = machine.capture(intent, auth, 0, trace(), NOW, IDS)
    mid = apply(intent, change)
    (cap,) = change.attempts
    assert (cap.kind, cap.amount, cap.original_attempt_id) == (AttemptKind.CAPTURE, 8_000,
                                                               auth.id)
    assert (mid.status, mid.amount_capturable) == (IntentStatus.PROCESSING, 0)
    assert event_types(change) == ["attempt.recorded", "payment_intent.processing"]
    done_change = machine.capture_outcome(mid, auth, cap, Approved(), NOW, IDS)
    done = apply(mid, done_change)
    assert (done.status, done.amount_received, done.amount_capturable) == (
        IntentStatus.SUCCEEDED, 8_000, 0)
    assert event_types(done_change) == ["attempt.approved", "payment_intent.succeeded"]


def test_partial_capture_receives_only_the_amount_captured() -> None:
    """Capturing 3000 of 8000: amount_received 3000, nothing left capturable."""
    intent, _ = succeeded(8_000, capture=3_000)
    assert (intent.amount_received, intent.amount_capturable, intent.amount) == (3_000, 0, 8_000)


def test_capture_of_a_partial_approval_is_limited_to_the_approved_amount() -> None:
    """After a partial approval of 6000, capturing 6001 is amount_too_large."""
    intent, auth = authorized(10_000, approved=6_000)
    with pytest.raises(DomainError) as exc:
        machine.capture(intent, auth, 6_001, trace(), NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "amount_too_large")
    assert exc.value.metadata == {"amount_capturable": "6000"}


@pytest.mark.parametrize("amount", [-1, True, 1.0])
def test_capture_refuses_a_malformed_amount(amount: int) -> None:
    """A negative, bool or float amount_to_capture is INVALID_ARGUMENT amount_invalid."""
    intent, auth = authorized()
    with pytest.raises(DomainError) as exc:
        machine.capture(intent, auth, amount, trace(), NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "amount_invalid")


@pytest.mark.parametrize("status", [IntentStatus.REQUIRES_PAYMENT_METHOD, IntentStatus.PROCESSING,
                                    IntentStatus.SUCCEEDED, IntentStatus.CANCELED])
def test_capture_outside_requires_capture_is_refused(status: IntentStatus) -> None:
    """capture from any status but requires_capture is intent_unexpected_state."""
    intent, auth = in_state(status)
    _, any_auth = authorized()
    with pytest.raises(DomainError) as exc:
        machine.capture(intent, auth or any_auth, 0, trace(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "intent_unexpected_state")


def test_second_capture_while_one_is_in_flight_is_refused() -> None:
    """While a capture is in flight the intent is processing: another capture is refused."""
    intent, auth, _ = capturing()
    with pytest.raises(DomainError) as exc:
        machine.capture(intent, auth, 0, trace(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "intent_unexpected_state")


def test_declined_capture_restores_the_hold() -> None:
    """A declined 0220 puts the intent back in requires_capture with the authorized amount."""
    intent, auth, cap = capturing(9_000, 4_000)
    change = machine.capture_outcome(intent, auth, cap, Declined("12"), NOW, IDS)
    new = apply(intent, change)
    assert (new.status, new.amount_capturable, new.amount_received) == (
        IntentStatus.REQUIRES_CAPTURE, 9_000, 0)
    assert new.last_payment_error is not None
    assert event_types(change) == ["attempt.declined", "payment_intent.requires_capture"]


def test_unknown_capture_leaves_the_intent_processing() -> None:
    """No 0230: capture attempt unknown, intent processing."""
    intent, auth, cap = capturing()
    change = machine.capture_outcome(intent, auth, cap, Unknown(), NOW, IDS)
    assert apply(intent, change).status is IntentStatus.PROCESSING
    assert change.attempts[0].status is AttemptStatus.UNKNOWN


def test_duplicate_capture_approval_is_refused() -> None:
    """A second approval of the same capture is attempt_already_final: no double count."""
    intent, auth, cap = capturing()
    change = machine.capture_outcome(intent, auth, cap, Approved(), NOW, IDS)
    with pytest.raises(DomainError) as exc:
        machine.capture_outcome(change.intent, auth, change.attempts[0], Approved(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "attempt_already_final")


def test_capture_approval_must_be_for_the_amount_sent() -> None:
    """A capture approved for another amount is INTERNAL approved_amount_invalid."""
    intent, auth, cap = capturing(5_000)
    with pytest.raises(DomainError) as exc:
        machine.capture_outcome(intent, auth, cap, Approved("10", 4_000), NOW, IDS)
    assert refused(exc) == ("INTERNAL", "approved_amount_invalid")
