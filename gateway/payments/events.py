"""The outbox events of the payment state machine (:mod:`gateway.payments.machine`).

Owns the :class:`~gateway.payments.model.Event` each decision appends for an
intent, an attempt or a refund: its ``type``, its aggregate and the payload that
the store numbers and hash-chains. Pure functions of the records and ``now``.
"""

from __future__ import annotations

from gateway.payments.model import (
    Attempt,
    AttemptStatus,
    Event,
    PaymentIntent,
    Refund,
    RefundStatus,
)


def intent_event(intent: PaymentIntent, now: int, type_: str = "") -> Event:
    payload: dict[str, object] = {
        "merchant_id": intent.merchant_id, "status": intent.status.value,
        "capture_method": intent.capture_method.value, "amount": intent.amount,
        "currency": intent.currency, "amount_capturable": intent.amount_capturable,
        "amount_received": intent.amount_received, "amount_refunded": intent.amount_refunded,
        "version": intent.version,
    }
    error = intent.last_payment_error
    if error is not None:
        payload.update(error_code=error.code, decline_code=error.decline_code,
                       network_response_code=error.network_response_code)
    if intent.cancellation_reason:
        payload["cancellation_reason"] = intent.cancellation_reason
    return Event(type=type_ or f"payment_intent.{intent.status.value}",
                 aggregate_type="payment_intent", aggregate_id=intent.id, payload=payload,
                 created=now)


def attempt_event(attempt: Attempt, now: int) -> Event:
    payload: dict[str, object] = {
        "intent_id": attempt.intent_id, "kind": attempt.kind.value,
        "status": attempt.status.value, "amount": attempt.amount,
        "currency": attempt.currency, "stan": attempt.stan, "rrn": attempt.rrn,
        "terminal_id": attempt.terminal_id,
    }
    if attempt.original_attempt_id:
        payload["original_attempt_id"] = attempt.original_attempt_id
    if attempt.refund_id:
        payload["refund_id"] = attempt.refund_id
    if attempt.status is AttemptStatus.APPROVED:
        payload.update(approved_amount=attempt.approved_amount,
                       approval_code=attempt.approval_code)
    if attempt.response_code:
        payload["response_code"] = attempt.response_code
    return Event(type=f"attempt.{attempt.status.value}", aggregate_type="attempt",
                 aggregate_id=attempt.id, payload=payload, created=now)


def refund_event(record: Refund, intent: PaymentIntent, now: int) -> Event:
    event_type = "refund.created" if record.status is RefundStatus.PENDING else (
        f"refund.{record.status.value}")
    payload: dict[str, object] = {
        "intent_id": record.intent_id, "status": record.status.value, "amount": record.amount,
        "currency": record.currency, "reason": record.reason, "attempt_id": record.attempt_id,
        "intent_amount_refunded": intent.amount_refunded,
    }
    return Event(type=event_type, aggregate_type="refund", aggregate_id=record.id,
                 payload=payload, created=now)
