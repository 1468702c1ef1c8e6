"""The network client's lifecycle against a scripted host: sign-on, echo, sign-off, start."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Pki
from scripted_host import (
    TERMINAL,
    Answer,
    ScriptedHost,
    auth_request,
    contexts,
    make_client,
    new_trace,
    silent,
    wait_until,
)

from codec import dialect
from gateway.network import NotSent
from gateway.pki import Credentials, client_context, server_context


def test_sign_on_is_the_first_message_on_every_connection(pki: Pki) -> None:
    """Each connection signs on (0800, 70 = 001) before anything else, then carries requests."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        async with (
            ScriptedHost(server) as host,
            make_client(host, client_ctx, trace=trace, connections=2) as client,
        ):
            assert client.ready
            await wait_until(lambda: len(host.messages("0800", dialect.SIGN_ON)) == 2,
                             what="two sign-ons")
            reply = await client.request(auth_request(trace.allocate()))
            assert reply["t"] == "0110" and reply["39"] == "00"
            for number in (1, 2):
                first = host.first_on(number)
                assert first["t"] == "0800" and first["70"] == dialect.SIGN_ON
                assert first["41"] == TERMINAL and first["32"] == "440001"
                assert len(first["11"]) == 6 and len(first["7"]) == 10

    asyncio.run(scenario())


def test_echo_is_sent_when_the_connection_is_idle(pki: Pki) -> None:
    """An idle connection sends an echo test (0800, 70 = 301) and stays up when it is answered."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        async with (
            ScriptedHost(server) as host,
            make_client(host, client_ctx, echo_interval=0.1) as client,
        ):
            await wait_until(lambda: len(host.messages("0800", dialect.ECHO)) >= 2,
                             what="two echoes")
            assert client.ready
            assert host.connections == 1

    asyncio.run(scenario())


def test_failed_echo_drops_and_reconnects_the_connection(pki: Pki) -> None:
    """An unanswered echo drops the connection; a new one is opened and signs on again."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        echoes = 0

        def management(doc: dict[str, str]) -> list[Answer]:
            nonlocal echoes
            if doc["70"] == dialect.ECHO:
                echoes += 1
                if echoes == 1:
                    return []
            return [Answer()]

        async with (
            ScriptedHost(server, management=management) as host,
            make_client(host, client_ctx, echo_interval=0.1, deadline=0.3,
                        backoff_initial=0.01, backoff_max=0.05) as client,
        ):
            await wait_until(lambda: host.connections >= 2, what="a reconnection")
            await wait_until(lambda: client.ready, what="ready again")
            assert host.first_on(2)["70"] == dialect.SIGN_ON

    asyncio.run(scenario())


def test_sign_off_on_close(pki: Pki) -> None:
    """close() signs off (0800, 70 = 002) on each connection; afterwards requests are NotSent."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        trace = new_trace()
        async with ScriptedHost(server) as host:
            client = make_client(host, client_ctx, trace=trace, connections=2)
            await client.start()
            await wait_until(lambda: len(host.messages("0800", dialect.SIGN_ON)) == 2,
                             what="two sign-ons")
            await wait_until(lambda: len(client._open_conns()) == 2, what="two ready")
            await client.close()
            assert not client.ready
            sign_offs = host.messages("0800", dialect.SIGN_OFF)
            assert len(sign_offs) == 2
            assert {r.connection for r in host.received if r.doc.get("70") == "002"} == {1, 2}
            with pytest.raises(NotSent):
                await client.request(auth_request(trace.allocate()))

    asyncio.run(scenario())


def test_start_raises_not_sent_when_the_host_is_down(pki: Pki) -> None:
    """With nothing listening, start() gives up after its timeout with NotSent."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        host = ScriptedHost(server)
        await host.start()
        await host.close()  # the port is now closed
        client = make_client(host, client_ctx, backoff_initial=0.01, backoff_max=0.05)
        with pytest.raises(NotSent):
            await client.start(timeout=0.3)
        assert not client.ready
        with pytest.raises(NotSent):
            await client.request(auth_request(new_trace().allocate()))
        await client.close()

    asyncio.run(scenario())


def test_start_raises_not_sent_when_sign_on_is_refused(pki: Pki) -> None:
    """A sign-on answered with 91 does not make the connection ready."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        refuse = [Answer({"39": "91"})]
        async with ScriptedHost(server, management=lambda _doc: refuse) as host:
            client = make_client(host, client_ctx, backoff_initial=0.01, backoff_max=0.05)
            with pytest.raises(NotSent):
                await client.start(timeout=0.3)
            assert not client.ready
            assert len(host.messages("0800", dialect.SIGN_ON)) >= 1
            assert not host.messages("0100")

    asyncio.run(scenario())


def test_start_fails_with_a_certificate_from_another_ca(pki: Pki) -> None:
    """The host rejects a client certificate it does not trust, so the client never gets ready."""

    async def scenario() -> None:
        # Trusts the host's CA, but presents a certificate that CA never issued.
        intruder = Credentials(cert=pki.foreign.cert, key=pki.foreign.key, ca=pki.netsim.ca)
        async with ScriptedHost(server_context(pki.netsim)) as host:
            client = make_client(host, client_context(intruder), backoff_initial=0.01,
                                 backoff_max=0.05)
            with pytest.raises(NotSent):
                await client.start(timeout=0.3)
            assert not host.received

    asyncio.run(scenario())


def test_network_echo_is_answered(pki: Pki) -> None:
    """An echo test sent by the network is answered with 0810, 39 = 00, same STAN."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        async with ScriptedHost(server) as host, make_client(host, client_ctx):
            await host.send({"t": "0800", "7": dialect.transmission_time(), "11": "900001",
                             "41": TERMINAL, "70": dialect.ECHO})
            await wait_until(lambda: bool(host.messages("0810")), what="the 0810")
            reply = host.messages("0810")[0]
            assert reply["11"] == "900001" and reply["39"] == "00" and reply["70"] == "301"

    asyncio.run(scenario())


def test_requests_before_start_are_not_sent(pki: Pki) -> None:
    """A client that was never started refuses requests with NotSent."""

    async def scenario() -> None:
        server, client_ctx = contexts(pki.netsim, pki.gateway)
        async with ScriptedHost(server, script=silent) as host:
            client = make_client(host, client_ctx)
            with pytest.raises(NotSent):
                await client.request(auth_request(new_trace().allocate()))
            assert not host.received

    asyncio.run(scenario())
