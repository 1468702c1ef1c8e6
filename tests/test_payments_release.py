"""Releasing the rest of a hold after a partial capture: recorded like any attempt, and
never a change to the succeeded intent's status or amounts."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.payments import machine, release
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, AttemptTrace, Declined, Unknown
from gateway.payments.model import Attempt, AttemptKind, AttemptStatus, IntentStatus, PaymentIntent

TRACE = AttemptTrace("000001", "632612000001", "1122120000", "TERM0001")
_ids = iter(range(1_000_000))


def ids(prefix: str) -> str:
    return f"{prefix}_{next(_ids):024d}"


def captured(amount: int, capture: int) -> tuple[PaymentIntent, Attempt]:
    """An intent authorized for ``amount`` and captured for ``capture``."""
    change = machine.create_intent("acme", amount, "eur", "manual", "", None, 1, ids)
    change = machine.confirm(change.intent, "tok", TRACE, 2, ids)
    auth = change.attempts[0]
    change = machine.authorization_outcome(change.intent, auth, Approved("00", None, "ABC123"),
                                           3, ids)
    auth = change.attempts[0]
    change = machine.capture(change.intent, auth, capture, TRACE, 4, ids)
    change = machine.capture_outcome(change.intent, auth, change.attempts[0], Approved(), 5, ids)
    return change.intent, auth


def test_a_partial_capture_leaves_a_remainder_to_release() -> None:
    """Capturing 30.00 of 50.00 leaves 20.00; the release attempt is a recorded 0400 of
    exactly that, and the intent keeps its status and amounts."""
    intent, auth = captured(5000, 3000)
    assert release.remainder(intent, auth) == 2000
    change = release.release(intent, auth, TRACE, 6, ids)
    assert change is not None
    (attempt,) = change.attempts
    assert (attempt.kind, attempt.status, attempt.amount) == (
        AttemptKind.RELEASE, AttemptStatus.RECORDED, 2000)
    assert change.intent.status is IntentStatus.SUCCEEDED
    assert change.intent.amount_received == 3000
    assert change.expected_version == intent.version and change.events


def test_nothing_to_release_after_a_full_capture() -> None:
    """A full capture leaves no remainder and no release."""
    intent, auth = captured(5000, 5000)
    assert release.remainder(intent, auth) == 0
    assert release.release(intent, auth, TRACE, 6, ids) is None


@pytest.mark.parametrize("outcome", [Approved(), Declined("96"), Unknown()])
def test_a_release_outcome_settles_the_attempt_only(outcome: machine.Outcome) -> None:
    """Whatever the reply, the intent stays succeeded with the same amounts; the attempt
    is approved, declined or unknown."""
    intent, auth = captured(5000, 3000)
    change = release.release(intent, auth, TRACE, 6, ids)
    assert change is not None
    done = release.release_outcome(change.intent, change.attempts[0], outcome, 7)
    expected = {Approved: AttemptStatus.APPROVED, Declined: AttemptStatus.DECLINED,
                Unknown: AttemptStatus.UNKNOWN}[type(outcome)]
    assert done.attempts[0].status is expected
    same = ("status", "amount_received", "amount_capturable", "amount_refunded")
    assert all(getattr(done.intent, f) == getattr(intent, f) for f in same)


def test_a_settled_release_takes_no_second_outcome() -> None:
    """A duplicate reply for a settled release is refused as attempt_already_final."""
    intent, auth = captured(5000, 3000)
    change = release.release(intent, auth, TRACE, 6, ids)
    assert change is not None
    done = release.release_outcome(change.intent, change.attempts[0], Approved(), 7)
    with pytest.raises(DomainError) as info:
        release.release_outcome(done.intent, done.attempts[0], Approved(), 8)
    assert info.value.reason == "attempt_already_final"


def test_only_a_succeeded_intent_releases() -> None:
    """An intent still requiring capture cannot release (it would cancel instead)."""
    intent, auth = captured(5000, 3000)
    holding = dataclasses.replace(intent, status=IntentStatus.REQUIRES_CAPTURE)
    assert release.remainder(holding, auth) == 0
    with pytest.raises(DomainError):
        release.release(holding, auth, TRACE, 6, ids)
