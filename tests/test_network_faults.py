"""Faults on the wire: resets mid-flight, malformed frames, a broken stream, closing in flight."""

from __future__ import annotations

import asyncio

import pytest
import structlog
from conftest import Pki
from scripted_host import (
    Action,
    Answer,
    Raw,
    Reset,
    ScriptedHost,
    auth_request,
    contexts,
    make_client,
    new_trace,
    silent,
    wait_until,
)

from codec import dialect
from gateway.network import NotSent, OutcomeUnknown


def test_reset_mid_flight_fails_all_in_flight_then_reconnects(pki: Pki) -> None:
    """A reset with 5 requests in flight fails all 5 with OutcomeUnknown; the client reconnects,
    signs on again, and a later request succeeds."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        seen = 0

        def script(_doc: dict[str, str]) -> list[Action]:
            nonlocal seen
            seen += 1
            if seen < 5:
                return []
            if seen == 5:
                return [Reset(delay=0.05)]
            return [Answer()]

        async with (
            ScriptedHost(server, script=script) as host,
            make_client(host, client_ctx, trace=trace,
                        deadline=3.0, backoff_initial=0.01, backoff_max=0.05) as client,
        ):
            requests = [auth_request(trace.allocate()) for _ in range(5)]
            results = await asyncio.gather(*(client.request(r) for r in requests),
                                           return_exceptions=True)
            for request, result in zip(requests, results, strict=True):
                assert isinstance(result, OutcomeUnknown)
                assert result.reason == "connection lost in flight"  # not the deadline
                assert result.match_key == (request["41"], request["11"])
            assert client.in_flight == 0
            await wait_until(lambda: client.ready and host.connections == 2,
                             what="a new signed-on connection")
            reply = await client.request(auth_request(trace.allocate()))
            assert reply["39"] == "00"
        assert host.first_on(2)["t"] == "0800" and host.first_on(2)["70"] == dialect.SIGN_ON
        assert len(host.messages("0100", connection=2)) == 1

    asyncio.run(scenario())


def test_undecodable_frame_does_not_kill_the_connection(pki: Pki) -> None:
    """A well-framed but undecodable answer is dropped; the same connection keeps working."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        first = True

        def script(_doc: dict[str, str]) -> list[Action]:
            nonlocal first
            if first:
                first = False
                return [Raw(b"0110\xff\xfe not iso 8583 at all 4242424242424242")]
            return [Answer()]

        async with (
            ScriptedHost(server, script=script) as host,
            make_client(host, client_ctx, trace=trace) as client,
        ):
            with structlog.testing.capture_logs() as logs, pytest.raises(OutcomeUnknown):
                await client.request(auth_request(trace.allocate()), deadline=0.3)
            assert client.ready
            reply = await client.request(auth_request(trace.allocate()))
            assert reply["39"] == "00"
        assert host.connections == 1
        dropped = [e for e in logs if e["event"] == "undecodable frame dropped"]
        assert len(dropped) == 1
        assert "4242424242424242" not in repr(logs)

    asyncio.run(scenario())


def test_broken_stream_reconnects_and_recovers(pki: Pki) -> None:
    """A bad length header (the stream cannot be resynchronized) drops the connection; the
    request in flight is OutcomeUnknown, and after reconnecting requests work again."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        first = True

        def script(_doc: dict[str, str]) -> list[Action]:
            nonlocal first
            if first:
                first = False
                return [Raw(b"\x00\x00garbage", frame=False)]  # a zero-length frame
            return [Answer()]

        async with (
            ScriptedHost(server, script=script) as host,
            make_client(host, client_ctx, trace=trace,
                        deadline=2.0, backoff_initial=0.01, backoff_max=0.05) as client,
        ):
            with pytest.raises(OutcomeUnknown) as caught:
                await client.request(auth_request(trace.allocate()))
            assert "connection lost" in caught.value.reason
            await wait_until(lambda: client.ready and host.connections == 2,
                             what="a new signed-on connection")
            reply = await client.request(auth_request(trace.allocate()))
            assert reply["39"] == "00"

    asyncio.run(scenario())


def test_close_with_requests_in_flight(pki: Pki) -> None:
    """close() signs off and fails requests still in flight with OutcomeUnknown."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        async with ScriptedHost(server, script=silent) as host:
            client = make_client(host, client_ctx, trace=trace)
            await client.start()
            pending = [asyncio.create_task(client.request(auth_request(trace.allocate())))
                       for _ in range(3)]
            await wait_until(lambda: len(host.messages("0100")) == 3, what="three requests")
            await asyncio.gather(client.close(), client.close())  # idempotent
            results = await asyncio.gather(*pending, return_exceptions=True)
            assert all(isinstance(r, OutcomeUnknown) for r in results)
            assert {r.reason for r in results if isinstance(r, OutcomeUnknown)} == {
                "connection lost in flight"}
            assert len(host.messages("0800", dialect.SIGN_OFF)) == 1
            with pytest.raises(NotSent):
                await client.request(auth_request(trace.allocate()))

    asyncio.run(scenario())


def test_no_ready_connection_means_not_sent(pki: Pki) -> None:
    """While the only connection is down and the host refuses sign-on, requests are NotSent
    at once (nothing is written)."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        async with (
            ScriptedHost(server) as host,
            make_client(host, client_ctx, trace=trace,
                        backoff_initial=0.01, backoff_max=0.05) as client,
        ):
            host.management = lambda _doc: [Answer({"39": "91"})]
            host.reset_all()
            await wait_until(lambda: not client.ready, what="the connection to drop")
            with pytest.raises(NotSent):
                await client.request(auth_request(trace.allocate()))
            await wait_until(lambda: host.connections >= 3, what="retries")
            assert not client.ready
        assert not host.messages("0100")

    asyncio.run(scenario())
