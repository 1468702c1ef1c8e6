"""End to end over mutual TLS (setup: tests/e2e_gateway.py): every error the API
promises, as its gRPC status with an ErrorInfo reason: invalid arguments, not found,
wrong state, permission, rate limits, clients without a valid certificate, a key in use,
request bytes that do not parse, timestamps out of range and oversized echoed input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from e2e_gateway import (
    AUTOMATIC,
    REQUIRES_CAPTURE,
    RPM,
    SUCCEEDED,
    Code,
    Gateway,
    at_ms,
    authorized,
    create_request,
    refused,
    running_gateway,
)
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_stack import Payments
from paygate.v1 import payments_pb2 as pb
from paygate.v1 import tokens_pb2

from gateway import metrics
from gateway.payments import idempotency
from gateway.payments.convert import MAX_METADATA_CHARS, error_info_from
from gateway.payments.model import AttemptKind
from gateway.pki import Authority


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from running_gateway(tmp_path_factory)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "reason"), [
    ({"amount": 0}, "amount_invalid"),
    ({"amount": -5}, "amount_invalid"),
    ({"amount": 100_000_000}, "amount_invalid"),
    ({"currency": "xyz"}, "currency_invalid"),
    ({"currency": "EUR"}, "currency_invalid"),
    ({"currency": ""}, "currency_invalid"),
    ({"capture_method": pb.CAPTURE_METHOD_UNSPECIFIED}, "capture_method_invalid"),
    ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata_invalid"),
    ({"description": "card 4242424242424242"}, "card_data_in_description"),
    ({"metadata": {"card": "4242 4242 4242 4242"}}, "card_data_in_metadata"),
], ids=["zero", "negative", "above-max", "unknown-currency", "upper-case-currency",
        "no-currency", "unspecified-capture-method", "too-much-metadata",
        "card-in-description", "card-in-metadata"])
def test_create_refuses_invalid_arguments(gw: Gateway, fields: dict[str, Any],
                                          reason: str) -> None:
    """A malformed create is INVALID_ARGUMENT with the field's stable reason."""
    async def main() -> None:
        async with gw.client() as api:
            await refused(api.create(create_request(**fields)), Code.INVALID_ARGUMENT, reason)
    asyncio.run(main())


def test_idempotency_key_longer_than_255_characters_is_invalid(gw: Gateway) -> None:
    """A 256-character idempotency key is INVALID_ARGUMENT idempotency_key_invalid; 255
    characters are accepted."""
    async def main() -> None:
        async with gw.client() as api:
            await refused(api.create(create_request(), key="k" * 256),
                          Code.INVALID_ARGUMENT, "idempotency_key_invalid")
            created = await api.create(create_request(), key=f"{time.time_ns()}".ljust(255, "k"))
        assert created.status == RPM
    asyncio.run(main())


def test_confirm_with_a_token_of_another_merchant_is_invalid(gw: Gateway) -> None:
    """A token from another merchant's vault (or none at all) is INVALID_ARGUMENT
    payment_method_invalid and nothing goes to the network."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request())
            for token in (await gw.token(merchant="globex"), "tok_nosuchtoken0"):
                await refused(api.confirm(intent.id, token), Code.INVALID_ARGUMENT,
                              "payment_method_invalid")
            assert (await api.get(intent.id)).status == RPM
        assert await gw.attempts(intent.id) == []
    asyncio.run(main())


def test_unknown_and_foreign_intents_are_not_found(gw: Gateway) -> None:
    """Another merchant's intent is NOT_FOUND for every RPC, exactly like an unknown id,
    and stays untouched."""
    async def main() -> None:
        async with gw.client() as acme:
            intent = await authorized(gw, acme, 800, AUTOMATIC)
            refund = await acme.refund(intent.id, 100)
        async with gw.client("globex-service") as globex:
            unknown = await refused(globex.get("pi_nosuchintent000000000000"), Code.NOT_FOUND,
                                    "payment_intent_not_found")
            foreign = await refused(globex.get(intent.id), Code.NOT_FOUND,
                                    "payment_intent_not_found")
            token = await gw.token(merchant="globex")
            for call in (globex.confirm(intent.id, token), globex.capture(intent.id),
                         globex.cancel(intent.id), globex.refund(intent.id, 100)):
                await refused(call, Code.NOT_FOUND, "payment_intent_not_found")
            await refused(globex.get_refund(refund.id), Code.NOT_FOUND, "refund_not_found")
            await refused(globex.get_refund("re_nosuchrefund"), Code.NOT_FOUND,
                          "refund_not_found")
        assert foreign.details() == unknown.details()
        async with gw.client() as acme:
            after = await acme.get(intent.id)
        assert after.amount_refunded == 100 and after.status == SUCCEEDED
    asyncio.run(main())


def test_wrong_state_is_failed_precondition(gw: Gateway) -> None:
    """Capture before confirm, confirm twice, refund of an uncaptured intent and cancel
    of a canceled one are FAILED_PRECONDITION intent_unexpected_state."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request())
            error = await refused(api.capture(intent.id), Code.FAILED_PRECONDITION,
                                  "intent_unexpected_state")
            info = error_info_from(error)
            assert info is not None and info.metadata["status"] == "requires_payment_method"
            token = await gw.token()
            await api.confirm(intent.id, token)
            await refused(api.confirm(intent.id, token), Code.FAILED_PRECONDITION,
                          "intent_unexpected_state")
            await refused(api.refund(intent.id, 100), Code.FAILED_PRECONDITION,
                          "intent_unexpected_state")
            await api.cancel(intent.id)
            await refused(api.cancel(intent.id), Code.FAILED_PRECONDITION,
                          "intent_unexpected_state")
        assert len([a for a in await gw.attempts(intent.id)
                    if a.kind is AttemptKind.AUTHORIZATION]) == 1
    asyncio.run(main())


def test_acting_for_a_merchant_not_allowed_is_permission_denied(gw: Gateway) -> None:
    """checkout-service may act for acme only: creating or listing for globex is
    PERMISSION_DENIED merchant_forbidden."""
    async def main() -> None:
        async with gw.client() as api:
            await refused(api.create(create_request(merchant="globex")),
                          Code.PERMISSION_DENIED, "merchant_forbidden")
            await refused(api.list(pb.ListPaymentIntentsRequest(merchant_id="globex")),
                          Code.PERMISSION_DENIED, "merchant_forbidden")
            created = await api.create(create_request(merchant="acme"))
        assert created.merchant_id == "acme"
    asyncio.run(main())


def test_certificate_of_an_unknown_identity_is_permission_denied(gw: Gateway) -> None:
    """A certificate from the right CA whose identity maps to no merchant is
    PERMISSION_DENIED identity_unknown, for queries and mutations alike."""
    async def main() -> None:
        async with gw.client("intruder") as api:
            await refused(api.create(create_request()), Code.PERMISSION_DENIED,
                          "identity_unknown")
            await refused(api.get("pi_nosuchintent"), Code.PERMISSION_DENIED,
                          "identity_unknown")
    asyncio.run(main())


def test_rate_limit_exhausted_after_the_burst(gw: Gateway) -> None:
    """limited-service (burst 3) gets three calls through; the fourth is
    RESOURCE_EXHAUSTED rate_limited with retry_after_ms."""
    async def main() -> None:
        async with gw.client("limited-service") as api:
            for _ in range(3):
                await api.list(pb.ListPaymentIntentsRequest(merchant_id="acme", limit=1))
            error = await refused(api.create(create_request()), Code.RESOURCE_EXHAUSTED,
                                  "rate_limited")
        info = error_info_from(error)
        assert info is not None and int(info.metadata["retry_after_ms"]) > 0
    asyncio.run(main())


@pytest.mark.parametrize("client", ["no-certificate", "certificate-of-another-ca"])
def test_a_client_without_a_valid_certificate_cannot_connect(
        gw: Gateway, tmp_path: Path, client: str) -> None:
    """A client presenting no certificate, or one from another CA, fails with UNAVAILABLE
    and nothing reaches the servicer (no intent is created)."""
    ca = gw.creds["checkout-service"].ca.read_bytes()
    if client == "no-certificate":
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        other = Authority("another CA").write(tmp_path, "checkout-service")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=other.key.read_bytes(),
            certificate_chain=other.cert.read_bytes())

    async def main() -> None:
        started = time.time_ns() // 1_000_000
        async with grpc.aio.secure_channel(gw.target, credentials) as channel:
            stranger = Payments(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stranger.create(create_request(description="stranger"))
            assert info.value.code() == Code.UNAVAILABLE
        async with gw.client() as api:
            since = await api.list(pb.ListPaymentIntentsRequest(
                merchant_id="acme", created_gte=at_ms(started)))
        assert list(since.data) == []
    asyncio.run(main())


def test_key_in_use_is_aborted(gw: Gateway) -> None:
    """While the key's first call is in progress (its claim pre-populated in the store),
    the call is ABORTED idempotency_key_in_use and nothing happens; once the claim is
    released the same call runs."""
    async def main() -> None:
        assert gw.stack.store is not None
        store = gw.stack.store
        async with gw.client() as api:
            intent = await api.create(create_request())
            token = await gw.token()
            key = f"in-use-{intent.id}"
            request = pb.ConfirmPaymentIntentRequest(id=intent.id, payment_method=token)
            fingerprint = idempotency.request_fingerprint(
                "ConfirmPaymentIntent", request.SerializeToString(deterministic=True))
            claim = idempotency.new_record("checkout-service", key, fingerprint,
                                           time.time_ns() // 1_000_000)
            assert await gw.bg.call(store.claim_idempotency(claim)) is None
            before = len(gw.ledger.authorizations())
            await refused(api.confirm(intent.id, token, key=key), Code.ABORTED,
                          "idempotency_key_in_use")
            assert (await api.get(intent.id)).status == RPM
            assert len(gw.ledger.authorizations()) == before
            assert await gw.bg.call(store.release_idempotency("checkout-service", key))
            confirmed = await api.confirm(intent.id, token, key=key)
        assert confirmed.status == REQUIRES_CAPTURE
        assert len(gw.ledger.authorizations()) == before + 1
    asyncio.run(main())


@pytest.mark.parametrize(("field", "timestamp"), [
    ("created_lt", Timestamp(seconds=2**62)),
    ("created_gte", Timestamp(seconds=2**62)),
    ("created_gte", Timestamp(seconds=2**63 - 1)),
    ("created_gte", Timestamp(seconds=-2**63)),
    ("created_lt", Timestamp(seconds=253_402_300_800)),
    ("created_gte", Timestamp(seconds=-62_135_596_801)),
    ("created_lt", Timestamp(seconds=0, nanos=-1)),
    ("created_gte", Timestamp(seconds=0, nanos=1_000_000_000)),
], ids=["lt-2**62", "gte-2**62", "gte-int64-max", "gte-int64-min", "lt-after-year-9999",
        "gte-before-year-1", "lt-negative-nanos", "gte-nanos-a-second"])
def test_list_refuses_timestamps_outside_the_protobuf_range(
        gw: Gateway, field: str, timestamp: Timestamp) -> None:
    """A created_gte or created_lt outside 0001-01-01T00:00:00Z..9999-12-31T23:59:59Z (or
    with nanos outside 0..999999999) is INVALID_ARGUMENT <field>_invalid."""
    async def main() -> None:
        async with gw.client() as api:
            request = pb.ListPaymentIntentsRequest(merchant_id="acme")
            getattr(request, field).CopyFrom(timestamp)
            await refused(api.list(request), Code.INVALID_ARGUMENT, f"{field}_invalid")
    asyncio.run(main())


_MALFORMED_PAYLOADS: Final = {
    "invalid-utf8": b"\x0a\x02\xff\xfe",
    "garbage": b"\xff\xff\xff\xff",
    "truncated-varint": b"\x10\xff",
    "oversized-length": b"\x0a\xff\xff\xff\xff\x0f",
}
_METHODS: Final = [(f"/{service.full_name}/{m.name}", m.server_streaming)
                   for service in (pb.DESCRIPTOR.services_by_name["Payments"],
                                   tokens_pb2.DESCRIPTOR.services_by_name["Tokens"])
                   for m in service.methods]


def _rpc_count(method: str, code: str) -> float:
    name = method.rsplit("/", 1)[-1]
    value = metrics.REGISTRY.get_sample_value("paygate_rpc_duration_seconds_count",
                                              {"method": name, "code": code})
    return value or 0.0


async def _send_raw(channel: grpc.aio.Channel, method: str, streaming: bool,
                    payload: bytes) -> None:
    """Call ``method`` with ``payload`` as the request bytes, exactly (no serializer)."""
    if streaming:
        async for _ in channel.unary_stream(method)(payload, timeout=10):
            pass
    else:
        await channel.unary_unary(method)(payload, timeout=10)


@pytest.mark.parametrize("payload", list(_MALFORMED_PAYLOADS.values()),
                         ids=list(_MALFORMED_PAYLOADS))
def test_request_bytes_that_do_not_parse_are_invalid_argument(gw: Gateway,
                                                              payload: bytes) -> None:
    """Request bytes that are not a valid message, sent to any Payments or Tokens method
    (the server-streaming Watch too), are INVALID_ARGUMENT malformed_request, counted in
    the metrics, and the message does not echo the bytes."""
    async def main() -> None:
        before = {method: _rpc_count(method, "INVALID_ARGUMENT") for method, _ in _METHODS}
        async with gw.client() as api:
            for method, streaming in _METHODS:
                error = await refused(_send_raw(api.channel, method, streaming, payload),
                                      Code.INVALID_ARGUMENT, "malformed_request")
                text = error.details() or ""
                assert "\\x" not in text and "\ufffd" not in text and "\xff" not in text
                assert "DecodeError" not in text
        for _ in range(500):  # the server counts a call just after answering it
            if all(_rpc_count(m, "INVALID_ARGUMENT") > before[m] for m, _ in _METHODS):
                break
            await asyncio.sleep(0.01)
        assert all(_rpc_count(m, "INVALID_ARGUMENT") > before[m] for m, _ in _METHODS)
    asyncio.run(main())


def test_an_oversized_merchant_id_is_refused_with_bounded_details(gw: Gateway) -> None:
    """Creating or listing for a 100,000-character merchant id is PERMISSION_DENIED
    merchant_forbidden whose ErrorInfo echoes the id cut to MAX_METADATA_CHARS."""
    async def main() -> None:
        merchant = "a" * 100_000
        async with gw.client() as api:
            for call in (api.create(create_request(merchant=merchant)),
                         api.list(pb.ListPaymentIntentsRequest(merchant_id=merchant))):
                error = await refused(call, Code.PERMISSION_DENIED, "merchant_forbidden")
                info = error_info_from(error)
                assert info is not None
                echoed = info.metadata["merchant_id"]
                assert len(echoed) == MAX_METADATA_CHARS
                assert echoed.startswith("aaaa") and echoed.endswith("\u2026")
                assert len(error.details() or "") < 1000
    asyncio.run(main())
