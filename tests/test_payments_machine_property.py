"""The payment state machine (gateway.payments.machine): a stateful property test that
drives one intent through random commands and network replies, checking the
invariants after every step."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from machine_cases import (
    NOW,
    TOKEN,
    Ids,
    check_change,
    trace,
)

from gateway.payments import machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, Declined, Outcome, Unknown
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
