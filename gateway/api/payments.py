"""The ``paygate.v1.Payments`` servicer: thin. It checks the caller may act for the
merchant, runs mutating calls through the idempotency layer, converts messages, and
hands everything else to :class:`gateway.payments.service.PaymentService`.

Refusals are raised as :class:`DomainError` and become gRPC statuses with an
``ErrorInfo`` in the API interceptor. Intents and refunds of merchants the caller
may not act for are NOT_FOUND (their existence is not revealed); creating or
listing for such a merchant is PERMISSION_DENIED.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from paygate.v1 import payments_pb2, payments_pb2_grpc

from gateway.api.context import authorize_merchant, current_caller
from gateway.api.identity import merchant_allowed
from gateway.payments import convert
from gateway.payments.convert import InvalidEnum, InvalidTimestamp
from gateway.payments.errors import DomainError
from gateway.payments.model import PaymentIntent
from gateway.payments.replay import IdempotentCalls, ReplayedRefusal, created_id
from gateway.payments.service import PaymentService
from gateway.payments.store import InvalidCursor, PaymentStore

IDEMPOTENCY_KEY = "idempotency-key"
MAX_LIST = 100
M = TypeVar("M")


def _idempotency_key(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == IDEMPOTENCY_KEY:
            return str(value)
    return None


log = structlog.get_logger("gateway.api.payments")

def _invalid_enum(exc: InvalidEnum) -> DomainError:
    return DomainError("INVALID_ARGUMENT", f"{exc.field}_invalid",
                       f"{exc.field} must be set to one of the enum's values")


class PaymentsServicer(payments_pb2_grpc.PaymentsServicer):
    """gRPC in, domain calls out."""

    def __init__(self, service: PaymentService, store: PaymentStore) -> None:
        self._service = service
        self._store = store
        self._idempotent = IdempotentCalls(store)

    async def drain(self, timeout: float) -> None:
        """On shutdown, after the server stopped taking calls: let the mutating calls
        still running (their callers may have gone) finish, up to ``timeout`` seconds."""
        left = await self._idempotent.drain(timeout)
        if left:
            log.warning("payments_calls_still_running_at_shutdown", calls=left)

    async def _visible(self, intent_id: str) -> PaymentIntent:
        """The intent, if the caller may act for its merchant; else NOT_FOUND."""
        intent = await self._store.get_intent(intent_id) if intent_id else None
        if intent is None or not merchant_allowed(current_caller().merchants, intent.merchant_id):
            raise DomainError("NOT_FOUND", "payment_intent_not_found",
                              "no such payment intent", {"id": intent_id[:64]})
        return intent

    async def _mutate(self, method: str, request: Any, context: grpc.aio.ServicerContext,
                      response_type: type[M], run: Callable[[], Awaitable[M]]) -> M:
        async def call() -> bytes:
            message = await run()
            data: bytes = message.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
            return data
        try:
            raw = await self._idempotent.run(
                current_caller().identity, _idempotency_key(context), method,
                request.SerializeToString(deterministic=True), call)
        except ReplayedRefusal as refusal:
            await context.abort_with_status(refusal.status)
            raise AssertionError("unreachable") from None  # abort_with_status raises
        result: M = response_type.FromString(raw)  # type: ignore[attr-defined]
        return result

    # -- mutating RPCs ----------------------------------------------------------------
    async def CreatePaymentIntent(self, request: payments_pb2.CreatePaymentIntentRequest,
                                  context: grpc.aio.ServicerContext) -> payments_pb2.PaymentIntent:
        authorize_merchant(request.merchant_id)
        try:
            method = convert.capture_method_from_proto(request.capture_method)
        except InvalidEnum as exc:
            raise _invalid_enum(exc) from None

        async def run() -> payments_pb2.PaymentIntent:
            intent = await self._service.create_intent(
                request.merchant_id, request.amount, request.currency, method,
                request.description, dict(request.metadata), intent_id=created_id())
            return convert.intent_to_proto(intent)
        return await self._mutate("CreatePaymentIntent", request, context,
                                  payments_pb2.PaymentIntent, run)

    async def ConfirmPaymentIntent(self, request: payments_pb2.ConfirmPaymentIntentRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> payments_pb2.PaymentIntent:
        async def run() -> payments_pb2.PaymentIntent:
            intent = await self._visible(request.id)
            return convert.intent_to_proto(await self._service.confirm(
                intent.merchant_id, intent.id, request.payment_method))
        return await self._mutate("ConfirmPaymentIntent", request, context,
                                  payments_pb2.PaymentIntent, run)

    async def CapturePaymentIntent(self, request: payments_pb2.CapturePaymentIntentRequest,
                                   context: grpc.aio.ServicerContext
                                   ) -> payments_pb2.PaymentIntent:
        async def run() -> payments_pb2.PaymentIntent:
            intent = await self._visible(request.id)
            return convert.intent_to_proto(await self._service.capture(
                intent.merchant_id, intent.id, request.amount_to_capture))
        return await self._mutate("CapturePaymentIntent", request, context,
                                  payments_pb2.PaymentIntent, run)

    async def CancelPaymentIntent(self, request: payments_pb2.CancelPaymentIntentRequest,
                                  context: grpc.aio.ServicerContext
                                  ) -> payments_pb2.PaymentIntent:
        async def run() -> payments_pb2.PaymentIntent:
            intent = await self._visible(request.id)
            return convert.intent_to_proto(await self._service.cancel(
                intent.merchant_id, intent.id, request.cancellation_reason))
        return await self._mutate("CancelPaymentIntent", request, context,
                                  payments_pb2.PaymentIntent, run)

    async def CreateRefund(self, request: payments_pb2.CreateRefundRequest,
                           context: grpc.aio.ServicerContext) -> payments_pb2.Refund:
        async def run() -> payments_pb2.Refund:
            intent = await self._visible(request.payment_intent)
            return convert.refund_to_proto(await self._service.create_refund(
                intent.merchant_id, intent.id, request.amount, request.reason))
        return await self._mutate("CreateRefund", request, context, payments_pb2.Refund, run)

    # -- queries ----------------------------------------------------------------------
    async def GetPaymentIntent(self, request: payments_pb2.GetPaymentIntentRequest,
                               context: grpc.aio.ServicerContext) -> payments_pb2.PaymentIntent:
        return convert.intent_to_proto(await self._visible(request.id))

    async def ListPaymentIntents(self, request: payments_pb2.ListPaymentIntentsRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> payments_pb2.ListPaymentIntentsResponse:
        authorize_merchant(request.merchant_id)
        if not 0 <= request.limit <= MAX_LIST:
            raise DomainError("INVALID_ARGUMENT", "limit_invalid",
                              f"limit must be 0 (default 20) to {MAX_LIST}")
        try:
            status = convert.status_filter_from_proto(request.status)
        except InvalidEnum as exc:
            raise _invalid_enum(exc) from None
        try:
            gte = (convert.valid_timestamp_to_ms(request.created_gte, "created_gte")
                   if request.HasField("created_gte") else None)
            lt = (convert.valid_timestamp_to_ms(request.created_lt, "created_lt")
                  if request.HasField("created_lt") else None)
        except InvalidTimestamp as exc:
            raise DomainError("INVALID_ARGUMENT", f"{exc.field}_invalid",
                              f"{exc.field} must lie between 0001-01-01T00:00:00Z and "
                              "9999-12-31T23:59:59.999999999Z") from None
        if gte is not None and lt is not None and gte >= lt:
            raise DomainError("INVALID_ARGUMENT", "created_range_invalid",
                              "created_gte must be before created_lt")
        try:
            items, has_more = await self._service.list_intents(
                request.merchant_id, status=status, created_gte=gte, created_lt=lt,
                limit=request.limit or 20, after=request.starting_after or None)
        except InvalidCursor:
            raise DomainError("INVALID_ARGUMENT", "starting_after_invalid",
                              "starting_after names no payment intent of this merchant"
                              ) from None
        return payments_pb2.ListPaymentIntentsResponse(
            data=[convert.intent_to_proto(i) for i in items], has_more=has_more)

    async def WatchPaymentIntent(self, request: payments_pb2.WatchPaymentIntentRequest,
                                 context: grpc.aio.ServicerContext
                                 ) -> AsyncIterator[payments_pb2.PaymentIntent]:
        intent = await self._visible(request.id)
        async for state in self._service.watch(intent.merchant_id, intent.id):
            yield convert.intent_to_proto(state)

    async def GetRefund(self, request: payments_pb2.GetRefundRequest,
                        context: grpc.aio.ServicerContext) -> payments_pb2.Refund:
        record = await self._store.get_refund(request.id) if request.id else None
        if record is not None:
            intent = await self._store.get_intent(record.intent_id)
            merchants = current_caller().merchants
            if intent is not None and merchant_allowed(merchants, intent.merchant_id):
                return convert.refund_to_proto(record)
        raise DomainError("NOT_FOUND", "refund_not_found", "no such refund",
                          {"id": request.id[:64]})
