"""The gRPC server of the payments API: mutual TLS, caller admission, errors, health.

:func:`build_server` assembles a ``grpc.aio`` server that only accepts clients with a
certificate from the internal CA, runs every RPC through :class:`CallInterceptor`, and
adds the standard ``grpc.health.v1.Health`` service and server reflection.

:class:`CallInterceptor` wraps each method's behaviour so that, with the call's context
at hand, it:

1. takes the client's ``x-request-id`` (if well-formed) or makes one, echoes it in the
   initial metadata and binds it, with the caller identity, to structlog's contextvars
   (every log line of the call carries ``request_id`` and ``identity``);
2. admits the caller (:meth:`IdentityPolicy.admit`) and counts the call against its rate
   limit (RESOURCE_EXHAUSTED ``rate_limited``, metadata ``retry_after_ms``; the health
   and reflection services are not limited), then binds the
   :class:`~gateway.api.context.Caller` that servicers read;
3. turns a raised :class:`~gateway.payments.errors.DomainError` into its status, any other
   exception into INTERNAL ``internal`` (logged by type and location, never its text);
   a request whose bytes are not a valid message of the method's type is INVALID_ARGUMENT
   ``malformed_request`` (the bytes are neither echoed nor logged);
4. logs one ``rpc`` line per call: method, status code, duration in ms (no payloads).

Servicers must not send initial metadata themselves (the interceptor already has).
"""

from __future__ import annotations

import inspect
import math
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Final, NoReturn, Protocol

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc_health.v1 import (  # type: ignore[import-untyped]
    health,
    health_pb2,
    health_pb2_grpc,
)
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]

from gateway import metrics
from gateway.api.context import (
    REQUEST_ID_HEADER,
    Caller,
    bind_caller,
    error_code_name,
    error_status,
    request_id_from,
)
from gateway.api.identity import IdentityPolicy, identity_from_auth_context
from gateway.api.ratelimit import RateLimiter
from gateway.logging import get_logger
from gateway.payments.errors import DomainError
from gateway.pki import Credentials

__all__ = [
    "HEALTH_SERVICE", "PAYMENTS_SERVICE", "REFLECTION_SERVICE", "UNLIMITED_SERVICES",
    "AddServicer", "CallInterceptor", "RunningServer", "build_server", "client_channel",
    "server_credentials",
]

PAYMENTS_SERVICE: Final = "paygate.v1.Payments"
HEALTH_SERVICE: Final[str] = health.SERVICE_NAME
REFLECTION_SERVICE: Final[str] = reflection.SERVICE_NAME
#: Services exempt from rate limiting (cheap; probes must not starve behind a busy caller).
UNLIMITED_SERVICES: Final = frozenset({HEALTH_SERVICE, REFLECTION_SERVICE})

#: A generated ``add_<Service>Servicer_to_server(servicer, server)`` function.
AddServicer = Callable[[Any, Any], None]

_log = get_logger("gateway.api")


class _MalformedRequest:
    """Stands for a request whose bytes did not parse: the wrapped request deserializer
    returns it instead of raising, so the wrapped behaviour refuses the call inside the
    interceptor's scope (logged, counted and answered with an ``ErrorInfo``)."""


_MALFORMED: Final = _MalformedRequest()


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserializer``, returning :data:`_MALFORMED` for bytes that are not a valid message."""
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _MALFORMED
    return deserialize


def _check_request(request: Any) -> None:
    """Raise INVALID_ARGUMENT ``malformed_request`` if ``request`` did not parse."""
    if request is _MALFORMED:
        raise DomainError("INVALID_ARGUMENT", "malformed_request",
                          "the request is not a valid protobuf message of the method's type")


class ServicerContext(Protocol):
    """The part of ``grpc.aio.ServicerContext`` the interceptor uses."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None: ...

    def auth_context(self) -> Mapping[str, Sequence[bytes]]: ...

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]]) -> None: ...

    async def abort_with_status(self, status: grpc.Status) -> NoReturn: ...

    def code(self) -> grpc.StatusCode | None: ...


def _service_of(method: str) -> str:
    """``"pkg.Service"`` of a full method name ``"/pkg.Service/Method"``."""
    parts = method.split("/")
    return parts[1] if len(parts) == 3 else ""


def _code_name(code: grpc.StatusCode | None, default: str = "OK") -> str:
    return default if code is None else str(code.name)


def _log_internal(method: str, exc: BaseException) -> None:
    """Log an unexpected exception by type and location only (its text may carry data)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    _log.error("rpc_internal_error", method=method, error_type=type(exc).__qualname__,
               where=where)


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """Admits, rate-limits, logs and translates the errors of every RPC (module docstring)."""

    def __init__(self, policy: IdentityPolicy, limiter: RateLimiter | None = None) -> None:
        self._policy = policy
        self._limiter = limiter

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: gRPC answers UNIMPLEMENTED
        method = str(handler_call_details.method)
        field = (("stream_" if handler.request_streaming else "unary_")
                 + ("stream" if handler.response_streaming else "unary"))
        inner = getattr(handler, field)
        if handler.response_streaming and not inspect.iscoroutinefunction(inner):
            wrapped = self._wrap_generator(method, inner)
        else:
            wrapped = self._wrap_coroutine(method, inner)
        replaced: dict[str, Any] = {field: wrapped}
        if not handler.request_streaming and handler.request_deserializer is not None:
            replaced["request_deserializer"] = _tolerant(handler.request_deserializer)
        return handler._replace(**replaced)

    def _wrap_coroutine(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a behaviour that returns its response (or writes with ``context.write``)."""
        async def behavior(request: Any, context: Any) -> Any:
            async with self._scope(method, context):
                _check_request(request)
                result = inner(request, context)
                if inspect.isawaitable(result):
                    result = await result
            return result
        return behavior

    def _wrap_generator(self, method: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a behaviour that yields its responses (async or plain generator)."""
        async def behavior(request: Any, context: Any) -> AsyncIterator[Any]:
            async with self._scope(method, context):
                _check_request(request)
                responses = inner(request, context)
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                else:
                    for response in responses:
                        yield response
        return behavior

    def _admit(self, method: str, identity: str, request_id: str) -> Caller:
        merchants = self._policy.admit(identity)
        limiter = self._limiter
        if (limiter is not None and _service_of(method) not in UNLIMITED_SERVICES
                and not limiter.take(identity)):
            retry_ms = max(1, math.ceil(limiter.retry_after(identity) * 1000))
            raise DomainError("RESOURCE_EXHAUSTED", "rate_limited",
                              "too many requests; retry later",
                              {"retry_after_ms": str(retry_ms)})
        return Caller(identity=identity, request_id=request_id, merchants=merchants)

    @asynccontextmanager
    async def _scope(self, method: str, context: ServicerContext) -> AsyncIterator[None]:
        started = time.perf_counter()
        request_id = request_id_from(context.invocation_metadata())
        identity = identity_from_auth_context(context.auth_context()) or ""
        code = "UNKNOWN"
        status: grpc.Status | None = None
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id,
                                                        identity=identity)
        try:
            try:
                await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))
                with bind_caller(self._admit(method, identity, request_id)):
                    yield
                code = _code_name(context.code())
            except grpc.aio.AbortError:  # the servicer aborted: its status stands
                code = _code_name(context.code(), "UNKNOWN")
                raise
            except Exception as exc:
                code = error_code_name(exc)
                if code == "INTERNAL":
                    _log_internal(method, exc)
                status = error_status(exc)
            except BaseException:  # cancelled by the client, its deadline or shutdown
                code = "CANCELLED"
                raise
            if status is not None:
                # Outside the except block: the AbortError does not chain the original
                # exception (whose text and frames may hold data) for anyone to log.
                await context.abort_with_status(status)
        finally:
            elapsed = time.perf_counter() - started
            _log.info("rpc", method=method, code=code, duration_ms=round(elapsed * 1000, 3))
            metrics.observe_rpc(method, code, elapsed)
            with suppress(ValueError):  # reset from another context: nothing to undo there
                structlog.contextvars.reset_contextvars(**tokens)


class _Recorder:
    """Stands in for the server while an ``add_*_to_server`` function registers a servicer,
    noting the names of the services it registers."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.names: list[str] = []

    def _note(self, name: str) -> None:
        if name not in self.names:
            self.names.append(name)

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        for handler in handlers:
            service_name = getattr(handler, "service_name", None)
            if callable(service_name):
                self._note(str(service_name()))
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, name: str, handlers: Mapping[str, Any]) -> None:
        self._note(name)
        self._server.add_registered_method_handlers(name, handlers)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._server, attr)


class RunningServer:
    """A built server: :meth:`start`, then :meth:`stop` (health goes NOT_SERVING first)."""

    def __init__(self, server: Any, health_servicer: Any, services: tuple[str, ...],
                 port: int) -> None:
        self._server = server
        self._health = health_servicer
        #: The application services registered (health and reflection not included).
        self.services = services
        #: The bound port (the real one when ``listen`` asked for port 0).
        self.port = port

    async def start(self) -> None:
        """Start serving; health is SERVING for ``""`` and every registered service."""
        await self._server.start()
        for name in ("", *self.services):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING for all, then refuse new RPCs and let in-flight ones finish
        for up to ``grace`` seconds (then they are cancelled)."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace)

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self._server.wait_for_termination()


def server_credentials(tls: Credentials) -> grpc.ServerCredentials:
    """TLS server credentials that require a client certificate signed by ``tls.ca``."""
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.ca.read_bytes(),
        require_client_auth=True,
    )


def build_server(
    servicers: Sequence[tuple[AddServicer, object]],
    *,
    listen: str,
    tls: Credentials,
    identity_policy: IdentityPolicy,
    rate_limiter: RateLimiter | None,
    max_concurrent_rpcs: int | None = None,
) -> RunningServer:
    """A mutual-TLS ``grpc.aio`` server for ``servicers``, bound to ``listen``, not started.

    ``servicers`` are ``(add_fn, servicer)`` pairs such as
    ``(payments_pb2_grpc.add_PaymentsServicer_to_server, PaymentsService(...))``. Call it
    from the event loop that will run the server. ``listen`` may use port 0
    (``"127.0.0.1:0"``): :attr:`RunningServer.port` is the one bound. ``SO_REUSEPORT`` is
    off, so a port already in use is an :class:`OSError` rather than a silently shared
    listener.
    """
    server = grpc.aio.server(
        interceptors=[CallInterceptor(identity_policy, rate_limiter)],
        options=[("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    recorder = _Recorder(server)
    for add, servicer in servicers:
        add(servicer, recorder)
    services = tuple(n for n in recorder.names if n not in UNLIMITED_SERVICES)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*services, HEALTH_SERVICE, REFLECTION_SERVICE), server)
    try:
        port = server.add_secure_port(listen, server_credentials(tls))
    except RuntimeError as exc:  # grpc's "Failed to bind to address ..."
        raise OSError(f"cannot listen on {listen!r}") from exc
    if not port:
        raise OSError(f"cannot listen on {listen!r}")
    return RunningServer(server, health_servicer, services, int(port))


def client_channel(target: str, creds: Credentials,
                   server_name: str | None = None) -> grpc.aio.Channel:
    """A mutual-TLS ``grpc.aio`` channel presenting ``creds.cert`` and trusting ``creds.ca``.

    The server certificate is checked against ``target``'s host; ``server_name`` checks it
    against another name instead (``grpc.ssl_target_name_override``, for tests and tools).
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=creds.ca.read_bytes(),
        private_key=creds.key.read_bytes(),
        certificate_chain=creds.cert.read_bytes(),
    )
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.aio.secure_channel(target, credentials, options=options)
