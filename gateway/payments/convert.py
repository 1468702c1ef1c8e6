"""Conversions between the payment records (``model.py``) and the ``paygate.v1`` messages.

Pure functions, no I/O. Milliseconds since the epoch become
``google.protobuf.Timestamp`` and back exactly (a caller's timestamp outside the
protobuf range is refused with :class:`InvalidTimestamp`); model enums map one to one on the
prefixed protobuf enums, whose ``*_UNSPECIFIED`` zero value is refused with
:class:`InvalidEnum` (the service answers INVALID_ARGUMENT). Errors travel as a
``google.rpc.Status`` with one ``ErrorInfo`` detail: :func:`rich_status` builds
it for ``await context.abort_with_status(...)``; :func:`error_info_from` reads it
back from a failed call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from paygate.v1 import payments_pb2

from gateway.payments.model import (
    CaptureMethod,
    IntentStatus,
    PaymentError,
    PaymentIntent,
    Refund,
    RefundStatus,
)

#: ``ErrorInfo.domain`` of every error paygate returns.
ERROR_DOMAIN: Final = "paygate.dev"
#: The longest ``ErrorInfo`` metadata key or value :func:`rich_status` sends (characters,
#: the ellipsis included): metadata may echo caller input, and the status travels in the
#: trailers, which a client refuses beyond its metadata size limit.
MAX_METADATA_CHARS: Final = 128
#: The longest status message :func:`rich_status` sends (characters, ellipsis included).
MAX_MESSAGE_CHARS: Final = 512
#: What replaces the cut-off end of a bounded text.
ELLIPSIS: Final = "\u2026"
#: The range of ``google.protobuf.Timestamp.seconds``: 0001-01-01T00:00:00Z to
#: 9999-12-31T23:59:59Z (``nanos`` is 0 to 999,999,999).
TIMESTAMP_MIN_SECONDS: Final = -62_135_596_800
TIMESTAMP_MAX_SECONDS: Final = 253_402_300_799

_CAPTURE_METHODS: Final[dict[CaptureMethod, payments_pb2.CaptureMethod]] = {
    CaptureMethod.AUTOMATIC: payments_pb2.CAPTURE_METHOD_AUTOMATIC,
    CaptureMethod.MANUAL: payments_pb2.CAPTURE_METHOD_MANUAL,
}
_INTENT_STATUSES: Final[dict[IntentStatus, payments_pb2.PaymentIntentStatus]] = {
    IntentStatus.REQUIRES_PAYMENT_METHOD:
        payments_pb2.PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD,
    IntentStatus.PROCESSING: payments_pb2.PAYMENT_INTENT_STATUS_PROCESSING,
    IntentStatus.REQUIRES_CAPTURE: payments_pb2.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE,
    IntentStatus.SUCCEEDED: payments_pb2.PAYMENT_INTENT_STATUS_SUCCEEDED,
    IntentStatus.CANCELED: payments_pb2.PAYMENT_INTENT_STATUS_CANCELED,
}
_REFUND_STATUSES: Final[dict[RefundStatus, payments_pb2.RefundStatus]] = {
    RefundStatus.PENDING: payments_pb2.REFUND_STATUS_PENDING,
    RefundStatus.SUCCEEDED: payments_pb2.REFUND_STATUS_SUCCEEDED,
    RefundStatus.FAILED: payments_pb2.REFUND_STATUS_FAILED,
}
_CAPTURE_METHODS_BACK: Final[dict[int, CaptureMethod]] = {
    int(v): k for k, v in _CAPTURE_METHODS.items()}
_INTENT_STATUSES_BACK: Final[dict[int, IntentStatus]] = {
    int(v): k for k, v in _INTENT_STATUSES.items()}
_REFUND_STATUSES_BACK: Final[dict[int, RefundStatus]] = {
    int(v): k for k, v in _REFUND_STATUSES.items()}


class InvalidEnum(ValueError):
    """A protobuf enum field is UNSPECIFIED or holds a value this version does not know."""

    def __init__(self, field: str, value: int) -> None:
        super().__init__(f"{field}: unsupported enum value {value}")
        self.field = field
        self.value = value


class InvalidTimestamp(ValueError):
    """A ``Timestamp`` field outside the protobuf range (seconds from 0001-01-01T00:00:00Z
    to 9999-12-31T23:59:59Z, nanos 0 to 999,999,999)."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: timestamp out of range")
        self.field = field


# -- times ---------------------------------------------------------------------------------


def ms_to_timestamp(ms: int) -> Timestamp:
    """A ``Timestamp`` for ``ms`` milliseconds since the epoch (exact, negatives too)."""
    seconds, millis = divmod(ms, 1000)
    return Timestamp(seconds=seconds, nanos=millis * 1_000_000)


def timestamp_to_ms(ts: Timestamp) -> int:
    """Milliseconds since the epoch of ``ts``; a sub-millisecond part is dropped (floor)."""
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


def valid_timestamp_to_ms(ts: Timestamp, field: str) -> int:
    """Like :func:`timestamp_to_ms` for a caller's ``field``; :class:`InvalidTimestamp`
    when ``ts`` lies outside the protobuf Timestamp range."""
    if not (TIMESTAMP_MIN_SECONDS <= ts.seconds <= TIMESTAMP_MAX_SECONDS
            and 0 <= ts.nanos <= 999_999_999):
        raise InvalidTimestamp(field)
    return timestamp_to_ms(ts)


# -- enums ---------------------------------------------------------------------------------


def capture_method_to_proto(method: CaptureMethod) -> payments_pb2.CaptureMethod:
    return _CAPTURE_METHODS[method]


def capture_method_from_proto(value: int, field: str = "capture_method") -> CaptureMethod:
    """The model's capture method; :class:`InvalidEnum` for UNSPECIFIED or unknown values."""
    try:
        return _CAPTURE_METHODS_BACK[value]
    except KeyError:
        raise InvalidEnum(field, value) from None


def status_to_proto(status: IntentStatus) -> payments_pb2.PaymentIntentStatus:
    return _INTENT_STATUSES[status]


def status_from_proto(value: int, field: str = "status") -> IntentStatus:
    """The model's intent status; :class:`InvalidEnum` for UNSPECIFIED or unknown values."""
    try:
        return _INTENT_STATUSES_BACK[value]
    except KeyError:
        raise InvalidEnum(field, value) from None


def status_filter_from_proto(value: int, field: str = "status") -> IntentStatus | None:
    """A ListPaymentIntents status filter: ``None`` (any status) for UNSPECIFIED."""
    if value == payments_pb2.PAYMENT_INTENT_STATUS_UNSPECIFIED:
        return None
    return status_from_proto(value, field)


def refund_status_to_proto(status: RefundStatus) -> payments_pb2.RefundStatus:
    return _REFUND_STATUSES[status]


def refund_status_from_proto(value: int, field: str = "status") -> RefundStatus:
    """The model's refund status; :class:`InvalidEnum` for UNSPECIFIED or unknown values."""
    try:
        return _REFUND_STATUSES_BACK[value]
    except KeyError:
        raise InvalidEnum(field, value) from None


# -- records -------------------------------------------------------------------------------


def payment_error_to_proto(error: PaymentError) -> payments_pb2.PaymentError:
    return payments_pb2.PaymentError(
        code=error.code,
        decline_code=error.decline_code,
        message=error.message,
        network_response_code=error.network_response_code,
    )


def payment_error_from_proto(msg: payments_pb2.PaymentError) -> PaymentError:
    return PaymentError(
        code=msg.code,
        decline_code=msg.decline_code,
        message=msg.message,
        network_response_code=msg.network_response_code,
    )


def intent_to_proto(intent: PaymentIntent) -> payments_pb2.PaymentIntent:
    """The public view of an intent (every model field has its protobuf field)."""
    msg = payments_pb2.PaymentIntent(
        id=intent.id,
        merchant_id=intent.merchant_id,
        amount=intent.amount,
        currency=intent.currency,
        status=status_to_proto(intent.status),
        capture_method=capture_method_to_proto(intent.capture_method),
        amount_capturable=intent.amount_capturable,
        amount_received=intent.amount_received,
        amount_refunded=intent.amount_refunded,
        created=ms_to_timestamp(intent.created),
        updated=ms_to_timestamp(intent.updated),
        payment_method=intent.payment_method,
        description=intent.description,
        metadata=intent.metadata,
        cancellation_reason=intent.cancellation_reason,
        version=intent.version,
    )
    if intent.last_payment_error is not None:
        msg.last_payment_error.CopyFrom(payment_error_to_proto(intent.last_payment_error))
    return msg


def intent_from_proto(msg: payments_pb2.PaymentIntent) -> PaymentIntent:
    """The model intent of a message (:class:`InvalidEnum` on an UNSPECIFIED enum)."""
    return PaymentIntent(
        id=msg.id,
        merchant_id=msg.merchant_id,
        amount=msg.amount,
        currency=msg.currency,
        capture_method=capture_method_from_proto(msg.capture_method),
        status=status_from_proto(msg.status),
        created=timestamp_to_ms(msg.created),
        updated=timestamp_to_ms(msg.updated),
        description=msg.description,
        metadata=dict(msg.metadata),
        amount_capturable=msg.amount_capturable,
        amount_received=msg.amount_received,
        amount_refunded=msg.amount_refunded,
        payment_method=msg.payment_method,
        last_payment_error=(payment_error_from_proto(msg.last_payment_error)
                            if msg.HasField("last_payment_error") else None),
        cancellation_reason=msg.cancellation_reason,
        version=msg.version,
    )


def refund_to_proto(refund: Refund) -> payments_pb2.Refund:
    """The public view of a refund (``attempt_id`` is internal and not exposed)."""
    return payments_pb2.Refund(
        id=refund.id,
        payment_intent=refund.intent_id,
        amount=refund.amount,
        currency=refund.currency,
        status=refund_status_to_proto(refund.status),
        reason=refund.reason,
        created=ms_to_timestamp(refund.created),
        updated=ms_to_timestamp(refund.updated),
    )


def refund_from_proto(msg: payments_pb2.Refund) -> Refund:
    """The model refund of a message; ``attempt_id`` is left empty (not in the contract)."""
    return Refund(
        id=msg.id,
        intent_id=msg.payment_intent,
        amount=msg.amount,
        currency=msg.currency,
        status=refund_status_from_proto(msg.status),
        created=timestamp_to_ms(msg.created),
        updated=timestamp_to_ms(msg.updated),
        reason=msg.reason,
    )


# -- rich errors ---------------------------------------------------------------------------


def bounded(text: str, limit: int) -> str:
    """``text``, or its first ``limit - 1`` characters and :data:`ELLIPSIS` if longer."""
    return text if len(text) <= limit else text[:limit - 1] + ELLIPSIS


def rich_status(code_name: str, reason: str, message: str,
                metadata: Mapping[str, str] | None = None) -> grpc.Status:
    """A ``grpc.Status`` carrying ``google.rpc.Status`` + ``ErrorInfo(reason, paygate.dev)``.

    ``code_name`` is a gRPC code name such as ``"FAILED_PRECONDITION"`` (a
    ``DomainError.status``); ``OK`` and unknown names raise ``ValueError``. Use it as
    ``await context.abort_with_status(rich_status(...))`` in a grpc.aio servicer.
    Metadata keys and values longer than :data:`MAX_METADATA_CHARS`, and a message longer
    than :data:`MAX_MESSAGE_CHARS`, are cut to that length (ending in :data:`ELLIPSIS`).
    """
    code = grpc.StatusCode.__members__.get(code_name)
    if code is None or code is grpc.StatusCode.OK:
        raise ValueError(f"not a gRPC error code name: {code_name!r}")
    info = error_details_pb2.ErrorInfo(
        reason=reason, domain=ERROR_DOMAIN,
        metadata={bounded(k, MAX_METADATA_CHARS): bounded(v, MAX_METADATA_CHARS)
                  for k, v in (metadata or {}).items()})
    status = status_pb2.Status(code=code.value[0], message=bounded(message, MAX_MESSAGE_CHARS))
    status.details.add().Pack(info)
    return rpc_status.to_status(status)


def error_info_from(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``ErrorInfo`` detail of a failed call (sync or grpc.aio), or ``None``.

    ``None`` also when the trailer is absent or inconsistent with the call's own
    code and message (e.g. rewritten by a proxy).
    """
    try:
        status = rpc_status.from_call(exc)
    except ValueError:
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
