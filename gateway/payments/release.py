"""Releasing what a partial capture left on hold. Pure: no I/O.

A capture for less than the authorized amount makes the intent ``succeeded``
with ``amount_received`` = what was captured; the rest of the hold must go back
to the cardholder. That is a second network exchange (a 0400 for exactly the
uncaptured remainder), recorded before it is sent like every other, whose
outcome never changes the intent's status (``succeeded`` is terminal): it only
settles the release attempt. A release that fails or stays unknown is the
reconciler's to repeat.
"""

from __future__ import annotations

from gateway.payments.events import attempt_event
from gateway.payments.machine import (
    Ids,
    Outcome,
    TraceFields,
    _change,
    _check_attempt,
    _check_authorization,
    _new_attempt,
    _next,
    _require,
    _settle,
)
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    Change,
    IntentStatus,
    PaymentIntent,
    new_id,
)


def remainder(intent: PaymentIntent, authorization: Attempt) -> int:
    """What of the hold was neither captured nor released yet (0 when nothing is left)."""
    if intent.status is not IntentStatus.SUCCEEDED:
        return 0
    return max(authorization.approved_amount - intent.amount_received, 0)


def release(intent: PaymentIntent, authorization: Attempt, trace: TraceFields, now: int,
            ids: Ids = new_id) -> Change | None:
    """Record a release (0400) of the uncaptured remainder of a ``succeeded`` intent's
    hold, or ``None`` when the whole hold was captured."""
    _require(intent, IntentStatus.SUCCEEDED)
    _check_authorization(intent, authorization)
    rest = remainder(intent, authorization)
    if rest == 0:
        return None
    attempt = _new_attempt(intent, AttemptKind.RELEASE, rest, trace, now, ids, None,
                           original=authorization)
    return _change(intent, _next(intent, now), attempts=(attempt,),
                   events=(attempt_event(attempt, now),))


def release_outcome(intent: PaymentIntent, attempt: Attempt, outcome: Outcome,
                    now: int) -> Change:
    """Settle a release attempt; the intent keeps its status and amounts."""
    _check_attempt(intent, attempt, AttemptKind.RELEASE, outcome)
    settled = _settle(attempt, outcome, now, partial_ok=False)
    return _change(intent, _next(intent, now), attempts=(settled,),
                   events=(attempt_event(settled, now),))
