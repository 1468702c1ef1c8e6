"""End to end over mutual TLS (setup: tests/e2e_gateway.py): every RPC of
``paygate.v1.Payments``, what it answers checked against netsim's ledger and the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from e2e_gateway import (
    AUTOMATIC,
    CANCELED,
    MANUAL,
    PROCESSING,
    REQUIRES_CAPTURE,
    RPM,
    SUCCEEDED,
    TERMINAL,
    Code,
    Gateway,
    at_ms,
    authorized,
    create_request,
    ms,
    refused,
    running_gateway,
)
from paygate.v1 import payments_pb2 as pb


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from running_gateway(tmp_path_factory)


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
