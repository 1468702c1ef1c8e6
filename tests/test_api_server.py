"""The gRPC plumbing over real mutual TLS on loopback: identity, request ids, errors,
rate limits, health, reflection and graceful stop.

The Payments servicer is not part of this module: a tiny generic-handler service
(``paygate.test.Probe``, raw bytes in and out) stands in for it, next to the generated
``PaymentsServicer`` base class (every method unimplemented).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from paygate.v1 import payments_pb2, payments_pb2_grpc
from structlog.typing import EventDict

from gateway.api import (
    IdentityPolicy,
    Limit,
    RateLimiter,
    RunningServer,
    authorize_merchant,
    build_server,
    client_channel,
    current_caller,
    current_identity,
)
from gateway.api.context import request_id_from
from gateway.api.identity import identity_from_auth_context
from gateway.api.server import CallInterceptor
from gateway.payments.convert import error_info_from
from gateway.payments.errors import DomainError
from gateway.pki import Authority, Credentials

SERVICE = "paygate.test.Probe"
TIMEOUT = 30.0  # a safety net against hangs, never asserted on
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
POLICY = IdentityPolicy({"checkout-service": {"m_1"}, "ops": {"*"}})
SECRET_TEXT = "card 4242424242424242 exp 12/30"


@dataclass(frozen=True)
class Certs:
    """Server and client credentials from one CA, plus impostors."""

    server: Credentials
    checkout: Credentials     # CN checkout-service, in the policy
    intruder: Credentials     # CN intruder, same CA, not in the policy
    foreign: Credentials      # CN checkout-service from another CA (trusts our server's CA)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """One CA issuing the server and two client certificates, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("api-pki")
    authority = Authority("paygate api test CA")
    server = authority.write(folder, "server", server=True)
    foreign = Authority("some other CA").write(folder / "foreign", "checkout-service")
    return Certs(
        server=server,
        checkout=authority.write(folder, "checkout-service"),
        intruder=authority.write(folder, "intruder"),
        foreign=Credentials(cert=foreign.cert, key=foreign.key, ca=server.ca),
    )


class Probe:
    """A test service whose methods report what the plumbing gave them."""

    def __init__(self) -> None:
        self.calls = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def whoami(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        caller = current_caller()
        return json.dumps({"identity": current_identity(), "request_id": caller.request_id,
                           "merchants": sorted(caller.merchants)}).encode()

    async def refuse(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        raise DomainError("FAILED_PRECONDITION", "intent_unexpected_state",
                          "the intent is canceled", {"status": "canceled"})

    async def crash(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        raise RuntimeError(SECRET_TEXT)

    async def slow(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return b"done"

    async def for_merchant(self, request: bytes, context: Any) -> bytes:
        self.calls += 1
        authorize_merchant(request.decode())
        return b"ok"

    async def stream(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        self.calls += 1
        yield current_identity().encode()
        if request == b"fail":
            raise DomainError("NOT_FOUND", "payment_intent_not_found", "no such intent")
        yield current_caller().request_id.encode()

    def handler(self) -> Any:
        unary = grpc.unary_unary_rpc_method_handler
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Whoami": unary(self.whoami),
            "Refuse": unary(self.refuse),
            "Crash": unary(self.crash),
            "Slow": unary(self.slow),
            "ForMerchant": unary(self.for_merchant),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
        })


def add_probe(probe: Probe, server: Any) -> None:
    """The ``add_*_to_server`` function of the test service."""
    server.add_generic_rpc_handlers((probe.handler(),))


@asynccontextmanager
async def serving(certs: Certs, probe: Probe,
                  limiter: RateLimiter | None = None) -> AsyncIterator[RunningServer]:
    """A started server with the probe and the (unimplemented) Payments base servicer."""
    server = build_server(
        [(add_probe, probe),
         (payments_pb2_grpc.add_PaymentsServicer_to_server, payments_pb2_grpc.PaymentsServicer())],
        listen="127.0.0.1:0", tls=certs.server, identity_policy=POLICY, rate_limiter=limiter)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0)


def method(channel: Any, name: str) -> Callable[..., Any]:
    """The unary-unary multicallable of a probe method (raw bytes in and out)."""
    multicallable: Callable[..., Any] = channel.unary_unary(f"/{SERVICE}/{name}")
    return multicallable


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a call fails with (the test fails if it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


def test_authorized_client_sees_identity_and_request_id(certs: Certs) -> None:
    """A client with a certificate of the CA reaches the servicer as its CN, with a request
    id that is also echoed in the initial metadata."""
    async def main() -> None:
        probe = Probe()
        async with serving(certs, probe) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            call = method(channel, "Whoami")(b"", timeout=TIMEOUT)
            seen = json.loads(await call)
            metadata = dict(await call.initial_metadata())
        assert seen["identity"] == "checkout-service"
        assert seen["merchants"] == ["m_1"]
        assert REQUEST_ID.fullmatch(seen["request_id"])
        assert metadata["x-request-id"] == seen["request_id"]
    asyncio.run(main())


def test_client_request_id_kept_only_when_well_formed(certs: Certs) -> None:
    """A well-formed x-request-id is used as is; a malformed one is replaced."""
    async def main() -> None:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            whoami = method(channel, "Whoami")
            good = json.loads(await whoami(b"", timeout=TIMEOUT,
                                           metadata=(("x-request-id", "req_Ab-9"),)))
            long_id = "a" * 65
            too_long = json.loads(await whoami(b"", timeout=TIMEOUT,
                                               metadata=(("x-request-id", long_id),)))
            bad_chars = json.loads(await whoami(b"", timeout=TIMEOUT,
                                                metadata=(("x-request-id", "a b;c"),)))
        assert good["request_id"] == "req_Ab-9"
        assert too_long["request_id"] not in ("", long_id)
        assert bad_chars["request_id"] != "a b;c"
        assert REQUEST_ID.fullmatch(too_long["request_id"])
        assert REQUEST_ID.fullmatch(bad_chars["request_id"])
    asyncio.run(main())


def test_client_without_certificate_cannot_connect(certs: Certs) -> None:
    """A TLS client that presents no certificate fails and reaches no servicer."""
    async def main() -> None:
        probe = Probe()
        credentials = grpc.ssl_channel_credentials(root_certificates=certs.server.ca.read_bytes())
        async with serving(certs, probe) as server, \
                grpc.aio.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
            error = await failure(method(channel, "Whoami")(b"", timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert probe.calls == 0
    asyncio.run(main())


def test_certificate_from_another_ca_is_refused(certs: Certs) -> None:
    """A client certificate with a known CN but issued by another CA fails at the TLS level."""
    async def main() -> None:
        probe = Probe()
        async with serving(certs, probe) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.foreign) as channel:
            error = await failure(method(channel, "Whoami")(b"", timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert probe.calls == 0
    asyncio.run(main())


def test_identity_not_in_policy_is_permission_denied(certs: Certs) -> None:
    """A valid certificate whose CN the policy does not list gets PERMISSION_DENIED
    `identity_unknown` (authenticated, not authorized) and reaches no servicer."""
    async def main() -> None:
        probe = Probe()
        async with serving(certs, probe) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.intruder) as channel:
            error = await failure(method(channel, "Whoami")(b"", timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info_from(error)
        assert info is not None and info.reason == "identity_unknown"
        assert probe.calls == 0
    asyncio.run(main())


def test_interceptor_rejects_a_call_without_identity() -> None:
    """Even without TLS (a misconfigured server) the interceptor refuses a call that has no
    client certificate: UNAUTHENTICATED `identity_missing`."""
    async def main() -> None:
        probe = Probe()
        server = grpc.aio.server(interceptors=[CallInterceptor(POLICY)])
        server.add_generic_rpc_handlers((probe.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                error = await failure(method(channel, "Whoami")(b"", timeout=TIMEOUT))
        finally:
            await server.stop(0)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        info = error_info_from(error)
        assert info is not None and info.reason == "identity_missing"
        assert probe.calls == 0
    asyncio.run(main())


def test_domain_error_becomes_its_status_with_error_info(certs: Certs) -> None:
    """A DomainError raised by a servicer reaches the client as its code, message and
    ErrorInfo (reason, domain, metadata)."""
    async def main() -> None:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            error = await failure(method(channel, "Refuse")(b"", timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error.details() == "the intent is canceled"
        info = error_info_from(error)
        assert info is not None
        assert (info.reason, info.domain) == ("intent_unexpected_state", "paygate.dev")
        assert dict(info.metadata) == {"status": "canceled"}
    asyncio.run(main())


def test_unexpected_exception_is_internal_and_its_text_never_leaves(
        certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    """Any other exception becomes INTERNAL `internal` with a fixed message; neither the reply
    nor any log (ours or grpc's) carries its text, and our line names its type and request id."""
    caplog.set_level(logging.DEBUG)

    async def main() -> tuple[grpc.aio.AioRpcError, list[EventDict]]:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            with structlog.testing.capture_logs(
                    processors=[structlog.contextvars.merge_contextvars]) as logs:
                error = await failure(method(channel, "Crash")(
                    b"", timeout=TIMEOUT, metadata=(("x-request-id", "req-crash"),)))
        return error, logs

    error, logs = asyncio.run(main())
    assert error.code() == grpc.StatusCode.INTERNAL
    info = error_info_from(error)
    assert info is not None and info.reason == "internal"
    assert "4242" not in (error.details() or "") and "4242" not in str(error)
    assert "4242" not in repr(logs)
    assert "4242" not in caplog.text and "RuntimeError" not in caplog.text
    [internal] = [e for e in logs if e["event"] == "rpc_internal_error"]
    assert internal["error_type"] == "RuntimeError"
    assert internal["request_id"] == "req-crash"
    assert internal["identity"] == "checkout-service"


def test_one_log_line_per_rpc_with_context(certs: Certs) -> None:
    """Each RPC logs one `rpc` line with method, code and duration, bound to its request id
    and identity."""
    async def main() -> list[EventDict]:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            with structlog.testing.capture_logs(
                    processors=[structlog.contextvars.merge_contextvars]) as logs:
                await method(channel, "Whoami")(b"", timeout=TIMEOUT,
                                                metadata=(("x-request-id", "req-1"),))
                await failure(method(channel, "Refuse")(b"", timeout=TIMEOUT,
                                                        metadata=(("x-request-id", "req-2"),)))
                # The server logs its line once the call is over, which may be just after
                # the client has its answer: give it a moment (bounded) to do so.
                for _ in range(500):
                    if sum(e["event"] == "rpc" for e in logs) >= 2:
                        break
                    await asyncio.sleep(0.01)
        return logs

    lines = [e for e in asyncio.run(main()) if e["event"] == "rpc"]
    assert [(e["method"], e["code"], e["request_id"], e["identity"]) for e in lines] == [
        (f"/{SERVICE}/Whoami", "OK", "req-1", "checkout-service"),
        (f"/{SERVICE}/Refuse", "FAILED_PRECONDITION", "req-2", "checkout-service"),
    ]
    assert all(isinstance(e["duration_ms"], float) for e in lines)


def test_authorize_merchant_uses_the_policy(certs: Certs) -> None:
    """Inside a call, authorize_merchant allows the caller's merchants and refuses others with
    PERMISSION_DENIED `merchant_forbidden`."""
    async def main() -> None:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            for_merchant = method(channel, "ForMerchant")
            assert await for_merchant(b"m_1", timeout=TIMEOUT) == b"ok"
            error = await failure(for_merchant(b"m_2", timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info_from(error)
        assert info is not None and info.reason == "merchant_forbidden"
        assert dict(info.metadata) == {"merchant_id": "m_2"}
    asyncio.run(main())


def test_server_streaming_method_is_wrapped_too(certs: Certs) -> None:
    """A unary-stream method sees the caller, and a DomainError raised mid-stream ends the
    stream with its status after the messages already sent."""
    async def main() -> None:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            stream = channel.unary_stream(f"/{SERVICE}/Stream")
            call = stream(b"", timeout=TIMEOUT, metadata=(("x-request-id", "req-s"),))
            assert [m async for m in call] == [b"checkout-service", b"req-s"]
            failing = stream(b"fail", timeout=TIMEOUT)
            received = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for message in failing:
                    received.append(message)
        assert received == [b"checkout-service"]
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        error_info = error_info_from(info.value)
        assert error_info is not None and error_info.reason == "payment_intent_not_found"
    asyncio.run(main())


def test_unimplemented_generated_method_is_unimplemented(certs: Certs) -> None:
    """A method of the generated PaymentsServicer base class answers UNIMPLEMENTED (not
    INTERNAL) through the interceptor."""
    async def main() -> None:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            get = channel.unary_unary("/paygate.v1.Payments/GetPaymentIntent")
            error = await failure(get(
                payments_pb2.GetPaymentIntentRequest(id="pi_x").SerializeToString(),
                timeout=TIMEOUT))
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        info = error_info_from(error)
        assert info is not None and info.reason == "unimplemented"
    asyncio.run(main())


def test_rate_limit_answers_resource_exhausted_after_burst(certs: Certs) -> None:
    """With a frozen clock, `burst` calls succeed, the next is RESOURCE_EXHAUSTED
    `rate_limited` with `retry_after_ms`, and health checks are not limited."""
    async def main() -> None:
        limiter = RateLimiter(Limit(rate=0.5, burst=2), clock=lambda: 0.0)
        probe = Probe()
        async with serving(certs, probe, limiter) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            whoami = method(channel, "Whoami")
            await whoami(b"", timeout=TIMEOUT)
            await whoami(b"", timeout=TIMEOUT)
            error = await failure(whoami(b"", timeout=TIMEOUT))
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info = error_info_from(error)
        assert info is not None and info.reason == "rate_limited"
        assert dict(info.metadata) == {"retry_after_ms": "2000"}
        assert probe.calls == 2
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    asyncio.run(main())


def test_health_serving_then_not_serving_during_stop(certs: Certs) -> None:
    """Health is SERVING for the server and Payments once started, and a watcher sees
    NOT_SERVING as soon as stop begins."""
    async def main() -> None:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            payments = await stub.Check(
                health_pb2.HealthCheckRequest(service="paygate.v1.Payments"), timeout=TIMEOUT)
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
            before = await watch.read()
            stopping = asyncio.create_task(server.stop(TIMEOUT))
            after = await watch.read()
            watch.cancel()
            await stopping
        assert payments.status == health_pb2.HealthCheckResponse.SERVING
        assert before.status == health_pb2.HealthCheckResponse.SERVING
        assert after.status == health_pb2.HealthCheckResponse.NOT_SERVING
    asyncio.run(main())


def test_reflection_lists_the_services(certs: Certs) -> None:
    """Server reflection lists the registered services, health and reflection itself."""
    async def main() -> list[str]:
        async with serving(certs, Probe()) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            call = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                timeout=TIMEOUT)
            responses = [r async for r in call]
        return [s.name for r in responses for s in r.list_services_response.service]

    assert sorted(asyncio.run(main())) == sorted([
        SERVICE, "paygate.v1.Payments", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ])


def test_graceful_stop_drains_in_flight_and_refuses_new_calls(certs: Certs) -> None:
    """During stop an in-flight call still completes while a new call fails."""
    async def main() -> None:
        probe = Probe()
        async with serving(certs, probe) as server, \
                client_channel(f"127.0.0.1:{server.port}", certs.checkout) as channel:
            slow = method(channel, "Slow")(b"", timeout=TIMEOUT)
            await probe.entered.wait()
            stopping = asyncio.create_task(server.stop(TIMEOUT))
            refused: grpc.aio.AioRpcError | None = None
            served = 0
            for _ in range(100):  # the first attempts may still beat the shutdown
                try:
                    await method(channel, "Whoami")(b"", timeout=TIMEOUT)
                    served += 1
                except grpc.aio.AioRpcError as error:
                    refused = error
                    break
            assert not stopping.done()
            probe.release.set()
            assert await slow == b"done"
            await stopping
        assert refused is not None
        # gRPC core cancels a call that arrives while the server shuts down (CANCELLED) or
        # the channel finds no listener any more (UNAVAILABLE); either way it is not served.
        assert refused.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert probe.calls == 1 + served
    asyncio.run(main())


# -- the pure parts ------------------------------------------------------------------------


def test_identity_from_auth_context() -> None:
    """Only a single printable UTF-8 CN over TLS is an identity."""
    ssl = {"transport_security_type": [b"ssl"]}
    assert identity_from_auth_context({**ssl, "x509_common_name": [b"checkout-service"]}) \
        == "checkout-service"
    assert identity_from_auth_context({}) is None
    assert identity_from_auth_context({"x509_common_name": [b"checkout-service"]}) is None
    assert identity_from_auth_context(ssl) is None
    assert identity_from_auth_context({**ssl, "x509_common_name": [b"a", b"b"]}) is None
    assert identity_from_auth_context({**ssl, "x509_common_name": [b""]}) is None
    assert identity_from_auth_context({**ssl, "x509_common_name": [b"\xff"]}) is None
    assert identity_from_auth_context({**ssl, "x509_common_name": [b"a\nb"]}) is None


def test_identity_policy() -> None:
    """merchants_for/check: listed merchants or "*" allowed; unknown identity and foreign
    merchant refused with their reasons."""
    assert POLICY.merchants_for("checkout-service") == frozenset({"m_1"})
    assert POLICY.merchants_for("intruder") is None
    assert POLICY.merchants_for(None) is None
    POLICY.check("checkout-service", "m_1")
    POLICY.check("ops", "m_anything")
    refusals = [("checkout-service", "m_2", "PERMISSION_DENIED", "merchant_forbidden"),
                ("checkout-service", "", "PERMISSION_DENIED", "merchant_forbidden"),
                ("intruder", "m_1", "PERMISSION_DENIED", "identity_unknown"),
                (None, "m_1", "UNAUTHENTICATED", "identity_missing")]
    for identity, merchant, status, reason in refusals:
        with pytest.raises(DomainError) as info:
            POLICY.check(identity, merchant)
        assert (info.value.status, info.value.reason) == (status, reason)
    with pytest.raises(TypeError):
        IdentityPolicy({"svc": "m_1"})


def test_request_id_from_metadata() -> None:
    """The client's id is used when well-formed; otherwise each call gets a fresh one."""
    assert request_id_from((("x-request-id", "abc_DEF-1"),)) == "abc_DEF-1"
    fresh = {request_id_from(m) for m in (None, (), (("x-request-id", "x" * 65),),
                                         (("x-request-id", "é"),), (("other", "abc"),))}
    assert len(fresh) == 5 and all(REQUEST_ID.fullmatch(r) for r in fresh)


def test_current_identity_outside_an_rpc_is_an_error() -> None:
    """Reading the caller outside a served RPC is a RuntimeError, not a silent default."""
    with pytest.raises(RuntimeError):
        current_identity()


def test_listen_port_zero_binds_a_real_port(certs: Certs) -> None:
    """`listen` with port 0 reports the port actually bound, and a second server cannot
    take a port that is in use (OSError, no silently shared SO_REUSEPORT listener)."""
    async def main() -> None:
        async with serving(certs, Probe()) as server:
            assert server.port > 0
            with pytest.raises(OSError):
                build_server([], listen=f"127.0.0.1:{server.port}", tls=certs.server,
                             identity_policy=POLICY, rate_limiter=None)
    asyncio.run(main())
