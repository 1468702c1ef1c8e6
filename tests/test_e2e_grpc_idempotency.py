"""End to end over mutual TLS (setup: tests/e2e_gateway.py): declines as data,
idempotency keys (exact replays, reuse, scope, fifty concurrent confirms with one key),
a lost response, one payment from the HTTP edge to a refund, health and reflection. The
lost-response test starts a stack of its own with a short network deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc_stack
import pytest
from e2e_gateway import (
    APPROVE,
    DECLINE,
    LOST,
    PROCESSING,
    REQUIRES_CAPTURE,
    RPM,
    SUCCEEDED,
    TERMINAL,
    Code,
    Gateway,
    create_request,
    details_trailer,
    refused,
    running_gateway,
)
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from grpc_stack import TIMEOUT
from paygate.v1 import payments_pb2 as pb

from gateway.cards import Card
from gateway.payments.convert import error_info_from
from gateway.payments.model import AttemptStatus
from gateway.stack import Stack


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from running_gateway(tmp_path_factory)


# -- declines, idempotency, lost responses -----------------------------------------------


def test_a_decline_is_data_not_an_error(gw: Gateway) -> None:
    """A declined card answers OK with the intent REQUIRES_PAYMENT_METHOD and
    last_payment_error card_declined / generic_decline / 05; a good card then succeeds."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request(1200))
            declined = await api.confirm(intent.id, await gw.token(DECLINE))
            retried = await api.confirm(intent.id, await gw.token(APPROVE))
        assert declined.status == RPM and declined.amount_capturable == 0
        error = declined.last_payment_error
        assert (error.code, error.decline_code, error.network_response_code) == \
            ("card_declined", "generic_decline", "05")
        assert retried.status == REQUIRES_CAPTURE and not retried.HasField("last_payment_error")
    asyncio.run(main())


def test_same_key_same_request_replays_the_exact_response(gw: Gateway) -> None:
    """Create and Confirm sent twice with one key answer byte-identical responses, one
    intent is created and one authorization goes on the wire."""
    async def main() -> None:
        async with gw.client() as api:
            key = f"create-{time.time_ns()}"
            request = create_request(4321)
            created = [await api.raw("CreatePaymentIntent", request, key) for _ in range(2)]
            intent = pb.PaymentIntent.FromString(created[0])
            confirm = pb.ConfirmPaymentIntentRequest(id=intent.id,
                                                     payment_method=await gw.token())
            before = len(gw.ledger.authorizations())
            confirmed = [await api.raw("ConfirmPaymentIntent", confirm, f"confirm-{key}")
                         for _ in range(2)]
            current = await api.get(intent.id)
        assert created[0] == created[1] and intent.status == RPM
        assert confirmed[0] == confirmed[1]
        assert pb.PaymentIntent.FromString(confirmed[0]) == current
        assert current.status == REQUIRES_CAPTURE
        assert len(gw.ledger.authorizations()) == before + 1
        assert len(await gw.attempts(intent.id)) == 1
    asyncio.run(main())


def test_same_key_other_request_is_reused(gw: Gateway) -> None:
    """A key sent again with other parameters is INVALID_ARGUMENT idempotency_key_reused
    (another method counts as other parameters); the first result stands."""
    async def main() -> None:
        async with gw.client() as api:
            key = f"reuse-{time.time_ns()}"
            first = await api.create(create_request(100), key=key)
            await refused(api.create(create_request(101), key=key), Code.INVALID_ARGUMENT,
                          "idempotency_key_reused")
            await refused(api.cancel(first.id, key=key), Code.INVALID_ARGUMENT,
                          "idempotency_key_reused")
            assert (await api.get(first.id)).status == RPM
    asyncio.run(main())


def test_keys_are_scoped_to_the_caller_identity(gw: Gateway) -> None:
    """Two identities using the same key get two independent intents."""
    async def main() -> None:
        key = f"shared-{time.time_ns()}"
        async with gw.client() as acme, gw.client("globex-service") as globex:
            one = await acme.create(create_request(merchant="acme"), key=key)
            two = await globex.create(create_request(merchant="globex"), key=key)
        assert one.id != two.id and (one.merchant_id, two.merchant_id) == ("acme", "globex")
    asyncio.run(main())


def test_fifty_concurrent_confirms_with_one_key(gw: Gateway) -> None:
    """Fifty ConfirmPaymentIntent calls with one key sent at once: one 0100 reaches
    netsim and every caller ends with the byte-identical answer. Calls that arrive while
    the first is still running are ABORTED idempotency_key_in_use (as the contract says);
    they are retried, as a client would, until they get the stored answer."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request(3300))
            token = await gw.token()
            key = f"fifty-{intent.id}"
            request = pb.ConfirmPaymentIntentRequest(id=intent.id, payment_method=token)
            before = len(gw.ledger.authorizations())

            async def once() -> bytes | grpc.aio.AioRpcError:
                try:
                    return await api.raw("ConfirmPaymentIntent", request, key)
                except grpc.aio.AioRpcError as error:
                    assert error.code() == Code.ABORTED, (error.code(), error.details())
                    info = error_info_from(error)
                    assert info is not None and info.reason == "idempotency_key_in_use"
                    return error

            async def until_answered(first: bytes | grpc.aio.AioRpcError) -> bytes:
                result = first
                for _ in range(3000):
                    if isinstance(result, bytes):
                        return result
                    await asyncio.sleep(0.01)
                    result = await once()
                raise AssertionError("the key stayed in use")

            first_round = await asyncio.gather(*(once() for _ in range(50)))
            answers = await asyncio.gather(*(until_answered(r) for r in first_round))
        assert any(isinstance(r, bytes) for r in first_round)
        assert len(answers) == 50 and len(set(answers)) == 1
        confirmed = pb.PaymentIntent.FromString(answers[0])
        assert confirmed.status == REQUIRES_CAPTURE and confirmed.amount_capturable == 3300
        (attempt,) = await gw.attempts(intent.id)
        new = gw.ledger.authorizations()[before:]
        assert [a.stan for a in new] == [attempt.stan]
    asyncio.run(main())


def test_a_refusal_with_a_key_is_replayed(gw: Gateway) -> None:
    """A refused call with a key is answered the same refusal on retry (code, message and
    details byte for byte), even after the state changed so that a new call would pass."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request(2000))
            key = f"refusal-{intent.id}"
            early = await refused(api.capture(intent.id, key=key), Code.FAILED_PRECONDITION,
                                  "intent_unexpected_state")
            await api.confirm(intent.id, await gw.token())
            again = await refused(api.capture(intent.id, key=key), Code.FAILED_PRECONDITION,
                                  "intent_unexpected_state")
            too_large = [await refused(api.capture(intent.id, 2001, key=f"big-{key}"),
                                       Code.INVALID_ARGUMENT, "amount_too_large")
                         for _ in range(2)]
            still = await api.get(intent.id)
        assert again.details() == early.details()
        assert details_trailer(again) == details_trailer(early)
        assert too_large[0].details() == too_large[1].details()
        assert details_trailer(too_large[0]) == details_trailer(too_large[1])
        assert still.status == REQUIRES_CAPTURE
    asyncio.run(main())


def test_a_lost_response_answers_processing(tmp_path: Path) -> None:
    """When netsim's reply never comes, Confirm answers OK with the intent PROCESSING
    (never an error) and the attempt is unknown in the store, while netsim approved it."""
    config = grpc_stack.stack_config(tmp_path / "lost", network_deadline_seconds="0.5")

    async def main() -> None:
        async with Stack(config) as stack:
            assert stack.info is not None and stack.vault is not None
            assert stack.store is not None and stack.ledger is not None
            token = (await stack.vault.tokenize("acme", Card(LOST, 12, 2034, "visa"),
                                                cvc="123")).token
            async with grpc_stack.payments(stack.info.grpc,
                                           stack.info.client_credentials()) as api:
                intent = await api.create(create_request(2500))
                answered = await api.confirm(intent.id, token)
                fetched = await api.get(intent.id)
            assert answered.status == PROCESSING and not answered.HasField("last_payment_error")
            assert fetched == answered
            (attempt,) = await stack.store.attempts_for_intent(intent.id)
            assert attempt.status is AttemptStatus.UNKNOWN and attempt.request["t"] == "0100"
            unknown = await stack.store.attempts_with_status(AttemptStatus.UNKNOWN)
            assert [a.id for a in unknown] == [attempt.id]
            network = stack.ledger.find_authorization(TERMINAL, attempt.stan)
            assert network is not None and network.held == 2500
    asyncio.run(main())


# -- the path of one payment, health and reflection --------------------------------------


def test_one_payment_from_the_http_edge_to_a_refund(gw: Gateway) -> None:
    """A card tokenized through the HTTP edge (JWE to /v1/tokens) pays over gRPC:
    create, confirm, capture, refund, and netsim's ledger agrees."""
    async def main() -> None:
        assert gw.stack.info is not None
        tokenized = await grpc_stack.tokenize_over_http(gw.stack.info.http, APPROVE)
        assert tokenized["last4"] == "4242" and APPROVE not in str(tokenized)
        async with gw.client() as api:
            intent = await api.create(create_request(6000, description="book"))
            intent = await api.confirm(intent.id, tokenized["token"])
            assert intent.status == REQUIRES_CAPTURE
            intent = await api.capture(intent.id)
            refund = await api.refund(intent.id, 2000)
            final = await api.get(intent.id)
        assert refund.status == pb.REFUND_STATUS_SUCCEEDED
        assert (final.status, final.amount_received, final.amount_refunded) == \
            (SUCCEEDED, 6000, 2000)
        network = await gw.network(intent.id)
        assert network.card_last4 == "4242"
        assert (network.amount, network.captured, network.refunded) == (6000, 6000, 2000)
    asyncio.run(main())


@pytest.mark.parametrize("service", ["", "paygate.v1.Payments"])
def test_health_reports_serving(gw: Gateway, service: str) -> None:
    """grpc.health.v1 answers SERVING for the server and for paygate.v1.Payments."""
    async def main() -> Any:
        async with gw.client() as api:
            return await health_pb2_grpc.HealthStub(api.channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
    assert asyncio.run(main()).status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_payments(gw: Gateway) -> None:
    """Server reflection lists paygate.v1.Payments and serves the file defining it."""
    async def main() -> list[Any]:
        async with gw.client() as api:
            call = reflection_pb2_grpc.ServerReflectionStub(api.channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services=""),
                      reflection_pb2.ServerReflectionRequest(
                          file_containing_symbol="paygate.v1.Payments")]),
                timeout=TIMEOUT)
            return [r async for r in call]
    listed, described = asyncio.run(main())
    names = {s.name for s in listed.list_services_response.service}
    assert {"paygate.v1.Payments", "grpc.health.v1.Health"} <= names
    files = [FileDescriptorProto.FromString(raw)
             for raw in described.file_descriptor_response.file_descriptor_proto]
    payments = [f for f in files if f.package == "paygate.v1"
                and any(s.name == "Payments" for s in f.service)]
    assert payments and {m.name for m in payments[0].service[0].method} >= {
        "CreatePaymentIntent", "ConfirmPaymentIntent", "CapturePaymentIntent",
        "CancelPaymentIntent", "GetPaymentIntent", "ListPaymentIntents",
        "WatchPaymentIntent", "CreateRefund", "GetRefund"}
