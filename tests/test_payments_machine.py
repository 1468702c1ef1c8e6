"""The payment state machine (gateway.payments.machine): one test per row of the command
table in DESIGN.md, then a stateful property test of the invariants."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.network.trace import Trace
from gateway.payments import declines, machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, AttemptTrace, Declined, Outcome, Unknown
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    CaptureMethod,
    Change,
    IntentStatus,
    PaymentIntent,
    Refund,
    RefundStatus,
)

NOW = 1_700_000_000_000
TOKEN = "4000001234567891"   # a vault token: PAN-shaped, fails Luhn
PAN = "4242424242424242"
PAN_LIKE = re.compile(r"(?<!\d)\d{13,19}(?!\d)")
EVENT_TYPES = {
    "payment_intent.created", "payment_intent.processing", "payment_intent.requires_capture",
    "payment_intent.succeeded", "payment_intent.canceled", "payment_intent.payment_failed",
    "attempt.recorded", "attempt.approved", "attempt.declined", "attempt.unknown",
    "refund.created", "refund.succeeded", "refund.failed",
}


class Ids:
    """Deterministic ids: prefix_t1, prefix_t2, ..."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_t{self.count}"


IDS = Ids()
_stan = 0


def trace() -> AttemptTrace:
    global _stan  # noqa: PLW0603 - a counter for distinct STANs
    _stan = _stan % 999_999 + 1
    return AttemptTrace(stan=f"{_stan:06d}", rrn=f"3001120{_stan:05d}"[-12:],
                        transmitted="1122334455", terminal_id="TERM0001")


def refused(exc: pytest.ExceptionInfo[DomainError]) -> tuple[str, str]:
    return exc.value.status, exc.value.reason


def event_types(change: Change) -> list[str]:
    return [e.type for e in change.events]


def check_change(before: PaymentIntent | None, change: Change, now: int) -> None:
    """What every Change must satisfy (used by the examples and the property test)."""
    after = change.intent
    assert change.events, "every change carries at least one event"
    if before is None:
        assert change.expected_version is None and after.version == 1
    else:
        assert change.expected_version == before.version
        assert after.version == before.version + 1
        assert after.id == before.id
        if before.status.terminal:
            assert after.status is before.status
    assert after.updated == now
    for event in change.events:
        assert event.type in EVENT_TYPES
        assert event.aggregate_type == event.type.split(".")[0]
        assert event.aggregate_id and event.created == now
        text = json.dumps(event.payload, sort_keys=True)
        assert not PAN_LIKE.search(text), text
    for attempt in change.attempts:
        assert attempt.intent_id == after.id
        assert not set(attempt.request) & machine.CARD_DATA_FIELDS


# -- building blocks ----------------------------------------------------------------------


def create(amount: int = 10_000, method: str = "manual", currency: str = "eur") -> PaymentIntent:
    change = machine.create_intent("acct_1", amount, currency, method, "order 7", {"o": "7"},
                                   NOW, IDS)
    check_change(None, change, NOW)
    return change.intent


def apply(before: PaymentIntent, change: Change, now: int = NOW) -> PaymentIntent:
    check_change(before, change, now)
    return change.intent


def confirmed(amount: int = 10_000, method: str = "manual") -> tuple[PaymentIntent, Attempt]:
    intent = create(amount, method)
    change = machine.confirm(intent, TOKEN, trace(), NOW, IDS)
    return apply(intent, change), change.attempts[0]


def authorized(amount: int = 10_000, approved: int | None = None,
               ) -> tuple[PaymentIntent, Attempt]:
    """A manual-capture intent in requires_capture and its approved authorization."""
    intent, auth = confirmed(amount)
    outcome = Approved("10", approved, "AB12CD") if approved else Approved(approval_code="AB12CD")
    change = machine.authorization_outcome(intent, auth, outcome, NOW, IDS)
    return apply(intent, change), change.attempts[0]


def capturing(amount: int = 10_000, capture: int = 0,
              ) -> tuple[PaymentIntent, Attempt, Attempt]:
    """A manual intent whose capture is in flight: (intent, authorization, capture)."""
    intent, auth = authorized(amount)
    change = machine.capture(intent, auth, capture, trace(), NOW, IDS)
    return apply(intent, change), auth, change.attempts[0]


def succeeded(amount: int = 10_000, capture: int = 0) -> tuple[PaymentIntent, Attempt]:
    intent, auth, cap = capturing(amount, capture)
    change = machine.capture_outcome(intent, auth, cap, Approved(), NOW, IDS)
    return apply(intent, change), auth


def canceled() -> PaymentIntent:
    intent = create()
    return apply(intent, machine.cancel(intent, None, "abandoned", None, NOW, IDS))


def refunding(intent: PaymentIntent, auth: Attempt, refunds: list[Refund], amount: int,
              ) -> tuple[PaymentIntent, Refund, Attempt]:
    change = machine.refund(intent, auth, refunds, amount, "requested_by_customer", trace(),
                            NOW, IDS)
    return apply(intent, change), change.refunds[0], change.attempts[0]


def in_state(status: IntentStatus) -> tuple[PaymentIntent, Attempt | None]:
    """An intent in ``status`` and its approved authorization (None when there is none)."""
    if status is IntentStatus.REQUIRES_PAYMENT_METHOD:
        return create(), None
    if status is IntentStatus.PROCESSING:
        return confirmed()[0], None
    if status is IntentStatus.REQUIRES_CAPTURE:
        return authorized()
    if status is IntentStatus.SUCCEEDED:
        return succeeded()
    return canceled(), None


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


# -- cancel -------------------------------------------------------------------------------


def test_cancel_without_a_hold_is_immediate() -> None:
    """cancel from requires_payment_method: canceled at once with the reason."""
    intent = create()
    change = machine.cancel(intent, None, "duplicate", None, NOW, IDS)
    new = apply(intent, change)
    assert (new.status, new.cancellation_reason) == (IntentStatus.CANCELED, "duplicate")
    assert not change.attempts
    assert event_types(change) == ["payment_intent.canceled"]


def test_cancel_with_a_hold_voids_it() -> None:
    """cancel from requires_capture records a void of the authorized amount; its approval
    cancels the intent and releases amount_capturable."""
    intent, auth = authorized(10_000, approved=7_000)
    change = machine.cancel(intent, auth, "requested_by_customer", trace(), NOW, IDS)
    mid = apply(intent, change)
    (void,) = change.attempts
    assert (void.kind, void.amount, void.original_attempt_id) == (AttemptKind.VOID, 7_000,
                                                                  auth.id)
    assert (mid.status, mid.amount_capturable) == (IntentStatus.PROCESSING, 0)
    done_change = machine.void_outcome(mid, auth, void, Approved(), NOW, IDS)
    done = apply(mid, done_change)
    assert (done.status, done.amount_capturable, done.cancellation_reason) == (
        IntentStatus.CANCELED, 0, "requested_by_customer")
    assert event_types(done_change) == ["attempt.approved", "payment_intent.canceled"]


def test_declined_void_restores_the_hold() -> None:
    """A declined 0400 puts the intent back in requires_capture without a reason."""
    intent, auth = authorized(10_000)
    change = machine.cancel(intent, auth, "fraudulent", trace(), NOW, IDS)
    mid = apply(intent, change)
    new = apply(mid, machine.void_outcome(mid, auth, change.attempts[0], Declined("12"), NOW,
                                          IDS))
    assert (new.status, new.amount_capturable, new.cancellation_reason) == (
        IntentStatus.REQUIRES_CAPTURE, 10_000, "")


def test_unknown_void_leaves_the_intent_processing() -> None:
    """No 0410: void attempt unknown, intent processing."""
    intent, auth = authorized()
    change = machine.cancel(intent, auth, "", trace(), NOW, IDS)
    mid = apply(intent, change)
    after = machine.void_outcome(mid, auth, change.attempts[0], Unknown(), NOW, IDS)
    assert apply(mid, after).status is IntentStatus.PROCESSING


def test_cancel_of_a_hold_needs_the_authorization_and_a_trace() -> None:
    """Voiding without the authorization or a trace is a programming error."""
    intent, _ = authorized()
    with pytest.raises(ValueError, match="authorization"):
        machine.cancel(intent, None, "", trace(), NOW, IDS)


@pytest.mark.parametrize("status", [IntentStatus.PROCESSING, IntentStatus.SUCCEEDED,
                                    IntentStatus.CANCELED])
def test_cancel_from_processing_or_a_terminal_state_is_refused(status: IntentStatus) -> None:
    """cancel from processing, succeeded or canceled is intent_unexpected_state."""
    intent, auth = in_state(status)
    with pytest.raises(DomainError) as exc:
        machine.cancel(intent, auth, "", trace(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "intent_unexpected_state")


def test_cancel_refuses_an_unknown_reason() -> None:
    """A reason outside Stripe's list is INVALID_ARGUMENT cancellation_reason_invalid."""
    with pytest.raises(DomainError) as exc:
        machine.cancel(create(), None, "bored", None, NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "cancellation_reason_invalid")


# -- refund -------------------------------------------------------------------------------


def test_refund_of_zero_refunds_everything_received() -> None:
    """refund(0): a pending refund and a refund attempt of amount_received; the approval
    adds it to amount_refunded and the intent stays succeeded."""
    intent, auth = succeeded(5_000, capture=4_000)
    change = machine.refund(intent, auth, [], 0, "", trace(), NOW, IDS)
    mid = apply(intent, change)
    (record,), (att,) = change.refunds, change.attempts
    assert (record.status, record.amount, record.attempt_id) == (RefundStatus.PENDING, 4_000,
                                                                 att.id)
    assert (att.kind, att.amount, att.refund_id, att.original_attempt_id) == (
        AttemptKind.REFUND, 4_000, record.id, auth.id)
    assert event_types(change) == ["refund.created", "attempt.recorded"]
    assert (mid.status, mid.amount_refunded) == (IntentStatus.SUCCEEDED, 0)
    done_change = machine.refund_outcome(mid, record, att, Approved(), NOW, IDS)
    done = apply(mid, done_change)
    assert (done.status, done.amount_refunded) == (IntentStatus.SUCCEEDED, 4_000)
    assert done_change.refunds[0].status is RefundStatus.SUCCEEDED
    assert event_types(done_change) == ["attempt.approved", "refund.succeeded"]


def test_partial_refunds_add_up_to_the_amount_received_and_no_further() -> None:
    """Refunds of 1000, 2500 and 500 of 4000 received succeed; a fourth is refused."""
    intent, auth = succeeded(4_000)
    refunds: list[Refund] = []
    for amount in (1_000, 2_500, 500):
        intent, record, att = refunding(intent, auth, refunds, amount)
        change = machine.refund_outcome(intent, record, att, Approved(), NOW, IDS)
        intent = apply(intent, change)
        refunds.append(change.refunds[0])
    assert intent.amount_refunded == intent.amount_received == 4_000
    with pytest.raises(DomainError) as exc:
        machine.refund(intent, auth, refunds, 1, "", trace(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "charge_already_refunded")


def test_refund_above_what_remains_is_refused() -> None:
    """After 3000 of 4000 refunded, refunding 1001 is amount_too_large (1000 remains)."""
    intent, auth = succeeded(4_000)
    intent, record, att = refunding(intent, auth, [], 3_000)
    change = machine.refund_outcome(intent, record, att, Approved(), NOW, IDS)
    intent = apply(intent, change)
    with pytest.raises(DomainError) as exc:
        machine.refund(intent, auth, list(change.refunds), 1_001, "", trace(), NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "amount_too_large")
    assert exc.value.metadata == {"amount_refundable": "1000"}


def test_pending_refunds_count_against_what_remains() -> None:
    """A pending refund of 3000 of 4000 leaves 1000 refundable."""
    intent, auth = succeeded(4_000)
    intent, record, _ = refunding(intent, auth, [], 3_000)
    with pytest.raises(DomainError) as exc:
        machine.refund(intent, auth, [record], 1_500, "", trace(), NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "amount_too_large")
    assert machine.refund(intent, auth, [record], 0, "", trace(), NOW, IDS).refunds[0].amount \
        == 1_000


def test_failed_refund_frees_its_amount() -> None:
    """A declined refund fails and its amount can be refunded again."""
    intent, auth = succeeded(4_000)
    intent, record, att = refunding(intent, auth, [], 4_000)
    change = machine.refund_outcome(intent, record, att, Declined("13"), NOW, IDS)
    intent = apply(intent, change)
    assert change.refunds[0].status is RefundStatus.FAILED and intent.amount_refunded == 0
    assert event_types(change) == ["attempt.declined", "refund.failed"]
    again = machine.refund(intent, auth, list(change.refunds), 0, "", trace(), NOW, IDS)
    assert again.refunds[0].amount == 4_000


def test_unknown_refund_stays_pending() -> None:
    """No 0210: refund attempt unknown, the refund still pending, nothing refunded."""
    intent, auth = succeeded(4_000)
    intent, record, att = refunding(intent, auth, [], 1_000)
    change = machine.refund_outcome(intent, record, att, Unknown(), NOW, IDS)
    assert apply(intent, change).amount_refunded == 0
    assert not change.refunds and change.attempts[0].status is AttemptStatus.UNKNOWN


def test_duplicate_refund_approval_is_refused() -> None:
    """A second approval of the same refund is attempt_already_final: refunded once."""
    intent, auth = succeeded(4_000)
    intent, record, att = refunding(intent, auth, [], 1_000)
    change = machine.refund_outcome(intent, record, att, Approved(), NOW, IDS)
    with pytest.raises(DomainError) as exc:
        machine.refund_outcome(change.intent, change.refunds[0], change.attempts[0],
                               Approved(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "attempt_already_final")


@pytest.mark.parametrize("status", [IntentStatus.REQUIRES_PAYMENT_METHOD, IntentStatus.PROCESSING,
                                    IntentStatus.REQUIRES_CAPTURE, IntentStatus.CANCELED])
def test_refund_of_an_intent_not_succeeded_is_refused(status: IntentStatus) -> None:
    """refund from any status but succeeded is intent_unexpected_state."""
    intent, auth = in_state(status)
    _, any_auth = succeeded()
    with pytest.raises(DomainError) as exc:
        machine.refund(intent, auth or any_auth, [], 0, "", trace(), NOW, IDS)
    assert refused(exc) == ("FAILED_PRECONDITION", "intent_unexpected_state")


def test_refund_refuses_a_bad_reason_or_amount() -> None:
    """An unknown refund reason or a negative amount is INVALID_ARGUMENT."""
    intent, auth = succeeded()
    with pytest.raises(DomainError) as exc:
        machine.refund(intent, auth, [], 0, "abandoned", trace(), NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "refund_reason_invalid")
    with pytest.raises(DomainError) as exc:
        machine.refund(intent, auth, [], -5, "", trace(), NOW, IDS)
    assert refused(exc) == ("INVALID_ARGUMENT", "amount_invalid")


# -- terminal states ----------------------------------------------------------------------


def test_canceled_intent_takes_no_command() -> None:
    """A canceled intent refuses confirm, capture, cancel and refund."""
    intent = canceled()
    _, auth = succeeded()
    calls: list[Callable[[], object]] = [
        lambda: machine.confirm(intent, TOKEN, trace(), NOW, IDS),
        lambda: machine.capture(intent, auth, 0, trace(), NOW, IDS),
        lambda: machine.cancel(intent, None, "", None, NOW, IDS),
        lambda: machine.refund(intent, auth, [], 0, "", trace(), NOW, IDS),
    ]
    for call in calls:
        with pytest.raises(DomainError) as exc:
            call()
        assert exc.value.metadata == {"status": "canceled"}


def test_late_authorization_reply_cannot_reopen_a_succeeded_intent() -> None:
    """An authorization reply arriving after success is refused, the intent unchanged."""
    intent, auth = succeeded()
    for outcome in (Approved(), Declined("05")):
        with pytest.raises(DomainError) as exc:
            machine.authorization_outcome(intent, auth, outcome, NOW, IDS)
        assert exc.value.reason == "attempt_already_final"


# -- property: random command sequences ---------------------------------------------------

DECLINE_CODES = ["05", "12", "13", "14", "30", "41", "43", "51", "54", "57", "61", "62", "65",
                 "91", "96", "Z9"]


def outcomes(attempt: Attempt) -> st.SearchStrategy[Outcome]:
    """Replies the network could send to ``attempt`` (partial approvals for 0100 only)."""
    approvals: st.SearchStrategy[Outcome] = st.just(Approved(approval_code="X1Y2Z3"))
    if attempt.kind is AttemptKind.AUTHORIZATION:
        approvals = approvals | st.integers(1, attempt.amount).map(
            lambda n: Approved("10", n, "P4Q5R6"))
    return st.one_of(approvals, st.sampled_from(DECLINE_CODES).map(Declined),
                     st.just(Unknown()))


@settings(max_examples=300, stateful_step_count=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
class PaymentLifecycle(RuleBasedStateMachine):
    """Drives one intent through random commands and replies, checking the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.ids = Ids()
        self.now = NOW
        self.intent: PaymentIntent | None = None
        self.attempts: dict[str, Attempt] = {}
        self.refunds: dict[str, Refund] = {}

    @property
    def current(self) -> PaymentIntent:
        assert self.intent is not None
        return self.intent

    def tick(self) -> int:
        self.now += 1
        return self.now

    def apply(self, change: Change) -> None:
        check_change(self.intent, change, self.now)
        self.intent = change.intent
        self.attempts.update((a.id, a) for a in change.attempts)
        self.refunds.update((r.id, r) for r in change.refunds)

    def authorization(self) -> Attempt:
        approved = [a for a in self.attempts.values() if a.kind is AttemptKind.AUTHORIZATION
                    and a.status is AttemptStatus.APPROVED]
        assert len(approved) <= 1
        return approved[0] if approved else next(iter(self.attempts.values()))

    def reply(self, attempt: Attempt, outcome: Outcome) -> Change:
        intent, now = self.current, self.now
        if attempt.kind is AttemptKind.AUTHORIZATION:
            return machine.authorization_outcome(intent, attempt, outcome, now, self.ids,
                                                 capture_trace=trace())
        auth = self.attempts[attempt.original_attempt_id]
        if attempt.kind is AttemptKind.CAPTURE:
            return machine.capture_outcome(intent, auth, attempt, outcome, now, self.ids)
        if attempt.kind is AttemptKind.VOID:
            return machine.void_outcome(intent, auth, attempt, outcome, now, self.ids)
        return machine.refund_outcome(intent, self.refunds[attempt.refund_id], attempt,
                                      outcome, now, self.ids)

    def expect_refusal(self, reason: str, call: Callable[[], object]) -> None:
        with pytest.raises(DomainError) as exc:
            call()
        assert exc.value.reason == reason, exc.value

    @initialize(amount=st.integers(1, 10**7), method=st.sampled_from(list(CaptureMethod)),
                currency=st.sampled_from(["eur", "jpy", "kwd"]))
    def create(self, amount: int, method: CaptureMethod, currency: str) -> None:
        self.apply(machine.create_intent("acct_p", amount, currency, method, "", None,
                                         self.tick(), self.ids))

    @rule()
    def confirm(self) -> None:
        intent = self.current

        def call() -> Change:
            return machine.confirm(intent, TOKEN, trace(), self.tick(), self.ids)

        if intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD:
            self.apply(call())
        else:
            self.expect_refusal("intent_unexpected_state", call)

    @rule(data=st.data())
    def network_replies(self, data: st.DataObject) -> None:
        waiting = [a for a in self.attempts.values()
                   if a.status in (AttemptStatus.RECORDED, AttemptStatus.UNKNOWN)]
        if not waiting:
            return
        attempt = data.draw(st.sampled_from(waiting))
        outcome = data.draw(outcomes(attempt))
        if attempt.status is AttemptStatus.UNKNOWN and isinstance(outcome, Unknown):
            self.expect_refusal("attempt_already_final", lambda: self.reply(attempt, outcome))
            return
        self.tick()
        change = self.reply(attempt, outcome)
        self.apply(change)
        # The same reply again (a duplicate on the wire) never applies twice.
        self.expect_refusal("attempt_already_final",
                            lambda: self.reply(self.attempts[attempt.id], outcome))

    @rule(data=st.data())
    def stale_reply(self, data: st.DataObject) -> None:
        final = [a for a in self.attempts.values()
                 if a.status in (AttemptStatus.APPROVED, AttemptStatus.DECLINED)]
        if final:
            attempt = data.draw(st.sampled_from(final))
            outcome = data.draw(outcomes(attempt))
            self.expect_refusal("attempt_already_final", lambda: self.reply(attempt, outcome))

    @rule(data=st.data())
    def capture(self, data: st.DataObject) -> None:
        intent = self.current
        amount = data.draw(st.integers(0, intent.amount + 1))

        def call() -> Change:
            return machine.capture(intent, self.authorization(), amount, trace(), self.tick(),
                                   self.ids)

        if intent.status is not IntentStatus.REQUIRES_CAPTURE:
            if self.attempts:
                self.expect_refusal("intent_unexpected_state", call)
        elif amount > intent.amount_capturable:
            self.expect_refusal("amount_too_large", call)
        else:
            self.apply(call())

    @rule(reason=st.sampled_from(sorted(machine.CANCELLATION_REASONS)))
    def cancel(self, reason: str) -> None:
        intent = self.current
        auth = self.authorization() if intent.status is IntentStatus.REQUIRES_CAPTURE else None

        def call() -> Change:
            return machine.cancel(intent, auth, reason, trace(), self.tick(), self.ids)

        if intent.status in (IntentStatus.REQUIRES_PAYMENT_METHOD,
                             IntentStatus.REQUIRES_CAPTURE):
            self.apply(call())
        else:
            self.expect_refusal("intent_unexpected_state", call)

    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        intent = self.current
        if not self.attempts:
            return
        amount = data.draw(st.integers(0, intent.amount_received + 1))
        refunds = list(self.refunds.values())
        remaining = intent.amount_received - sum(
            r.amount for r in refunds if r.status is not RefundStatus.FAILED)

        def call() -> Change:
            return machine.refund(intent, self.authorization(), refunds, amount, "", trace(),
                                  self.tick(), self.ids)

        if intent.status is not IntentStatus.SUCCEEDED:
            self.expect_refusal("intent_unexpected_state", call)
        elif remaining == 0:
            self.expect_refusal("charge_already_refunded", call)
        elif amount > remaining:
            self.expect_refusal("amount_too_large", call)
        else:
            self.apply(call())

    @invariant()
    def amounts_are_consistent(self) -> None:
        """0 <= refunded <= received <= amount; capturable only while requires_capture."""
        if self.intent is None:
            return
        i = self.intent
        assert 0 <= i.amount_refunded <= i.amount_received <= i.amount
        assert 0 <= i.amount_capturable <= i.amount
        assert (i.amount_capturable > 0) == (i.status is IntentStatus.REQUIRES_CAPTURE)
        assert (i.amount_received > 0) == (i.status is IntentStatus.SUCCEEDED)
        assert i.amount_refunded == sum(r.amount for r in self.refunds.values()
                                        if r.status is RefundStatus.SUCCEEDED)
        assert sum(r.amount for r in self.refunds.values()
                   if r.status is not RefundStatus.FAILED) <= i.amount_received

    @invariant()
    def at_most_one_approved_authorization_and_capture(self) -> None:
        """An intent never holds two approved authorizations or two approved captures."""
        for kind in (AttemptKind.AUTHORIZATION, AttemptKind.CAPTURE):
            assert sum(1 for a in self.attempts.values()
                       if a.kind is kind and a.status is AttemptStatus.APPROVED) <= 1


TestPaymentLifecycle = PaymentLifecycle.TestCase
