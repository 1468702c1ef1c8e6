"""The reconciler's rules: a late reply counts only before a reversal is recorded; an
acknowledged reversal ends the payment with network_timeout; repeats keep the message."""

from __future__ import annotations

import pytest

from gateway.payments import machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, AttemptTrace, Declined, Unknown
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    IntentStatus,
    PaymentIntent,
)
from reconciler import rules

TRACE = AttemptTrace("000001", "632612000001", "1122120000", "TERM0001")
_n = iter(range(10**9))


def ids(prefix: str) -> str:
    return f"{prefix}_{next(_n):024d}"


def unknown_auth() -> tuple[PaymentIntent, Attempt]:
    """A manual-capture intent whose authorization got no reply."""
    change = machine.create_intent("acme", 2500, "eur", "manual", "", None, 1, ids)
    change = machine.confirm(change.intent, "tok", TRACE, 2, ids)
    change = machine.authorization_outcome(change.intent, change.attempts[0], Unknown(), 3, ids)
    return change.intent, change.attempts[0]


def test_a_late_reply_counts_only_before_a_reversal_is_recorded() -> None:
    """Before any reversal try the late 0110 is the outcome; after one it is not."""
    intent, auth = unknown_auth()
    assert rules.late_reply_accepted(auth, [auth])
    late = machine.authorization_outcome(intent, auth, Approved("00", None, "LATE01"), 4, ids)
    assert late.intent.status is IntentStatus.REQUIRES_CAPTURE
    change = rules.timeout_reversal(intent, auth, TRACE, 4, ids)
    assert not rules.late_reply_accepted(auth, [auth, *change.attempts])


def test_an_acknowledged_reversal_ends_with_network_timeout() -> None:
    """0430/00: the try approved, the authorization reversed, the intent requires a
    payment method with last_payment_error network_timeout."""
    intent, auth = unknown_auth()
    change = rules.timeout_reversal(intent, auth, TRACE, 4, ids)
    (reversal,) = change.attempts
    assert (reversal.kind, reversal.status, reversal.amount) == (
        AttemptKind.TIMEOUT_REVERSAL, AttemptStatus.RECORDED, 2500)
    done = rules.reversal_outcome(change.intent, auth, reversal, Approved(), 5)
    statuses = {a.id: a.status for a in done.attempts}
    assert statuses == {reversal.id: AttemptStatus.APPROVED, auth.id: AttemptStatus.REVERSED}
    assert done.intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD
    assert done.intent.last_payment_error is not None
    assert done.intent.last_payment_error.code == "network_timeout"
    reversed_auth = next(a for a in done.attempts if a.id == auth.id)
    assert not rules.needs_reversal(reversed_auth, done.attempts)


@pytest.mark.parametrize("outcome", [Unknown(), Declined("30")])
def test_an_unacknowledged_try_leaves_the_reversal_to_repeat(outcome: machine.Outcome) -> None:
    """Without a 0430/00 the intent stays processing and the authorization still needs a
    reversal; the next try is another attempt."""
    intent, auth = unknown_auth()
    change = rules.timeout_reversal(intent, auth, TRACE, 4, ids)
    done = rules.reversal_outcome(change.intent, auth, change.attempts[0], outcome, 5)
    assert done.intent.status is IntentStatus.PROCESSING
    assert rules.needs_reversal(auth, [auth, *done.attempts])
    again = rules.timeout_reversal(done.intent, auth, TRACE, 6, ids)
    assert len(rules.reversals_of(auth, [*done.attempts, *again.attempts])) == 2


def test_a_settled_authorization_is_never_reversed() -> None:
    """Only an unknown authorization can get a reversal try."""
    intent, auth = unknown_auth()
    late = machine.authorization_outcome(intent, auth, Approved(), 4, ids)
    settled = late.attempts[0]
    assert not rules.needs_reversal(settled, [settled])
    with pytest.raises(DomainError):
        rules.timeout_reversal(late.intent, settled, TRACE, 5, ids)


def test_a_repeat_is_the_stored_message_with_the_repeat_mti() -> None:
    """An unknown capture is repeated as 0221 with the same STAN and field 7, recorded as
    an event first."""
    intent, auth = unknown_auth()
    late = machine.authorization_outcome(intent, auth, Approved(), 4, ids)
    held, approved = late.intent, late.attempts[0]
    request = {"t": "0220", "11": "000002", "7": "1122120001", "4": "000000002500"}
    change = machine.capture(held, approved, 0, TRACE, 5, ids, request=request)
    lost = machine.capture_outcome(change.intent, approved, change.attempts[0], Unknown(), 6,
                                   ids)
    capture = lost.attempts[0]
    assert rules.repeat_message(capture) == {**request, "t": "0221"}
    recorded = rules.repeat_recorded(lost.intent, capture, 1, 7)
    assert recorded.events[0].type == "attempt.repeated" and not recorded.attempts
    assert recorded.intent.status is IntentStatus.PROCESSING


def test_an_acknowledged_try_supersedes_the_unanswered_ones() -> None:
    """When the third try is acknowledged, the two earlier tries whose 0430 never came are
    superseded: nothing of the reversal is left unknown."""
    intent, auth = unknown_auth()
    tries: list[Attempt] = []
    for now in (4, 6):
        change = rules.timeout_reversal(intent, auth, TRACE, now, ids)
        lost = rules.reversal_outcome(change.intent, auth, change.attempts[0], Unknown(), now + 1)
        intent, tries = lost.intent, [*tries, lost.attempts[0]]
    change = rules.timeout_reversal(intent, auth, TRACE, 8, ids)
    done = rules.reversal_outcome(change.intent, auth, change.attempts[0], Approved(), 9,
                                  [*tries, change.attempts[0]])
    statuses = {a.id: a.status for a in done.attempts}
    assert [statuses[t.id] for t in tries] == [AttemptStatus.SUPERSEDED] * 2
    assert statuses[change.attempts[0].id] is AttemptStatus.APPROVED
    assert statuses[auth.id] is AttemptStatus.REVERSED
    assert len(done.events) >= 5
