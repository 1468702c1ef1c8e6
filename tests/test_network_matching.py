"""Request/response matching, deadlines, late responses and back-pressure."""

from __future__ import annotations

import asyncio
import random
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from conftest import Pki
from scripted_host import (
    Action,
    Answer,
    ScriptedHost,
    approve,
    auth_request,
    contexts,
    make_client,
    new_trace,
    response_to,
    silent,
    wait_until,
)

import codec
from codec import dialect
from codec.framing import frame
from gateway.network import NotSent, OutcomeUnknown


@pytest.mark.parametrize("connections", [1, 2])
def test_a_thousand_concurrent_requests_each_get_their_own_response(
    pki: Pki, connections: int
) -> None:
    """1,000 requests in flight at once, answered in random order, each get the matching reply."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        rng = random.Random(8583)

        def script(doc: dict[str, str]) -> list[Action]:
            # The approval code is derived from the amount, so a mix-up would show.
            return [Answer({"38": doc["4"][-6:]}, delay=rng.uniform(0.0, 0.05))]

        trace = new_trace()
        async with (
            ScriptedHost(server, script=script) as host,
            make_client(host, client_ctx, trace=trace,
                        connections=connections, max_in_flight=1000, deadline=20.0) as client,
        ):
            await wait_until(lambda: len(client._open_conns()) == connections,
                             what="all connections ready")
            requests = [auth_request(trace.allocate(), amount=100 + i) for i in range(1000)]
            replies = await asyncio.gather(*(client.request(r) for r in requests))
            assert client.in_flight == 0
        for request, reply in zip(requests, replies, strict=True):
            assert reply["t"] == "0110"
            assert (reply["41"], reply["11"]) == (request["41"], request["11"])
            assert reply["4"] == request["4"] and reply["38"] == request["4"][-6:]
        used = {r.connection for r in host.received if r.doc["t"] == "0100"}
        assert len(used) == connections

    asyncio.run(scenario())


def test_out_of_order_responses_are_matched(pki: Pki) -> None:
    """A slow first answer and a fast second answer each reach their own request."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)

        def script(doc: dict[str, str]) -> list[Action]:
            return [Answer(delay=0.3 if doc["4"].endswith("1") else 0.0)]

        trace = new_trace()
        order: list[str] = []
        async with (
            ScriptedHost(server, script=script) as host,
            make_client(host, client_ctx, trace=trace) as client,
        ):

            async def one(amount: int) -> dict[str, str]:
                reply = await client.request(auth_request(trace.allocate(), amount))
                order.append(reply["4"])
                return reply

            slow, fast = await asyncio.gather(one(1), one(2))
        assert slow["4"] == "000000000001" and fast["4"] == "000000000002"
        assert order == ["000000000002", "000000000001"]

    asyncio.run(scenario())


def test_unanswered_request_is_outcome_unknown_and_its_late_answer_is_routed(pki: Pki) -> None:
    """No answer by the deadline -> OutcomeUnknown (not a decline); the late 0110 goes to
    on_late_response."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        late: list[dict[str, str]] = []

        async def on_late(doc: dict[str, str]) -> None:
            late.append(doc)

        trace = new_trace()
        script = lambda _doc: [Answer(delay=0.5)]  # noqa: E731
        async with (
            ScriptedHost(server, script=script) as host,
            make_client(host, client_ctx, trace=trace, on_late_response=on_late) as client,
        ):
            request = auth_request(trace.allocate())
            with pytest.raises(OutcomeUnknown) as caught:
                await client.request(request, deadline=0.2)
            assert caught.value.match_key == (request["41"], request["11"])
            assert caught.value.mti == "0100"
            assert client.in_flight == 0
            await wait_until(lambda: bool(late), what="the late response")
            assert client.ready  # the connection survived
        assert late[0]["t"] == "0110" and late[0]["11"] == request["11"]
        assert host.connections == 1

    asyncio.run(scenario())


def test_a_duplicate_answer_goes_to_the_late_handler(pki: Pki) -> None:
    """When the host answers twice, the caller gets the first and the second is late."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        late: list[dict[str, str]] = []
        trace = new_trace()
        twice = [Answer({"38": "FIRST1"}), Answer({"38": "AGAIN2"}, delay=0.05)]
        async with (
            ScriptedHost(server, script=lambda _doc: twice) as host,
            make_client(host, client_ctx, trace=trace, on_late_response=late.append) as client,
        ):
            reply = await client.request(auth_request(trace.allocate()))
            await wait_until(lambda: bool(late), what="the duplicate")
        assert reply["38"] == "FIRST1"
        assert [doc["38"] for doc in late] == ["AGAIN2"]

    asyncio.run(scenario())


def test_a_response_with_the_wrong_mti_does_not_match(pki: Pki) -> None:
    """A 0230 carrying the key of a pending 0100 is not its answer; it is unsolicited."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        late: list[dict[str, str]] = []
        trace = new_trace()
        wrong = [Answer({"t": "0230"})]
        async with (
            ScriptedHost(server, script=lambda _doc: wrong) as host,
            make_client(host, client_ctx, trace=trace, on_late_response=late.append) as client,
        ):
            with pytest.raises(OutcomeUnknown):
                await client.request(auth_request(trace.allocate()), deadline=0.3)
        assert [doc["t"] for doc in late] == ["0230"]

    asyncio.run(scenario())


def test_back_pressure_refuses_instead_of_queueing(pki: Pki) -> None:
    """With max_in_flight=4 and a host that never answers, a 5th request gets NotSent and
    is never written."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        async with (
            ScriptedHost(server, script=silent) as host,
            make_client(host, client_ctx, trace=trace, max_in_flight=4) as client,
        ):
            stuck = [asyncio.create_task(
                client.request(auth_request(trace.allocate()), deadline=3.0))
                for _ in range(4)]
            await wait_until(lambda: len(host.messages("0100")) == 4,
                             what="four requests at the host")
            assert client.in_flight == 4
            fifth = auth_request(trace.allocate())
            with pytest.raises(NotSent) as caught:
                await client.request(fifth, deadline=0.2)
            assert caught.value.stan == fifth["11"]
            results = await asyncio.gather(*stuck, return_exceptions=True)
            assert all(isinstance(r, OutcomeUnknown) for r in results)
            assert client.in_flight == 0
            host.script = approve
            reply = await client.request(auth_request(trace.allocate()))
            assert reply["39"] == "00"
        assert fifth["11"] not in {doc["11"] for doc in host.messages("0100")}

    asyncio.run(scenario())


def test_a_request_waiting_for_a_slot_gets_the_next_free_one(pki: Pki) -> None:
    """With max_in_flight=2, seven requests are all answered: each waits (in order) for a
    slot another one frees, and a request cancelled while waiting gives its turn up."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        slow = lambda _doc: [Answer(delay=0.05)]  # noqa: E731
        async with (
            ScriptedHost(server, script=slow) as host,
            make_client(host, client_ctx, trace=trace, max_in_flight=2) as client,
        ):
            requests = [auth_request(trace.allocate()) for _ in range(7)]
            tasks = [asyncio.create_task(client.request(r)) for r in requests]
            await asyncio.sleep(0)
            assert client.in_flight == 2
            tasks[4].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[4], asyncio.CancelledError)
            for request, reply in zip(requests, results, strict=True):
                if isinstance(reply, dict):
                    assert reply["11"] == request["11"] and reply["39"] == "00"
            assert sum(isinstance(r, dict) for r in results) == 6
            assert client.in_flight == 0
        assert requests[4]["11"] not in {doc["11"] for doc in host.messages("0100")}

    asyncio.run(scenario())


def test_responses_split_and_packed_across_reads_are_all_matched(pki: Pki) -> None:
    """Responses that arrive packed together and cut at arbitrary bytes (7-byte writes)
    each reach their own request."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        async with (
            ScriptedHost(server, script=silent) as host,
            make_client(host, client_ctx, trace=trace) as client,
        ):
            requests = [auth_request(trace.allocate(), amount=i + 1) for i in range(5)]
            tasks = [asyncio.create_task(client.request(r)) for r in requests]
            await wait_until(lambda: len(host.messages("0100")) == 5, what="five requests")
            stream = b"".join(frame(codec.encode(response_to(r), dialect.SPEC))
                              for r in requests)
            for start in range(0, len(stream), 7):
                await host.send_raw(stream[start:start + 7])
            replies = await asyncio.gather(*tasks)
        for request, reply in zip(requests, replies, strict=True):
            assert (reply["11"], reply["4"]) == (request["11"], request["4"])

    asyncio.run(scenario())


def test_a_stan_already_in_flight_is_refused(pki: Pki) -> None:
    """Sending a second request with the (41, 11) of one in flight is a caller error."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        async with (
            ScriptedHost(server, script=silent) as host,
            make_client(host, client_ctx, trace=trace) as client,
        ):
            request = auth_request(trace.allocate())
            first = asyncio.create_task(client.request(request, deadline=10.0))
            await wait_until(lambda: bool(host.messages("0100")), what="the first")
            with pytest.raises(ValueError):
                await client.request(request, deadline=0.5)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert client.in_flight == 0
        assert len(host.messages("0100")) == 1

    asyncio.run(scenario())


def test_no_card_data_in_logs(pki: Pki) -> None:
    """Nothing the client logs while approving, timing out and routing a late answer contains
    the PAN or chip data."""

    async def scenario() -> list[MutableMapping[str, Any]]:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        late: list[dict[str, str]] = []
        script = lambda doc: [Answer(delay=0.4 if doc["4"].endswith("2") else 0.0)]  # noqa: E731
        with structlog.testing.capture_logs() as logs:
            async with (
                ScriptedHost(server, script=script) as host,
                make_client(host, client_ctx, trace=trace, on_late_response=late.append) as client,
            ):
                await client.request(auth_request(trace.allocate(), 1))
                with pytest.raises(OutcomeUnknown):
                    await client.request(auth_request(trace.allocate(), 2), deadline=0.2)
                await wait_until(lambda: bool(late), what="the late answer")
        return logs

    logs = asyncio.run(scenario())
    assert any(entry.get("event") == "network outcome unknown" for entry in logs)
    request = auth_request(new_trace().allocate())
    text = repr(logs)
    assert request["2"] not in text and request["55"] not in text


def test_a_failing_late_handler_does_not_break_the_connection(pki: Pki) -> None:
    """A late-response handler that raises is logged; the connection keeps serving requests."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        calls: list[str] = []

        def on_late(doc: dict[str, str]) -> None:
            calls.append(doc["11"])
            raise RuntimeError("handler bug")

        twice = [Answer(), Answer(delay=0.05)]
        async with (
            ScriptedHost(server, script=lambda _doc: twice) as host,
            make_client(host, client_ctx, trace=trace, on_late_response=on_late) as client,
        ):
            first = auth_request(trace.allocate())
            await client.request(first)
            await wait_until(lambda: bool(calls), what="the late handler")
            reply = await client.request(auth_request(trace.allocate()))
            assert reply["39"] == "00"
            assert client.ready
        assert calls[0] == first["11"]
        assert host.connections == 1

    asyncio.run(scenario())
