"""Building blocks of the payment state machine's tests (gateway.payments.machine):
deterministic ids and traces, the checks every Change must pass, and intents brought
to each state through the machine's own commands."""

from __future__ import annotations

import json
import re

import pytest

from gateway.payments import machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, AttemptTrace
from gateway.payments.model import (
    Attempt,
    Change,
    IntentStatus,
    PaymentIntent,
    Refund,
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
