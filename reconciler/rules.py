"""The reconciler's rules: what an attempt whose outcome is unknown becomes. Pure: no I/O.

Unknown **authorization** (0100 without a reply):

* **Late replies.** A 0110 that arrives after the deadline is accepted if, and only
  if, no timeout reversal has been recorded for that authorization yet: then it is
  the authorization's outcome (``machine.authorization_outcome``) and the intent
  moves on as if the reply had been on time (capturable, or declined). Once a
  reversal is recorded, *the reversal wins*: a late reply changes nothing, the
  hold is released by the advice, and the intent ends back at
  ``requires_payment_method`` with ``last_payment_error.code = network_timeout``.
* **Reversal advice.** Otherwise the reconciler records a timeout reversal
  attempt (0420 on the first try, 0421 on repeats, each try its own attempt with
  its own STAN, recorded before it is sent) and sends it; when one is
  acknowledged (0430 with 39=00) the authorization becomes ``reversed`` and the
  intent ``requires_payment_method`` with ``network_timeout``. The network
  releases a hold once however many advices arrive, so repeats are safe.

Unknown **capture, void, release, refund**: the same message is sent again as a
repeat (0221, 0401, 0201: same STAN and field 7), whose answer is the original's
outcome at the network; that answer settles the original attempt through the state
machine's outcome functions. Each repeat is recorded (an event) before it is sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Final

from gateway.payments.declines import TIMEOUT
from gateway.payments.errors import DomainError
from gateway.payments.events import attempt_event, intent_event
from gateway.payments.machine import (
    Approved,
    Ids,
    Outcome,
    TraceFields,
    _change,
    _check_attempt,
    _new_attempt,
    _next,
    _settle,
)
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    Change,
    Event,
    IntentStatus,
    PaymentIntent,
    new_id,
)

#: The repeat MTI of each kind of follow-up whose reply was lost.
REPEAT_MTI: Final = {AttemptKind.CAPTURE: "0221", AttemptKind.VOID: "0401",
                     AttemptKind.RELEASE: "0401", AttemptKind.REFUND: "0201"}


def reversals_of(auth: Attempt, attempts: Iterable[Attempt]) -> list[Attempt]:
    """The timeout reversal tries recorded for ``auth``, oldest first."""
    return sorted((a for a in attempts if a.kind is AttemptKind.TIMEOUT_REVERSAL
                   and a.original_attempt_id == auth.id), key=lambda a: (a.created, a.id))


def late_reply_accepted(auth: Attempt, attempts: Iterable[Attempt]) -> bool:
    """Whether a late reply to ``auth`` is its outcome: only while it is ``unknown`` and no
    reversal has been recorded for it (after that, the reversal wins)."""
    return (auth.kind is AttemptKind.AUTHORIZATION and auth.status is AttemptStatus.UNKNOWN
            and not reversals_of(auth, attempts))


def needs_reversal(auth: Attempt, attempts: Iterable[Attempt]) -> bool:
    """An unknown authorization none of whose reversal tries has been acknowledged."""
    if auth.kind is not AttemptKind.AUTHORIZATION or auth.status is not AttemptStatus.UNKNOWN:
        return False
    return not any(r.status is AttemptStatus.APPROVED for r in reversals_of(auth, attempts))


def timeout_reversal(intent: PaymentIntent, auth: Attempt, trace: TraceFields, now: int,
                     ids: Ids = new_id) -> Change:
    """Record one reversal try (0420 / 0421) for the unknown authorization ``auth``."""
    if auth.intent_id != intent.id or auth.kind is not AttemptKind.AUTHORIZATION:
        raise ValueError("expected an authorization of this intent")
    if auth.status is not AttemptStatus.UNKNOWN:
        raise DomainError("FAILED_PRECONDITION", "attempt_already_final",
                          "only an unknown authorization is reversed",
                          {"attempt": auth.id, "status": auth.status.value})
    attempt = _new_attempt(intent, AttemptKind.TIMEOUT_REVERSAL, auth.amount, trace, now, ids,
                           None, original=auth)
    return _change(intent, _next(intent, now), attempts=(attempt,),
                   events=(attempt_event(attempt, now),))


def reversal_outcome(intent: PaymentIntent, auth: Attempt, reversal: Attempt,
                     outcome: Outcome, now: int, other_tries: Iterable[Attempt] = ()) -> Change:
    """Apply the 0430 (or its absence) to one reversal try.

    Acknowledged (00): the try ``approved``, the authorization ``reversed``, and the
    intent, if still ``processing``, back to ``requires_payment_method`` with
    ``network_timeout``; earlier tries of the same authorization still without an
    answer (``other_tries`` that are ``recorded`` or ``unknown``) become
    ``superseded``: the hold is released, nothing is left unknown. Otherwise the try
    is ``declined`` / ``unknown`` and another try will follow.
    """
    _check_attempt(intent, reversal, AttemptKind.TIMEOUT_REVERSAL, outcome)
    if reversal.original_attempt_id != auth.id:
        raise ValueError("the reversal belongs to another authorization")
    settled = _settle(reversal, outcome, now, partial_ok=False)
    if not isinstance(outcome, Approved):
        return _change(intent, _next(intent, now), attempts=(settled,),
                       events=(attempt_event(settled, now),))
    attempts: tuple[Attempt, ...] = (settled,)
    events: list[Event] = [attempt_event(settled, now)]
    for other in other_tries:
        if (other.id != reversal.id and other.kind is AttemptKind.TIMEOUT_REVERSAL
                and other.original_attempt_id == auth.id
                and other.status in (AttemptStatus.RECORDED, AttemptStatus.UNKNOWN)):
            moot = dataclasses.replace(other, status=AttemptStatus.SUPERSEDED, updated=now)
            attempts += (moot,)
            events.append(attempt_event(moot, now))
    if auth.status is AttemptStatus.UNKNOWN:
        reversed_auth = dataclasses.replace(auth, status=AttemptStatus.REVERSED, updated=now)
        attempts += (reversed_auth,)
        events.append(attempt_event(reversed_auth, now))
    if intent.status is IntentStatus.PROCESSING:
        new = _next(intent, now, status=IntentStatus.REQUIRES_PAYMENT_METHOD,
                    last_payment_error=TIMEOUT, amount_capturable=0)
        events.append(intent_event(new, now, "payment_intent.payment_failed"))
    else:
        new = _next(intent, now)
    return _change(intent, new, attempts=attempts, events=tuple(events))


def repeat_recorded(intent: PaymentIntent, attempt: Attempt, tries: int, now: int) -> Change:
    """Record that a repeat (0221 / 0401 / 0201) of the unknown ``attempt`` is about to be
    sent: an event only, so that every try is on file before it is on the wire."""
    if attempt.kind not in REPEAT_MTI or attempt.status is not AttemptStatus.UNKNOWN:
        raise ValueError("only an unknown capture, void, release or refund is repeated")
    event = Event(type="attempt.repeated", aggregate_type="attempt", aggregate_id=attempt.id,
                  payload={"intent_id": intent.id, "kind": attempt.kind.value,
                           "stan": attempt.stan, "try": tries,
                           "mti": REPEAT_MTI[attempt.kind]},
                  created=now)
    return _change(intent, _next(intent, now), events=(event,))


def repeat_message(attempt: Attempt) -> dict[str, str]:
    """The repeat of ``attempt``'s stored message: same fields, the repeat MTI."""
    if attempt.kind not in REPEAT_MTI or not attempt.request:
        raise ValueError("no stored message to repeat")
    return {**attempt.request, "t": REPEAT_MTI[attempt.kind]}
