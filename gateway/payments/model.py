"""The payment records: intents, attempts and refunds, as frozen dataclasses.

Pure data, no I/O. Amounts are ``int`` minor units with a lower-case ISO 4217
``currency``; times are ``int`` milliseconds since the epoch (UTC). See
``gateway/payments/DESIGN.md`` for the rules that move them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from hsm_sim.randompool import POOL

_CROCKFORD: Final = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str, random_bytes: bytes | None = None) -> str:
    """``prefix_`` + 24 Crockford base32 characters of 15 random bytes."""
    raw = random_bytes if random_bytes is not None else POOL.draw(15)
    if len(raw) != 15:
        raise ValueError("an id needs 15 random bytes")
    value = int.from_bytes(raw, "big")
    chars = [_CROCKFORD[(value >> (5 * i)) & 31] for i in range(23, -1, -1)]
    return f"{prefix}_{''.join(chars)}"


class IntentStatus(enum.StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    SUCCEEDED = "succeeded"
    CANCELED = "canceled"

    @property
    def terminal(self) -> bool:
        return self in (IntentStatus.SUCCEEDED, IntentStatus.CANCELED)


class CaptureMethod(enum.StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class AttemptKind(enum.StrEnum):
    AUTHORIZATION = "authorization"        # 0100
    CAPTURE = "capture"                    # 0220
    VOID = "void"                          # 0400 of the whole hold (cancel)
    RELEASE = "release"                    # 0400 of what a partial capture left held
    REFUND = "refund"                      # 0200, processing code 20
    TIMEOUT_REVERSAL = "timeout_reversal"  # 0420 / 0421


class AttemptStatus(enum.StrEnum):
    RECORDED = "recorded"
    APPROVED = "approved"
    DECLINED = "declined"
    UNKNOWN = "unknown"
    REVERSED = "reversed"
    SUPERSEDED = "superseded"   # a reversal try with no answer, made moot by an acknowledged one


class RefundStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class PaymentError:
    """Why the last attempt did not go through (a decline is data, not an RPC error)."""

    code: str                       # e.g. card_declined, network_timeout, processing_error
    decline_code: str = ""          # e.g. insufficient_funds, generic_decline
    message: str = ""
    network_response_code: str = ""  # field 39 as the network sent it


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    merchant_id: str
    amount: int
    currency: str
    capture_method: CaptureMethod
    status: IntentStatus
    created: int
    updated: int
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    amount_capturable: int = 0
    amount_received: int = 0
    amount_refunded: int = 0
    payment_method: str = ""
    last_payment_error: PaymentError | None = None
    cancellation_reason: str = ""
    version: int = 1


@dataclass(frozen=True)
class Attempt:
    """One network exchange, recorded before it is sent."""

    id: str
    intent_id: str
    kind: AttemptKind
    status: AttemptStatus
    amount: int
    currency: str
    stan: str
    rrn: str
    transmitted: str               # field 7, MMDDhhmmss UTC
    terminal_id: str
    created: int
    updated: int
    approved_amount: int = 0
    response_code: str = ""
    approval_code: str = ""
    original_attempt_id: str = ""  # the authorization, for capture/void/refund/reversal
    refund_id: str = ""
    request: dict[str, str] = field(default_factory=dict)  # sent fields minus card data


@dataclass(frozen=True)
class Refund:
    id: str
    intent_id: str
    amount: int
    currency: str
    status: RefundStatus
    created: int
    updated: int
    reason: str = ""
    attempt_id: str = ""


@dataclass(frozen=True)
class Event:
    """One outbox row before it is numbered and chained by the store."""

    type: str
    aggregate_type: str            # payment_intent | attempt | refund
    aggregate_id: str
    payload: dict[str, object]
    created: int


@dataclass(frozen=True)
class Change:
    """What one decision of the state machine asks the store to write, atomically.

    ``intent`` is the intent's new state; ``expected_version`` the version the
    decision was made on (``None`` for a new intent): the store refuses the
    change if the stored version differs. Attempts and refunds are upserted by
    id; events are appended (numbered and hash-chained by the store).
    """

    intent: PaymentIntent
    expected_version: int | None
    attempts: tuple[Attempt, ...] = ()
    refunds: tuple[Refund, ...] = ()
    events: tuple[Event, ...] = ()
