"""The payment state machine, as pure functions. No I/O, no clock, no randomness.

Each function takes the current records, the command's or outcome's inputs, the
time ``now`` (ms since the epoch) and an ``ids`` provider (``ids(prefix) -> id``,
default :func:`~gateway.payments.model.new_id`), and returns a
:class:`~gateway.payments.model.Change` for the store to write atomically, or
raises :class:`~gateway.payments.errors.DomainError`. The rules are the command
table of ``gateway/payments/DESIGN.md``; in short:

* every Change carries at least one event, ``expected_version`` = the version
  the decision was made on, and the intent at ``version + 1``, ``updated = now``;
* ``succeeded`` and ``canceled`` are terminal: nothing changes their status
  (a refund outcome changes only ``amount_refunded`` of a succeeded intent);
* an outcome is accepted only for an attempt that waits for one (``recorded``,
  or ``unknown`` for a late reply); anything else is FAILED_PRECONDITION
  ``attempt_already_final``, so a duplicate never applies twice;
* while a capture (0220) or void (0400) is in flight the intent is
  ``processing`` with ``amount_capturable`` 0; a declined capture or void puts
  it back to ``requires_capture`` with the authorization's approved amount.

Attempts are returned ``recorded``: the caller writes the Change, then sends.
The ``request`` of an attempt is what will be sent, minus card data (fields 2,
14, 35, 36, 45, 52 and 55 are dropped if given).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gateway.logging import has_card_data
from gateway.payments import money
from gateway.payments.declines import APPROVAL_CODES, APPROVED, decline
from gateway.payments.errors import DomainError
from gateway.payments.events import attempt_event, intent_event, refund_event
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    CaptureMethod,
    Change,
    Event,
    IntentStatus,
    PaymentIntent,
    Refund,
    RefundStatus,
    new_id,
)

__all__ = [
    "CANCELLATION_REASONS",
    "CARD_DATA_FIELDS",
    "DESCRIPTION_MAX",
    "METADATA_KEY_MAX",
    "METADATA_MAX_KEYS",
    "METADATA_VALUE_MAX",
    "REFUND_REASONS",
    "Approved",
    "AttemptTrace",
    "Declined",
    "Ids",
    "Outcome",
    "TraceFields",
    "Unknown",
    "authorization_outcome",
    "cancel",
    "capture",
    "capture_outcome",
    "confirm",
    "create_intent",
    "refund",
    "refund_outcome",
    "void_outcome",
]

#: ``ids(prefix)`` returns a new id such as ``pi_…``, ``att_…``, ``re_…``.
Ids = Callable[[str], str]

METADATA_MAX_KEYS: Final = 50
METADATA_KEY_MAX: Final = 40
METADATA_VALUE_MAX: Final = 500
DESCRIPTION_MAX: Final = 1000
PAYMENT_METHOD_MAX: Final = 255
#: Stripe's cancellation reasons a caller may give ("" = none).
CANCELLATION_REASONS: Final = frozenset(
    {"", "duplicate", "fraudulent", "requested_by_customer", "abandoned"})
#: Stripe's refund reasons a caller may give ("" = none).
REFUND_REASONS: Final = frozenset({"", "duplicate", "fraudulent", "requested_by_customer"})
#: Message fields that are card data: never stored with an attempt.
CARD_DATA_FIELDS: Final = frozenset({"2", "14", "35", "36", "45", "48", "52", "55"})


class TraceFields(Protocol):
    """What identifies a request on the network (``gateway.network.Trace`` fits)."""

    @property
    def stan(self) -> str: ...          # field 11
    @property
    def rrn(self) -> str: ...           # field 37
    @property
    def transmitted(self) -> str: ...   # field 7, MMDDhhmmss UTC
    @property
    def terminal_id(self) -> str: ...   # field 41


@dataclass(frozen=True, slots=True)
class AttemptTrace:
    """A request's trace as the caller allocated it (see :class:`TraceFields`)."""

    stan: str
    rrn: str
    transmitted: str
    terminal_id: str


@dataclass(frozen=True, slots=True)
class Approved:
    """The network approved: field 39 ``00``, or ``10`` (partial approval, authorizations).

    ``approved_amount`` is field 4 of the reply (None: the amount asked).
    """

    code: str = APPROVED
    approved_amount: int | None = None
    approval_code: str = ""  # field 38

    def __post_init__(self) -> None:
        if self.code not in APPROVAL_CODES:
            raise ValueError(f"field 39 {self.code!r} is not an approval")


@dataclass(frozen=True, slots=True)
class Declined:
    """The network answered with a field 39 that is not an approval."""

    code: str

    def __post_init__(self) -> None:
        if self.code in APPROVAL_CODES:
            raise ValueError(f"field 39 {self.code!r} is an approval")


@dataclass(frozen=True, slots=True)
class Unknown:
    """No answer came (deadline passed, connection lost): the reconciler's case."""


Outcome = Approved | Declined | Unknown


# -- commands -----------------------------------------------------------------------------


def create_intent(
    merchant_id: str, amount: int, currency: str, capture_method: CaptureMethod | str,
    description: str, metadata: Mapping[str, str] | None, now: int, ids: Ids = new_id,
) -> Change:
    """A new intent in ``requires_payment_method``, version 1.

    INVALID_ARGUMENT ``currency_invalid`` / ``amount_invalid`` (see
    :func:`gateway.payments.money.validate_amount`), ``capture_method_invalid``,
    ``description_invalid`` (over 1000 characters) or ``metadata_invalid``
    (over 50 keys, empty key, key over 40 or value over 500 characters), and
    ``card_data_in_description`` / ``card_data_in_metadata`` when either holds a card
    number (a Luhn-valid run of 12 to 19 digits, grouped or not), track data or a
    compact JWE: free text is stored, replayed and returned in clear, card data never is.
    """
    if not merchant_id:
        raise ValueError("merchant_id must not be empty")
    money.validate_amount(amount, currency)
    try:
        method = CaptureMethod(capture_method)
    except ValueError:
        raise _invalid("capture_method_invalid",
                       "capture_method must be automatic or manual") from None
    if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
        raise _invalid("description_invalid",
                       f"description must be text of at most {DESCRIPTION_MAX} characters")
    if has_card_data(description):
        raise _invalid("card_data_in_description",
                       "description must not contain card data (a card number or track data)")
    intent = PaymentIntent(
        id=ids("pi"), merchant_id=merchant_id, amount=amount, currency=currency,
        capture_method=method, status=IntentStatus.REQUIRES_PAYMENT_METHOD, created=now,
        updated=now, description=description, metadata=_metadata(metadata), version=1)
    return Change(intent=intent, expected_version=None,
                  events=(intent_event(intent, now, "payment_intent.created"),))


def confirm(
    intent: PaymentIntent, token: str, trace: TraceFields, now: int, ids: Ids = new_id,
    request: Mapping[str, str] | None = None,
) -> Change:
    """Pay ``intent`` with the vault ``token``: intent ``processing``, and the
    authorization attempt (0100) ``recorded``.

    From ``requires_payment_method`` only (else FAILED_PRECONDITION
    ``intent_unexpected_state``); INVALID_ARGUMENT ``payment_method_invalid`` for
    an empty token.
    """
    if not isinstance(token, str) or not 0 < len(token) <= PAYMENT_METHOD_MAX:
        raise _invalid("payment_method_invalid", "payment_method must be a card token")
    _require(intent, IntentStatus.REQUIRES_PAYMENT_METHOD)
    attempt = _new_attempt(intent, AttemptKind.AUTHORIZATION, intent.amount, trace, now, ids,
                           request)
    new = _next(intent, now, status=IntentStatus.PROCESSING, payment_method=token,
                last_payment_error=None)
    return _change(intent, new, attempts=(attempt,),
                   events=(intent_event(new, now), attempt_event(attempt, now)))


def capture(
    intent: PaymentIntent, authorization: Attempt, amount_to_capture: int,
    trace: TraceFields, now: int, ids: Ids = new_id, request: Mapping[str, str] | None = None,
) -> Change:
    """Capture ``amount_to_capture`` (0 = all of ``amount_capturable``) of the hold:
    capture attempt (0220) ``recorded``, intent ``processing`` until its outcome.

    INVALID_ARGUMENT ``amount_invalid`` (not a non-negative int); from
    ``requires_capture`` only (FAILED_PRECONDITION ``intent_unexpected_state``);
    INVALID_ARGUMENT ``amount_too_large`` above ``amount_capturable``.
    """
    amount = _amount_argument(amount_to_capture)
    _require(intent, IntentStatus.REQUIRES_CAPTURE)
    _check_authorization(intent, authorization)
    amount = amount or intent.amount_capturable
    if amount > intent.amount_capturable:
        raise _invalid("amount_too_large", "amount_to_capture is above amount_capturable",
                       {"amount_capturable": str(intent.amount_capturable)})
    attempt = _new_attempt(intent, AttemptKind.CAPTURE, amount, trace, now, ids, request,
                           original=authorization)
    new = _next(intent, now, status=IntentStatus.PROCESSING, amount_capturable=0)
    return _change(intent, new, attempts=(attempt,),
                   events=(attempt_event(attempt, now), intent_event(new, now)))


def cancel(
    intent: PaymentIntent, authorization: Attempt | None, reason: str,
    trace: TraceFields | None, now: int, ids: Ids = new_id,
    request: Mapping[str, str] | None = None,
) -> Change:
    """Cancel ``intent``: at once from ``requires_payment_method``; from
    ``requires_capture`` by a void (0400) of the hold: void attempt ``recorded``,
    intent ``processing`` until its outcome (then ``canceled``).

    INVALID_ARGUMENT ``cancellation_reason_invalid`` unless ``reason`` is one of
    :data:`CANCELLATION_REASONS`; FAILED_PRECONDITION ``intent_unexpected_state``
    from ``processing``, ``succeeded`` and ``canceled``. ``authorization`` and
    ``trace`` are needed (ValueError) only for a void.
    """
    if reason not in CANCELLATION_REASONS:
        raise _invalid("cancellation_reason_invalid",
                       "cancellation_reason must be one of: "
                       + ", ".join(sorted(CANCELLATION_REASONS - {""})))
    _require(intent, IntentStatus.REQUIRES_PAYMENT_METHOD, IntentStatus.REQUIRES_CAPTURE)
    if intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD:
        new = _next(intent, now, status=IntentStatus.CANCELED, cancellation_reason=reason,
                    amount_capturable=0)
        return _change(intent, new, events=(intent_event(new, now),))
    if authorization is None or trace is None:
        raise ValueError("cancelling a hold needs its authorization and a trace for the void")
    _check_authorization(intent, authorization)
    attempt = _new_attempt(intent, AttemptKind.VOID, authorization.approved_amount, trace,
                           now, ids, request, original=authorization)
    new = _next(intent, now, status=IntentStatus.PROCESSING, amount_capturable=0,
                cancellation_reason=reason)
    return _change(intent, new, attempts=(attempt,),
                   events=(attempt_event(attempt, now), intent_event(new, now)))


def refund(
    intent: PaymentIntent, authorization: Attempt, refunds_so_far: Sequence[Refund],
    amount: int, reason: str, trace: TraceFields, now: int, ids: Ids = new_id,
    request: Mapping[str, str] | None = None,
) -> Change:
    """Refund ``amount`` (0 = all that remains) of a ``succeeded`` intent: refund
    ``pending`` and refund attempt (0200, processing code 20) ``recorded``.

    ``refunds_so_far`` are all the intent's refunds; pending ones count against
    what remains (``amount_received`` minus every refund not ``failed``).
    INVALID_ARGUMENT ``amount_invalid`` / ``refund_reason_invalid``;
    FAILED_PRECONDITION ``intent_unexpected_state`` unless ``succeeded``, and
    ``charge_already_refunded`` when nothing remains; INVALID_ARGUMENT
    ``amount_too_large`` above what remains.
    """
    asked = _amount_argument(amount)
    if reason not in REFUND_REASONS:
        raise _invalid("refund_reason_invalid", "reason must be one of: "
                       + ", ".join(sorted(REFUND_REASONS - {""})))
    _require(intent, IntentStatus.SUCCEEDED)
    _check_authorization(intent, authorization)
    if any(r.intent_id != intent.id for r in refunds_so_far):
        raise ValueError("refunds_so_far must be refunds of this intent")
    committed = sum(r.amount for r in refunds_so_far if r.status is not RefundStatus.FAILED)
    remaining = intent.amount_received - max(committed, intent.amount_refunded)
    if remaining <= 0:
        raise DomainError("FAILED_PRECONDITION", "charge_already_refunded",
                          "the payment has already been refunded in full",
                          {"amount_received": str(intent.amount_received)})
    asked = asked or remaining
    if asked > remaining:
        raise _invalid("amount_too_large", "the refund is above what remains to refund",
                       {"amount_refundable": str(remaining)})
    refund_id = ids("re")
    attempt = _new_attempt(intent, AttemptKind.REFUND, asked, trace, now, ids, request,
                           original=authorization, refund_id=refund_id)
    record = Refund(id=refund_id, intent_id=intent.id, amount=asked, currency=intent.currency,
                    status=RefundStatus.PENDING, created=now, updated=now, reason=reason,
                    attempt_id=attempt.id)
    new = _next(intent, now)
    return _change(intent, new, attempts=(attempt,), refunds=(record,),
                   events=(refund_event(record, new, now), attempt_event(attempt, now)))


# -- outcomes -----------------------------------------------------------------------------


def authorization_outcome(
    intent: PaymentIntent, attempt: Attempt, outcome: Outcome, now: int, ids: Ids = new_id,
    capture_trace: TraceFields | None = None, capture_request: Mapping[str, str] | None = None,
) -> Change:
    """Apply the reply (or its absence) to an authorization (0100) attempt.

    Approved (00, or 10 for less): manual capture -> ``requires_capture`` with
    ``amount_capturable`` = the approved amount; automatic -> a capture attempt of
    the approved amount is ``recorded`` (needs ``capture_trace``) and the intent
    stays ``processing``. Declined -> ``requires_payment_method`` with
    ``last_payment_error``. Unknown -> attempt ``unknown``, intent ``processing``.
    """
    _check_attempt(intent, attempt, AttemptKind.AUTHORIZATION, outcome)
    _require(intent, IntentStatus.PROCESSING)
    settled = _settle(attempt, outcome, now, partial_ok=True)
    events = [attempt_event(settled, now)]
    attempts = [settled]
    if isinstance(outcome, Unknown):
        new = _next(intent, now)
    elif isinstance(outcome, Declined):
        new = _next(intent, now, status=IntentStatus.REQUIRES_PAYMENT_METHOD,
                    last_payment_error=decline(outcome.code))
        events.append(intent_event(new, now, "payment_intent.payment_failed"))
    elif intent.capture_method is CaptureMethod.MANUAL:
        new = _next(intent, now, status=IntentStatus.REQUIRES_CAPTURE,
                    amount_capturable=settled.approved_amount)
        events.append(intent_event(new, now))
    else:
        if capture_trace is None:
            raise ValueError("an automatic capture needs capture_trace")
        captured = _new_attempt(intent, AttemptKind.CAPTURE, settled.approved_amount,
                                capture_trace, now, ids, capture_request, original=settled)
        new = _next(intent, now)
        attempts.append(captured)
        events.append(attempt_event(captured, now))
    return _change(intent, new, attempts=tuple(attempts), events=tuple(events))


def capture_outcome(
    intent: PaymentIntent, authorization: Attempt, attempt: Attempt, outcome: Outcome,
    now: int, ids: Ids = new_id,
) -> Change:
    """Apply the reply to a capture (0220) attempt.

    Approved -> ``succeeded``, ``amount_received`` = the captured amount,
    ``amount_capturable`` 0. Declined -> back to ``requires_capture`` (the hold
    stands: ``amount_capturable`` = the authorization's approved amount) with
    ``last_payment_error``. Unknown -> attempt ``unknown``, intent ``processing``.
    """
    settled, unknown = _settle_follow_up(intent, authorization, attempt, AttemptKind.CAPTURE,
                                         outcome, now)
    if unknown is not None:
        return unknown
    if isinstance(outcome, Declined):
        new = _next(intent, now, status=IntentStatus.REQUIRES_CAPTURE,
                    amount_capturable=authorization.approved_amount,
                    last_payment_error=decline(outcome.code))
    else:
        new = _next(intent, now, status=IntentStatus.SUCCEEDED, amount_capturable=0,
                    amount_received=settled.approved_amount, last_payment_error=None)
    return _change(intent, new, attempts=(settled,),
                   events=(attempt_event(settled, now), intent_event(new, now)))


def void_outcome(
    intent: PaymentIntent, authorization: Attempt, attempt: Attempt, outcome: Outcome,
    now: int, ids: Ids = new_id,
) -> Change:
    """Apply the reply to a void (0400) attempt.

    Approved (0410 00) -> ``canceled``, ``amount_capturable`` 0. Declined -> back
    to ``requires_capture`` with the authorization's approved amount and no
    ``cancellation_reason``. Unknown -> attempt ``unknown``, intent ``processing``.
    """
    settled, unknown = _settle_follow_up(intent, authorization, attempt, AttemptKind.VOID,
                                         outcome, now)
    if unknown is not None:
        return unknown
    if isinstance(outcome, Declined):
        new = _next(intent, now, status=IntentStatus.REQUIRES_CAPTURE,
                    amount_capturable=authorization.approved_amount, cancellation_reason="")
    else:
        new = _next(intent, now, status=IntentStatus.CANCELED, amount_capturable=0)
    return _change(intent, new, attempts=(settled,),
                   events=(attempt_event(settled, now), intent_event(new, now)))


def refund_outcome(
    intent: PaymentIntent, refund: Refund, attempt: Attempt, outcome: Outcome, now: int,
    ids: Ids = new_id,
) -> Change:
    """Apply the reply to a refund (0200) attempt. The intent stays ``succeeded``.

    Approved -> refund ``succeeded``, ``amount_refunded`` += its amount. Declined
    -> refund ``failed`` (its amount is refundable again). Unknown -> attempt
    ``unknown``, refund ``pending``.
    """
    _check_attempt(intent, attempt, AttemptKind.REFUND, outcome)
    if refund.intent_id != intent.id or attempt.refund_id != refund.id:
        raise ValueError("the refund, its attempt and the intent do not belong together")
    if refund.status is not RefundStatus.PENDING:
        raise _already_final(attempt)
    _require(intent, IntentStatus.SUCCEEDED)
    settled = _settle(attempt, outcome, now, partial_ok=False)
    if isinstance(outcome, Unknown):
        return _change(intent, _next(intent, now), attempts=(settled,),
                       events=(attempt_event(settled, now),))
    if isinstance(outcome, Declined):
        new = _next(intent, now)
        record = dataclasses.replace(refund, status=RefundStatus.FAILED, updated=now)
    else:
        refunded = intent.amount_refunded + refund.amount
        if refunded > intent.amount_received:
            raise DomainError("INTERNAL", "refund_inconsistent",
                              "the refunds recorded exceed the amount received")
        new = _next(intent, now, amount_refunded=refunded)
        record = dataclasses.replace(refund, status=RefundStatus.SUCCEEDED, updated=now)
    return _change(intent, new, attempts=(settled,), refunds=(record,),
                   events=(attempt_event(settled, now), refund_event(record, new, now)))


# -- helpers ------------------------------------------------------------------------------


def _invalid(reason: str, message: str, metadata: Mapping[str, str] | None = None,
             ) -> DomainError:
    return DomainError("INVALID_ARGUMENT", reason, message, metadata)


def require_status(intent: PaymentIntent, *allowed: IntentStatus) -> None:
    """Raise FAILED_PRECONDITION ``intent_unexpected_state`` unless ``intent`` is in one of
    ``allowed`` (lets a caller refuse before doing costly work, with the same error)."""
    _require(intent, *allowed)


def _require(intent: PaymentIntent, *allowed: IntentStatus) -> None:
    if intent.status not in allowed:
        raise DomainError("FAILED_PRECONDITION", "intent_unexpected_state",
                          f"this is not allowed while the payment intent is {intent.status}",
                          {"status": intent.status.value})


def _already_final(attempt: Attempt) -> DomainError:
    return DomainError("FAILED_PRECONDITION", "attempt_already_final",
                       f"the {attempt.kind} attempt is {attempt.status}: it expects no "
                       "such outcome", {"attempt_status": attempt.status.value})


def _amount_argument(amount: object) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise _invalid("amount_invalid", "amount must be a non-negative integer number of "
                       "minor units (0 = all)")
    return amount


def _metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or len(metadata) > METADATA_MAX_KEYS or any(
            not isinstance(k, str) or not isinstance(v, str) or not k
            or len(k) > METADATA_KEY_MAX or len(v) > METADATA_VALUE_MAX
            for k, v in metadata.items()):
        raise _invalid("metadata_invalid",
                       f"metadata: at most {METADATA_MAX_KEYS} keys, keys of 1 to "
                       f"{METADATA_KEY_MAX} and values of at most {METADATA_VALUE_MAX} "
                       "characters")
    if any(has_card_data(k) or has_card_data(v) for k, v in metadata.items()):
        raise _invalid("card_data_in_metadata",
                       "metadata must not contain card data (a card number or track data)")
    return dict(metadata)


def _check_attempt(intent: PaymentIntent, attempt: Attempt, kind: AttemptKind,
                   outcome: Outcome) -> None:
    if attempt.intent_id != intent.id or attempt.kind is not kind:
        raise ValueError(f"expected a {kind} attempt of intent {intent.id}")
    waiting = ((AttemptStatus.RECORDED,) if isinstance(outcome, Unknown)
               else (AttemptStatus.RECORDED, AttemptStatus.UNKNOWN))
    if attempt.status not in waiting:
        raise _already_final(attempt)


def _settle_follow_up(
    intent: PaymentIntent, authorization: Attempt, attempt: Attempt, kind: AttemptKind,
    outcome: Outcome, now: int,
) -> tuple[Attempt, Change | None]:
    """The checks every capture/void outcome makes, the settled attempt, and (for an
    Unknown outcome) the whole change: attempt ``unknown``, intent ``processing``."""
    _check_attempt(intent, attempt, kind, outcome)
    _check_authorization(intent, authorization)
    if attempt.original_attempt_id != authorization.id:
        raise ValueError(f"the {kind} attempt belongs to another authorization")
    _require(intent, IntentStatus.PROCESSING)
    settled = _settle(attempt, outcome, now, partial_ok=False)
    if isinstance(outcome, Unknown):
        return settled, _change(intent, _next(intent, now), attempts=(settled,),
                                events=(attempt_event(settled, now),))
    return settled, None


def _check_authorization(intent: PaymentIntent, authorization: Attempt) -> None:
    if (authorization.intent_id != intent.id
            or authorization.kind is not AttemptKind.AUTHORIZATION
            or authorization.status is not AttemptStatus.APPROVED):
        raise ValueError(f"expected the approved authorization of intent {intent.id}")


def _settle(attempt: Attempt, outcome: Outcome, now: int, *, partial_ok: bool) -> Attempt:
    if isinstance(outcome, Unknown):
        return dataclasses.replace(attempt, status=AttemptStatus.UNKNOWN, updated=now)
    if isinstance(outcome, Declined):
        return dataclasses.replace(attempt, status=AttemptStatus.DECLINED, updated=now,
                                   response_code=outcome.code)
    approved = attempt.amount if outcome.approved_amount is None else outcome.approved_amount
    if (isinstance(approved, bool) or not isinstance(approved, int)
            or not 0 < approved <= attempt.amount
            or (approved != attempt.amount and not partial_ok)):
        raise DomainError("INTERNAL", "approved_amount_invalid",
                          "the network approved an amount that does not fit the request",
                          {"attempt": attempt.id})
    return dataclasses.replace(attempt, status=AttemptStatus.APPROVED, updated=now,
                               approved_amount=approved, response_code=outcome.code,
                               approval_code=outcome.approval_code)


def _new_attempt(
    intent: PaymentIntent, kind: AttemptKind, amount: int, trace: TraceFields, now: int,
    ids: Ids, request: Mapping[str, str] | None, *, original: Attempt | None = None,
    refund_id: str = "",
) -> Attempt:
    sent = {k: v for k, v in (request or {}).items() if k not in CARD_DATA_FIELDS}
    return Attempt(
        id=ids("att"), intent_id=intent.id, kind=kind, status=AttemptStatus.RECORDED,
        amount=amount, currency=intent.currency, stan=trace.stan, rrn=trace.rrn,
        transmitted=trace.transmitted, terminal_id=trace.terminal_id, created=now,
        updated=now, original_attempt_id=original.id if original is not None else "",
        refund_id=refund_id, request=sent)


def _next(intent: PaymentIntent, now: int, **changes: Any) -> PaymentIntent:
    return dataclasses.replace(intent, version=intent.version + 1, updated=now, **changes)


def _change(
    before: PaymentIntent, after: PaymentIntent, *, attempts: tuple[Attempt, ...] = (),
    refunds: tuple[Refund, ...] = (), events: tuple[Event, ...],
) -> Change:
    return Change(intent=after, expected_version=before.version, attempts=attempts,
                  refunds=refunds, events=events)
