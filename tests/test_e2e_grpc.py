"""End to end over mutual TLS: the whole gateway (``gateway.stack.Stack``: netsim, store,
vault, payments service, gRPC server, HTTP edge) on free loopback ports, driven with the
stubs generated from ``proto/paygate/v1``; what the API answers is checked against
netsim's ledger and the store.

One stack serves the module (on its own event loop, in a thread). Its configuration
lets ``checkout-service`` act for ``acme`` only, ``globex-service`` for ``globex``,
``reports-service`` for the two merchants only the list tests use, and
``limited-service`` for ``acme`` with a burst of 3 and a rate that never refills within
a test run; ``intruder`` has a certificate of the same CA and no entry at all. The
lost-response test starts a stack of its own with a short network deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import grpc_stack
import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from grpc_stack import TIMEOUT, BackgroundStack, Payments
from paygate.v1 import payments_pb2 as pb

from gateway.cards import Card, brand_of
from gateway.payments import idempotency
from gateway.payments.convert import ERROR_DOMAIN, error_info_from
from gateway.payments.model import Attempt, AttemptKind, AttemptStatus
from gateway.pki import Authority, Credentials
from gateway.stack import Stack
from netsim import Authorization, Ledger

APPROVE: Final = "4242424242424242"
DECLINE: Final = "4000000000000002"
LOST: Final = "4000000000000259"
TERMINAL: Final = "TERM0001"
Code = grpc.StatusCode

MANUAL: Final = pb.CAPTURE_METHOD_MANUAL
AUTOMATIC: Final = pb.CAPTURE_METHOD_AUTOMATIC
RPM: Final = pb.PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD
PROCESSING: Final = pb.PAYMENT_INTENT_STATUS_PROCESSING
REQUIRES_CAPTURE: Final = pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE
SUCCEEDED: Final = pb.PAYMENT_INTENT_STATUS_SUCCEEDED
CANCELED: Final = pb.PAYMENT_INTENT_STATUS_CANCELED

LIST_MERCHANTS: Final = [
    {"id": "initech", "name": "Initech", "card_acceptor_id": "INITECH00000001"},
    {"id": "umbrella", "name": "Umbrella", "card_acceptor_id": "UMBRELLA0000001"},
]
CONFIG: Final = f"""
[rate_limit]
rate = 100000.0
burst = 100000

{grpc_stack.merchants_toml()}
{grpc_stack.merchants_toml(LIST_MERCHANTS)}
[[identities]]
name = "checkout-service"
merchants = ["acme"]

[[identities]]
name = "globex-service"
merchants = ["globex"]

[[identities]]
name = "reports-service"
merchants = ["initech", "umbrella"]

[[identities]]
name = "limited-service"
merchants = ["acme"]
rate_limit = {{ rate = 0.0001, burst = 3 }}
"""
IDENTITIES: Final = ("checkout-service", "globex-service", "reports-service",
                     "limited-service", "intruder")


@dataclass
class Gateway:
    """The module's running stack and the client credentials of every identity."""

    bg: BackgroundStack
    creds: dict[str, Credentials]
    data_dir: Path

    @property
    def stack(self) -> Stack:
        return self.bg.stack

    @property
    def ledger(self) -> Ledger:
        assert self.stack.ledger is not None
        return self.stack.ledger

    @property
    def target(self) -> str:
        assert self.stack.info is not None
        return self.stack.info.grpc

    def client(self, identity: str = "checkout-service"
               ) -> AbstractAsyncContextManager[Payments]:
        return grpc_stack.payments(self.target, self.creds[identity])

    async def token(self, pan: str = APPROVE, merchant: str = "acme") -> str:
        """A vault token for ``pan`` (tokenized directly, for brevity)."""
        assert self.stack.vault is not None
        card = Card(pan, 12, 2034, brand_of(pan) or "visa")
        return (await self.bg.call(self.stack.vault.tokenize(merchant, card, cvc="123"))).token

    async def attempts(self, intent_id: str) -> list[Attempt]:
        assert self.stack.store is not None
        return await self.bg.call(self.stack.store.attempts_for_intent(intent_id))

    async def network(self, intent_id: str) -> Authorization:
        """What netsim holds for the intent's authorization."""
        (auth,) = [a for a in await self.attempts(intent_id)
                   if a.kind is AttemptKind.AUTHORIZATION]
        found = self.ledger.find_authorization(TERMINAL, auth.stan)
        assert found is not None
        return found


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("e2e-grpc")
    creds = grpc_stack.issue_client_certs(data_dir, *IDENTITIES[1:])
    config = grpc_stack.stack_config(data_dir, toml=CONFIG, network_deadline_seconds="10")
    bg = BackgroundStack(config).start()
    try:
        assert bg.stack.info is not None
        creds["checkout-service"] = bg.stack.info.client_credentials()
        yield Gateway(bg, creds, data_dir)
    finally:
        bg.close()


async def refused(call: Awaitable[Any], code: grpc.StatusCode,
                  reason: str) -> grpc.aio.AioRpcError:
    """The error ``call`` fails with, checked to be ``code`` with ErrorInfo ``reason``."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == code, (error.code(), error.details())
    detail = error_info_from(error)
    assert detail is not None, "no ErrorInfo in the status details"
    assert (detail.reason, detail.domain) == (reason, ERROR_DOMAIN)
    return error


def create_request(amount: int = 5000, currency: str = "eur",
                   capture_method: pb.CaptureMethod = MANUAL, merchant: str = "acme",
                   **fields: Any) -> pb.CreatePaymentIntentRequest:
    return pb.CreatePaymentIntentRequest(merchant_id=merchant, amount=amount,
                                         currency=currency, capture_method=capture_method,
                                         **fields)


async def authorized(gw: Gateway, api: Payments, amount: int = 5000,
                     capture_method: pb.CaptureMethod = MANUAL) -> pb.PaymentIntent:
    """A new acme intent confirmed with an approved card."""
    intent = await api.create(create_request(amount, capture_method=capture_method))
    return await api.confirm(intent.id, await gw.token())


def ms(timestamp: Timestamp) -> int:
    return int(timestamp.seconds) * 1000 + int(timestamp.nanos) // 1_000_000


def at_ms(value: int) -> Timestamp:
    return Timestamp(seconds=value // 1000, nanos=value % 1000 * 1_000_000)


def details_trailer(error: grpc.aio.AioRpcError) -> bytes:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return bytes(value)
    raise AssertionError("no grpc-status-details-bin trailer")


# -- every RPC ---------------------------------------------------------------------------


def test_create_returns_a_new_intent(gw: Gateway) -> None:
    """CreatePaymentIntent answers the intent as asked, requiring a payment method, v1."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request(
                1999, description="order 42", metadata={"order": "42"}))
        assert intent.id.startswith("pi_") and intent.merchant_id == "acme"
        assert (intent.amount, intent.currency, intent.capture_method) == (1999, "eur", MANUAL)
        assert intent.status == RPM and intent.version == 1
        assert intent.description == "order 42" and dict(intent.metadata) == {"order": "42"}
        assert (intent.amount_capturable, intent.amount_received, intent.amount_refunded) == \
            (0, 0, 0)
        assert not intent.HasField("last_payment_error")
        assert intent.created == intent.updated and ms(intent.created) > 0
    asyncio.run(main())


def test_confirm_with_manual_capture_holds_the_amount(gw: Gateway) -> None:
    """Confirming a manual-capture intent answers REQUIRES_CAPTURE and netsim holds it."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await authorized(gw, api, 2500)
        assert intent.status == REQUIRES_CAPTURE and intent.amount_capturable == 2500
        assert intent.amount_received == 0 and intent.payment_method
        held = await gw.network(intent.id)
        assert held.held == 2500 and held.approval_code and held.captured == 0
    asyncio.run(main())


def test_confirm_with_automatic_capture_succeeds(gw: Gateway) -> None:
    """Confirming an automatic-capture intent authorizes and captures: SUCCEEDED."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await authorized(gw, api, 1234, AUTOMATIC)
        assert intent.status == SUCCEEDED and intent.amount_received == 1234
        assert intent.amount_capturable == 0
        network = await gw.network(intent.id)
        assert (network.captured, network.held) == (1234, 0)
    asyncio.run(main())


@pytest.mark.parametrize(("amount_to_capture", "received"),
                         [(5000, 5000), (3000, 3000), (0, 5000)],
                         ids=["full", "partial", "zero-means-all"])
def test_capture(gw: Gateway, amount_to_capture: int, received: int) -> None:
    """Capture takes the amount asked (0 = all) and the uncaptured rest is released."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await authorized(gw, api, 5000)
            intent = await api.capture(intent.id, amount_to_capture)
        assert intent.status == SUCCEEDED and intent.amount_received == received
        assert intent.amount_capturable == 0
        network = await gw.network(intent.id)
        assert (network.captured, network.reversed, network.held) == \
            (received, 5000 - received, 0)
    asyncio.run(main())


def test_cancel_before_confirmation_touches_no_network(gw: Gateway) -> None:
    """Cancel from REQUIRES_PAYMENT_METHOD is CANCELED at once, with no network attempt."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request())
            before = len(gw.ledger.entries())
            intent = await api.cancel(intent.id, "abandoned")
        assert intent.status == CANCELED and intent.cancellation_reason == "abandoned"
        assert await gw.attempts(intent.id) == []
        assert len(gw.ledger.entries()) == before
    asyncio.run(main())


def test_cancel_of_an_authorized_intent_voids_it_at_netsim(gw: Gateway) -> None:
    """Cancel from REQUIRES_CAPTURE sends a void: CANCELED and netsim holds nothing."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await authorized(gw, api, 700)
            intent = await api.cancel(intent.id, "requested_by_customer")
        assert intent.status == CANCELED and intent.amount_capturable == 0
        network = await gw.network(intent.id)
        assert (network.held, network.reversed) == (0, 700)
        assert len(gw.ledger.reversals_of(TERMINAL, network.stan)) == 1
    asyncio.run(main())


def test_get_returns_the_current_state(gw: Gateway) -> None:
    """GetPaymentIntent answers exactly what the last change answered."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await authorized(gw, api)
            fetched = await api.get(intent.id)
        assert fetched == intent and fetched.version == 3
    asyncio.run(main())


def test_list_by_merchant_status_and_created_range(gw: Gateway) -> None:
    """ListPaymentIntents shows only the merchant's intents, newest first, filtered by
    status and by the created range [created_gte, created_lt)."""
    async def main() -> None:
        async with gw.client("reports-service") as api:
            mine = [await api.create(create_request(100 + i, merchant="umbrella"))
                    for i in range(4)]
            other = await api.create(create_request(100, merchant="initech"))
            everything = await api.list(pb.ListPaymentIntentsRequest(merchant_id="umbrella"))
            umbrella_token = await gw.token(merchant="umbrella")
            mine[1] = await api.confirm(mine[1].id, umbrella_token)
            mine[2] = await api.cancel(mine[2].id)
            by_status = {status: await api.list(pb.ListPaymentIntentsRequest(
                merchant_id="umbrella", status=status))
                for status in (RPM, REQUIRES_CAPTURE, CANCELED, SUCCEEDED)}
            gte, lt = ms(mine[1].created), ms(mine[3].created)
            ranged = await api.list(pb.ListPaymentIntentsRequest(
                merchant_id="umbrella", created_gte=at_ms(gte), created_lt=at_ms(lt)))
            await refused(api.list(pb.ListPaymentIntentsRequest(
                merchant_id="umbrella", created_gte=at_ms(lt), created_lt=at_ms(lt))),
                Code.INVALID_ARGUMENT, "created_range_invalid")
        newest_first = sorted(mine, key=lambda i: (ms(i.created), i.id), reverse=True)
        assert [i.id for i in everything.data] == [i.id for i in newest_first]
        assert not everything.has_more and other.id not in {i.id for i in everything.data}
        assert [i.id for i in by_status[RPM].data] == [i.id for i in newest_first
                                                       if i.id in (mine[0].id, mine[3].id)]
        assert [i.id for i in by_status[REQUIRES_CAPTURE].data] == [mine[1].id]
        assert [i.id for i in by_status[CANCELED].data] == [mine[2].id]
        assert list(by_status[SUCCEEDED].data) == []
        expected = [i.id for i in newest_first if gte <= ms(i.created) < lt]
        assert [i.id for i in ranged.data] == expected and mine[1].id in expected
    asyncio.run(main())


def test_list_paginates_with_a_cursor(gw: Gateway) -> None:
    """Pages of `limit` follow each other through starting_after, has_more set on all but
    the last; 0 is the default of 20, and limits outside 0..100 are refused."""
    async def main() -> None:
        async with gw.client("reports-service") as api:
            await asyncio.gather(*(api.create(create_request(200 + i, merchant="initech"))
                                   for i in range(23)))
            full = await api.list(pb.ListPaymentIntentsRequest(merchant_id="initech",
                                                               limit=100))
            pages: list[pb.ListPaymentIntentsResponse] = []
            after = ""
            while not pages or pages[-1].has_more:
                pages.append(await api.list(pb.ListPaymentIntentsRequest(
                    merchant_id="initech", limit=7, starting_after=after)))
                after = pages[-1].data[-1].id
            default = await api.list(pb.ListPaymentIntentsRequest(merchant_id="initech"))
            for limit in (-1, 101):
                await refused(api.list(pb.ListPaymentIntentsRequest(
                    merchant_id="initech", limit=limit)),
                    Code.INVALID_ARGUMENT, "limit_invalid")
            async with gw.client() as acme:
                foreign = (await acme.create(create_request(merchant="acme"))).id
            for cursor in ("pi_doesnotexist0000000000", foreign):
                await refused(api.list(pb.ListPaymentIntentsRequest(
                    merchant_id="initech", starting_after=cursor)),
                    Code.INVALID_ARGUMENT, "starting_after_invalid")
        ids = [i.id for i in full.data]
        assert not full.has_more and 23 <= len(ids) < 100
        assert ids == [i.id for i in sorted(full.data, key=lambda i: (ms(i.created), i.id),
                                            reverse=True)]
        assert [i.id for page in pages for i in page.data] == ids
        assert all(len(page.data) == 7 and page.has_more for page in pages[:-1])
        assert 1 <= len(pages[-1].data) <= 7 and not pages[-1].has_more
        assert [i.id for i in default.data] == ids[:20] and default.has_more
    asyncio.run(main())


def test_watch_streams_the_current_state_then_every_change(gw: Gateway) -> None:
    """A watcher first gets the intent as it is, then each change of a confirm running
    meanwhile (PROCESSING, REQUIRES_CAPTURE) and of the capture, versions one by one."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await api.create(create_request(900))
            token = await gw.token()
            call = api.watch(intent.id)
            seen = [await call.read()]
            confirming = asyncio.create_task(api.confirm(intent.id, token))
            while seen[-1].status != REQUIRES_CAPTURE:
                seen.append(await call.read())
            confirmed = await confirming
            captured = await api.capture(intent.id)
            while seen[-1].version < captured.version:
                seen.append(await call.read())
            call.cancel()
        assert seen[0] == intent
        assert [s.status for s in seen[:3]] == [RPM, PROCESSING, REQUIRES_CAPTURE]
        assert seen[2] == confirmed and seen[-1] == captured and captured.status == SUCCEEDED
        assert [s.version for s in seen] == list(range(1, captured.version + 1))
    asyncio.run(main())


def test_watch_of_an_unknown_intent_is_not_found(gw: Gateway) -> None:
    """Watching an id that names no intent fails the stream with NOT_FOUND."""
    async def main() -> None:
        async with gw.client() as api:
            call = api.watch("pi_nosuchintent")
            await refused(call.read(), Code.NOT_FOUND, "payment_intent_not_found")
    asyncio.run(main())


def test_refunds_partial_repeated_and_never_above_the_capture(gw: Gateway) -> None:
    """Two partial refunds succeed at netsim, one above what is left is INVALID_ARGUMENT
    amount_too_large, and GetRefund answers each refund as created."""
    async def main() -> None:
        async with gw.client() as api:
            intent = await authorized(gw, api, 5000)
            intent = await api.capture(intent.id, 4000)
            first = await api.refund(intent.id, 1500, "requested_by_customer")
            second = await api.refund(intent.id, 1500)
            await refused(api.refund(intent.id, 1001), Code.INVALID_ARGUMENT,
                          "amount_too_large")
            fetched = [await api.get_refund(r.id) for r in (first, second)]
            final = await api.get(intent.id)
        for refund in (first, second):
            assert refund.id.startswith("re_") and refund.payment_intent == intent.id
            assert (refund.amount, refund.currency, refund.status) == \
                (1500, "eur", pb.REFUND_STATUS_SUCCEEDED)
        assert first.id != second.id and first.reason == "requested_by_customer"
        assert fetched == [first, second]
        assert final.amount_refunded == 3000 and final.amount_received == 4000
        network = await gw.network(intent.id)
        assert (network.captured, network.refunded) == (4000, 3000)
    asyncio.run(main())


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
], ids=["zero", "negative", "above-max", "unknown-currency", "upper-case-currency",
        "no-currency", "unspecified-capture-method", "too-much-metadata"])
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

