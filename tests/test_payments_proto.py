"""The public contract `paygate.v1`: its generated stubs, its shape, and its conversions."""

from __future__ import annotations

import asyncio
import re

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st
from paygate.v1 import payments_pb2, payments_pb2_grpc, tokens_pb2, tokens_pb2_grpc

from gateway.payments import convert
from gateway.payments.model import (
    CaptureMethod,
    IntentStatus,
    PaymentError,
    PaymentIntent,
    Refund,
    RefundStatus,
)

INT64_MAX = 2**63 - 1
# 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z, the range Timestamp allows.
MS_MIN, MS_MAX = -62_135_596_800_000, 253_402_300_799_999

RPCS = {  # name: (request, response, server streaming)
    "CreatePaymentIntent": ("CreatePaymentIntentRequest", "PaymentIntent", False),
    "ConfirmPaymentIntent": ("ConfirmPaymentIntentRequest", "PaymentIntent", False),
    "CapturePaymentIntent": ("CapturePaymentIntentRequest", "PaymentIntent", False),
    "CancelPaymentIntent": ("CancelPaymentIntentRequest", "PaymentIntent", False),
    "GetPaymentIntent": ("GetPaymentIntentRequest", "PaymentIntent", False),
    "ListPaymentIntents": ("ListPaymentIntentsRequest", "ListPaymentIntentsResponse", False),
    "WatchPaymentIntent": ("WatchPaymentIntentRequest", "PaymentIntent", True),
    "CreateRefund": ("CreateRefundRequest", "Refund", False),
    "GetRefund": ("GetRefundRequest", "Refund", False),
}

# Field names and numbers are the wire promise to client teams: change them only on purpose.
FIELDS = {
    "PaymentIntent": {
        "id": 1, "merchant_id": 2, "amount": 3, "currency": 4, "status": 5,
        "capture_method": 6, "amount_capturable": 7, "amount_received": 8,
        "amount_refunded": 9, "last_payment_error": 10, "created": 11, "updated": 12,
        "payment_method": 13, "description": 14, "metadata": 15, "cancellation_reason": 16,
        "version": 17,
    },
    "PaymentError": {"code": 1, "decline_code": 2, "message": 3, "network_response_code": 4},
    "Refund": {
        "id": 1, "payment_intent": 2, "amount": 3, "currency": 4, "status": 5, "reason": 6,
        "created": 7, "updated": 8,
    },
    "CreatePaymentIntentRequest": {
        "merchant_id": 1, "amount": 2, "currency": 3, "capture_method": 4, "description": 5,
        "metadata": 6,
    },
    "ConfirmPaymentIntentRequest": {"id": 1, "payment_method": 2},
    "CapturePaymentIntentRequest": {"id": 1, "amount_to_capture": 2},
    "CancelPaymentIntentRequest": {"id": 1, "cancellation_reason": 2},
    "GetPaymentIntentRequest": {"id": 1},
    "ListPaymentIntentsRequest": {
        "merchant_id": 1, "status": 2, "created_gte": 3, "created_lt": 4, "limit": 5,
        "starting_after": 6,
    },
    "ListPaymentIntentsResponse": {"data": 1, "has_more": 2},
    "WatchPaymentIntentRequest": {"id": 1},
    "CreateRefundRequest": {"payment_intent": 1, "amount": 2, "reason": 3},
    "GetRefundRequest": {"id": 1},
}

MONEY_FIELDS = [
    ("PaymentIntent", "amount"), ("PaymentIntent", "amount_capturable"),
    ("PaymentIntent", "amount_received"), ("PaymentIntent", "amount_refunded"),
    ("Refund", "amount"), ("CreatePaymentIntentRequest", "amount"),
    ("CapturePaymentIntentRequest", "amount_to_capture"), ("CreateRefundRequest", "amount"),
]

utf8_text = st.text(st.characters(codec="utf-8"), max_size=30)
money = st.integers(0, INT64_MAX)
millis = st.integers(MS_MIN, MS_MAX)
payment_errors = st.builds(PaymentError, code=utf8_text, decline_code=utf8_text,
                           message=utf8_text, network_response_code=utf8_text)
intents = st.builds(
    PaymentIntent,
    id=utf8_text, merchant_id=utf8_text, amount=money, currency=utf8_text,
    capture_method=st.sampled_from(CaptureMethod), status=st.sampled_from(IntentStatus),
    created=millis, updated=millis, description=utf8_text,
    metadata=st.dictionaries(utf8_text, utf8_text, max_size=5),
    amount_capturable=money, amount_received=money, amount_refunded=money,
    payment_method=utf8_text, last_payment_error=st.none() | payment_errors,
    cancellation_reason=utf8_text, version=st.integers(1, INT64_MAX),
)
refunds = st.builds(
    Refund,
    id=utf8_text, intent_id=utf8_text, amount=money, currency=utf8_text,
    status=st.sampled_from(RefundStatus), created=millis, updated=millis, reason=utf8_text,
)


def _enums() -> list[EnumDescriptor]:
    return [*payments_pb2.DESCRIPTOR.enum_types_by_name.values(),
            *tokens_pb2.DESCRIPTOR.enum_types_by_name.values()]


def _message(name: str) -> Descriptor:
    descriptor: Descriptor = payments_pb2.DESCRIPTOR.message_types_by_name[name]
    return descriptor


def test_generated_stubs_import() -> None:
    """The installed distribution provides the messages and gRPC stubs of both services."""
    assert payments_pb2.DESCRIPTOR.package == "paygate.v1"
    assert payments_pb2.DESCRIPTOR.name == "paygate/v1/payments.proto"
    for name in ("PaymentsStub", "PaymentsServicer", "add_PaymentsServicer_to_server"):
        assert hasattr(payments_pb2_grpc, name), name
    for name in ("TokensStub", "TokensServicer", "add_TokensServicer_to_server"):
        assert hasattr(tokens_pb2_grpc, name), name
    token = tokens_pb2.CreateTokenRequest(merchant_id="m_1", encrypted_card="a.b.c.d.e")
    assert tokens_pb2.CreateTokenRequest.FromString(token.SerializeToString()) == token


def test_payments_service_has_exactly_the_nine_rpcs() -> None:
    """Service `Payments` has exactly the promised RPCs, types and streaming-ness."""
    methods = payments_pb2.DESCRIPTOR.services_by_name["Payments"].methods
    got = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in methods}
    assert got == RPCS
    assert not any(m.client_streaming for m in methods)


def test_tokens_service_has_create_token() -> None:
    """Service `Tokens` has the single unary CreateToken RPC returning a Token."""
    (method,) = tokens_pb2.DESCRIPTOR.services_by_name["Tokens"].methods
    assert (method.name, method.input_type.name, method.output_type.name) == (
        "CreateToken", "CreateTokenRequest", "Token")
    assert not method.client_streaming and not method.server_streaming


def test_message_fields_keep_their_names_and_numbers() -> None:
    """Every contract message has exactly its promised field names and numbers."""
    for message, fields in FIELDS.items():
        got = {f.name: f.number for f in _message(message).fields}
        assert got == fields, message


def test_enum_zero_values_are_unspecified_and_values_prefixed() -> None:
    """Each enum's zero value is `<ENUM>_UNSPECIFIED` and every value carries the prefix."""
    assert {e.name for e in _enums()} >= {"CaptureMethod", "PaymentIntentStatus", "RefundStatus"}
    for enum in _enums():
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
        assert enum.values_by_number[0].name == prefix + "UNSPECIFIED"
        assert all(v.name.startswith(prefix) for v in enum.values), enum.name
    names = set(payments_pb2.PaymentIntentStatus.keys())
    assert names == {"PAYMENT_INTENT_STATUS_" + s.name for s in IntentStatus} | {
        "PAYMENT_INTENT_STATUS_UNSPECIFIED"}
    assert set(payments_pb2.CaptureMethod.keys()) == {
        "CAPTURE_METHOD_UNSPECIFIED", "CAPTURE_METHOD_AUTOMATIC", "CAPTURE_METHOD_MANUAL"}


def test_money_fields_are_int64_and_times_are_timestamps() -> None:
    """Amounts are int64 and created/updated/created_* are google.protobuf.Timestamp."""
    for message, field in MONEY_FIELDS:
        assert _message(message).fields_by_name[field].type == FieldDescriptor.TYPE_INT64
    for message in ("PaymentIntent", "Refund", "ListPaymentIntentsRequest"):
        for f in _message(message).fields:
            if f.name.startswith(("created", "updated")):
                assert f.message_type.full_name == "google.protobuf.Timestamp", f.full_name


@given(intents)
def test_intent_round_trips_through_the_wire(intent: PaymentIntent) -> None:
    """Every model field of an intent survives to_proto, serialization and from_proto."""
    wire = convert.intent_to_proto(intent).SerializeToString(deterministic=True)
    assert convert.intent_from_proto(payments_pb2.PaymentIntent.FromString(wire)) == intent


@given(refunds)
def test_refund_round_trips_through_the_wire(refund: Refund) -> None:
    """Every public field of a refund survives the wire (attempt_id is internal, never sent)."""
    msg = convert.refund_to_proto(refund)
    assert msg.payment_intent == refund.intent_id
    back = convert.refund_from_proto(payments_pb2.Refund.FromString(msg.SerializeToString()))
    assert back == refund
    internal = Refund(**{**refund.__dict__, "attempt_id": "att_1"})
    assert convert.refund_to_proto(internal) == msg


def test_last_payment_error_presence_is_kept() -> None:
    """An intent without a payment error has the field unset, one with an error has it set."""
    base = PaymentIntent(id="pi_1", merchant_id="m_1", amount=1999, currency="eur",
                         capture_method=CaptureMethod.MANUAL,
                         status=IntentStatus.REQUIRES_PAYMENT_METHOD, created=1, updated=2)
    assert not convert.intent_to_proto(base).HasField("last_payment_error")
    failed = PaymentIntent(**{**base.__dict__, "last_payment_error": PaymentError("card_declined")})
    msg = convert.intent_to_proto(failed)
    assert msg.HasField("last_payment_error") and msg.last_payment_error.code == "card_declined"
    assert msg.status == payments_pb2.PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD
    assert msg.capture_method == payments_pb2.CAPTURE_METHOD_MANUAL


@given(millis)
def test_timestamps_are_exact_to_the_millisecond(ms: int) -> None:
    """ms -> Timestamp -> ms is the identity and the Timestamp is normalized."""
    ts = convert.ms_to_timestamp(ms)
    assert 0 <= ts.nanos < 1_000_000_000 and ts.nanos % 1_000_000 == 0
    assert ts.seconds * 1000 + ts.nanos // 1_000_000 == ms
    assert convert.timestamp_to_ms(ts) == ms


def test_timestamp_known_values() -> None:
    """Known instants convert as protobuf defines them, sub-millisecond parts floored."""
    ts = convert.ms_to_timestamp(1_700_000_000_123)
    assert (ts.seconds, ts.nanos) == (1_700_000_000, 123_000_000)
    assert ts.ToJsonString() == "2023-11-14T22:13:20.123Z"
    before_epoch = convert.ms_to_timestamp(-1)
    assert (before_epoch.seconds, before_epoch.nanos) == (-1, 999_000_000)
    fine = payments_pb2.PaymentIntent().created
    fine.FromJsonString("2023-11-14T22:13:20.123999999Z")
    assert convert.timestamp_to_ms(fine) == 1_700_000_000_123


def test_unspecified_and_unknown_enums_raise_invalid_enum() -> None:
    """UNSPECIFIED or unknown enum numbers raise InvalidEnum naming the field."""
    with pytest.raises(convert.InvalidEnum) as info:
        convert.capture_method_from_proto(payments_pb2.CAPTURE_METHOD_UNSPECIFIED)
    assert info.value.field == "capture_method" and isinstance(info.value, ValueError)
    with pytest.raises(convert.InvalidEnum):
        convert.status_from_proto(payments_pb2.PAYMENT_INTENT_STATUS_UNSPECIFIED)
    with pytest.raises(convert.InvalidEnum):
        convert.refund_status_from_proto(payments_pb2.REFUND_STATUS_UNSPECIFIED)
    with pytest.raises(convert.InvalidEnum) as info:
        convert.capture_method_from_proto(99, field="request.capture_method")
    assert info.value.field == "request.capture_method" and info.value.value == 99
    assert convert.status_filter_from_proto(payments_pb2.PAYMENT_INTENT_STATUS_UNSPECIFIED) is None
    assert (convert.status_filter_from_proto(payments_pb2.PAYMENT_INTENT_STATUS_SUCCEEDED)
            is IntentStatus.SUCCEEDED)
    msg = payments_pb2.PaymentIntent(capture_method=payments_pb2.CAPTURE_METHOD_AUTOMATIC)
    with pytest.raises(convert.InvalidEnum) as info:
        convert.intent_from_proto(msg)
    assert info.value.field == "status"


def test_rich_status_refuses_ok_and_unknown_codes() -> None:
    """rich_status takes only gRPC error code names."""
    for name in ("OK", "NOT_A_CODE", "not_found"):
        with pytest.raises(ValueError):
            convert.rich_status(name, "r", "m", {})
    status = convert.rich_status("FAILED_PRECONDITION", "intent_unexpected_state", "m", {})
    assert status.code is grpc.StatusCode.FAILED_PRECONDITION and status.details == "m"


def test_valid_timestamp_to_ms_takes_exactly_the_protobuf_range() -> None:
    """valid_timestamp_to_ms converts the first and last instants of the Timestamp range
    and raises InvalidTimestamp, naming the field, for anything beyond them."""
    first = Timestamp(seconds=-62_135_596_800)
    last = Timestamp(seconds=253_402_300_799, nanos=999_999_999)
    assert convert.valid_timestamp_to_ms(first, "created_gte") == MS_MIN
    assert convert.valid_timestamp_to_ms(last, "created_lt") == MS_MAX
    for seconds, nanos in ((-62_135_596_801, 0), (253_402_300_800, 0), (2**62, 0),
                           (INT64_MAX, 0), (-2**63, 0), (0, -1), (0, 1_000_000_000)):
        with pytest.raises(convert.InvalidTimestamp) as info:
            convert.valid_timestamp_to_ms(Timestamp(seconds=seconds, nanos=nanos), "created_lt")
        assert info.value.field == "created_lt" and isinstance(info.value, ValueError)


def test_rich_status_bounds_metadata_and_message() -> None:
    """rich_status cuts metadata keys and values to MAX_METADATA_CHARS and the message to
    MAX_MESSAGE_CHARS, marking the cut with an ellipsis; short texts are sent unchanged."""
    status = convert.rich_status("PERMISSION_DENIED", "merchant_forbidden", "m" * 100_000,
                                 {"merchant_id": "a" * 100_000, "k" * 200: "v", "ok": "x"})
    (trailer,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    rich = status_pb2.Status.FromString(trailer)
    info = error_details_pb2.ErrorInfo()
    assert rich.details[0].Unpack(info)
    limit = convert.MAX_METADATA_CHARS
    assert info.metadata["merchant_id"] == "a" * (limit - 1) + "\u2026"
    assert info.metadata["k" * (limit - 1) + "\u2026"] == "v"
    assert info.metadata["ok"] == "x"
    assert status.details == "m" * (convert.MAX_MESSAGE_CHARS - 1) + "\u2026"
    assert rich.message == status.details


class _AbortingPayments(payments_pb2_grpc.PaymentsServicer):
    """GetPaymentIntent aborts with a rich status; GetRefund with a plain one."""

    async def GetPaymentIntent(  # noqa: N802 (generated name)
            self, request: payments_pb2.GetPaymentIntentRequest,
            context: grpc.aio.ServicerContext) -> payments_pb2.PaymentIntent:
        await context.abort_with_status(convert.rich_status(
            "FAILED_PRECONDITION", "intent_unexpected_state",
            "the intent is canceled: ünsupported", {"id": request.id, "status": "canceled"}))
        raise AssertionError("abort_with_status returned")

    async def GetRefund(  # noqa: N802 (generated name)
            self, request: payments_pb2.GetRefundRequest,
            context: grpc.aio.ServicerContext) -> payments_pb2.Refund:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such refund")
        raise AssertionError("abort returned")


async def _call_aborting_server() -> tuple[grpc.aio.AioRpcError, grpc.aio.AioRpcError]:
    server = grpc.aio.server()
    # The generated *_pb2_grpc modules carry no annotations (protoc writes no .pyi for them).
    payments_pb2_grpc.add_PaymentsServicer_to_server(  # type: ignore[no-untyped-call]
        _AbortingPayments(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = payments_pb2_grpc.PaymentsStub(channel)  # type: ignore[no-untyped-call]
            errors = []
            for call, request in ((stub.GetPaymentIntent,
                                   payments_pb2.GetPaymentIntentRequest(id="pi_1")),
                                  (stub.GetRefund, payments_pb2.GetRefundRequest(id="re_1"))):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(request, timeout=10)
                errors.append(info.value)
            return errors[0], errors[1]
    finally:
        await server.stop(None)


def test_rich_status_reaches_the_client_through_grpc_aio() -> None:
    """A servicer aborting with rich_status gives the client its code, message and ErrorInfo."""
    rich, plain = asyncio.run(_call_aborting_server())
    assert rich.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert rich.details() == "the intent is canceled: ünsupported"
    info = convert.error_info_from(rich)
    assert info is not None
    assert (info.reason, info.domain) == ("intent_unexpected_state", "paygate.dev")
    assert dict(info.metadata) == {"id": "pi_1", "status": "canceled"}
    assert plain.code() is grpc.StatusCode.NOT_FOUND
    assert convert.error_info_from(plain) is None
