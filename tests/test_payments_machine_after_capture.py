"""The payment state machine (gateway.payments.machine), one test per row of the command
table in DESIGN.md: cancel, refund, and terminal states taking no command."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from machine_cases import (
    IDS,
    NOW,
    TOKEN,
    apply,
    authorized,
    canceled,
    create,
    event_types,
    in_state,
    refunding,
    refused,
    succeeded,
    trace,
)

from gateway.payments import machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, Declined, Unknown
from gateway.payments.model import (
    AttemptKind,
    AttemptStatus,
    IntentStatus,
    Refund,
    RefundStatus,
)

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
