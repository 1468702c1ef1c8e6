"""Test helper: the whole gateway (:class:`gateway.stack.Stack`) on free loopback ports,
and typed gRPC clients for it over mutual TLS.

:class:`BackgroundStack` runs a stack on its own event loop in a thread, so one stack
can serve a whole test module while each test drives it from ``asyncio.run``; work on
the stack's own objects (vault, store) is handed to its loop with :meth:`~BackgroundStack.call`.
:class:`Payments` wraps the generated (untyped) ``PaymentsStub`` with typed methods that
send the ``idempotency-key`` metadata.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import grpc
import jwe_encoder
from paygate.v1 import payments_pb2, payments_pb2_grpc

from gateway.api.server import client_channel
from gateway.config import GatewayConfig, load_config
from gateway.devcerts import write_dev_certs
from gateway.merchants import DEMO
from gateway.pki import Authority, Credentials
from gateway.stack import Stack

T = TypeVar("T")

#: A safety net against hangs for every call; never asserted on.
TIMEOUT: Final = 30.0
SERVICE: Final = "paygate.v1.Payments"


def merchants_toml(merchants: Sequence[Mapping[str, Any]] = DEMO["merchants"]) -> str:
    """``[[merchants]]`` tables for ``merchants`` (the demo ones by default)."""
    lines: list[str] = []
    for merchant in merchants:
        lines.append("[[merchants]]")
        for key, value in merchant.items():
            if isinstance(value, list):
                rendered = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            else:
                rendered = f'"{value}"'
            lines.append(f"{key} = {rendered}")
        lines.append("")
    return "\n".join(lines)


def stack_config(data_dir: Path, *, toml: str | None = None,
                 **settings: str) -> GatewayConfig:
    """A configuration on free ports under ``data_dir``: the TOML text ``toml`` (if any)
    written to ``data_dir/paygate.toml``, then ``PAYGATE_<NAME>`` for each setting."""
    data_dir.mkdir(parents=True, exist_ok=True)
    environ = {"PAYGATE_DATA_DIR": str(data_dir), "PAYGATE_GRPC_LISTEN": "127.0.0.1:0",
               "PAYGATE_HTTP_LISTEN": "127.0.0.1:0", "PAYGATE_NETWORK_PORT": "0",
               "PAYGATE_GRPC_GRACE_SECONDS": "1"}
    environ.update({f"PAYGATE_{name.upper()}": value for name, value in settings.items()})
    path = None
    if toml is not None:
        path = data_dir / "paygate.toml"
        path.write_text(toml)
    return load_config(path, environ=environ)


def issue_client_certs(data_dir: Path, *names: str) -> dict[str, Credentials]:
    """Client certificates for ``names`` from the stack's dev CA (created now if absent,
    so that the stack finds and keeps it)."""
    pki = data_dir / "pki"
    write_dev_certs(pki)
    authority = Authority.load(pki)
    return {name: authority.write(pki, name) for name in names}


class BackgroundStack:
    """A :class:`Stack` running on an event loop of its own, in a daemon thread."""

    def __init__(self, config: GatewayConfig) -> None:
        self.stack = Stack(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="stack-loop",
                                        daemon=True)

    def start(self) -> BackgroundStack:
        self._thread.start()
        self.submit(self.stack.__aenter__()).result(TIMEOUT)
        return self

    def close(self) -> None:
        try:
            self.submit(self.stack.__aexit__(None, None, None)).result(TIMEOUT)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TIMEOUT)
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the stack's loop and await its result from another loop."""
        return await asyncio.wrap_future(self.submit(coro))


def metadata(key: str | None) -> tuple[tuple[str, str], ...]:
    return (("idempotency-key", key),) if key is not None else ()


class Payments:
    """Typed calls of ``paygate.v1.Payments`` over one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stub = payments_pb2_grpc.PaymentsStub(channel)  # type: ignore[no-untyped-call]

    async def create(self, request: payments_pb2.CreatePaymentIntentRequest,
                     key: str | None = None) -> payments_pb2.PaymentIntent:
        result: payments_pb2.PaymentIntent = await self.stub.CreatePaymentIntent(
            request, metadata=metadata(key), timeout=TIMEOUT)
        return result

    async def confirm(self, intent_id: str, token: str,
                      key: str | None = None) -> payments_pb2.PaymentIntent:
        result: payments_pb2.PaymentIntent = await self.stub.ConfirmPaymentIntent(
            payments_pb2.ConfirmPaymentIntentRequest(id=intent_id, payment_method=token),
            metadata=metadata(key), timeout=TIMEOUT)
        return result

    async def capture(self, intent_id: str, amount: int = 0,
                      key: str | None = None) -> payments_pb2.PaymentIntent:
        result: payments_pb2.PaymentIntent = await self.stub.CapturePaymentIntent(
            payments_pb2.CapturePaymentIntentRequest(id=intent_id, amount_to_capture=amount),
            metadata=metadata(key), timeout=TIMEOUT)
        return result

    async def cancel(self, intent_id: str, reason: str = "",
                     key: str | None = None) -> payments_pb2.PaymentIntent:
        result: payments_pb2.PaymentIntent = await self.stub.CancelPaymentIntent(
            payments_pb2.CancelPaymentIntentRequest(id=intent_id, cancellation_reason=reason),
            metadata=metadata(key), timeout=TIMEOUT)
        return result

    async def get(self, intent_id: str) -> payments_pb2.PaymentIntent:
        result: payments_pb2.PaymentIntent = await self.stub.GetPaymentIntent(
            payments_pb2.GetPaymentIntentRequest(id=intent_id), timeout=TIMEOUT)
        return result

    async def list(self, request: payments_pb2.ListPaymentIntentsRequest
                   ) -> payments_pb2.ListPaymentIntentsResponse:
        result: payments_pb2.ListPaymentIntentsResponse = await self.stub.ListPaymentIntents(
            request, timeout=TIMEOUT)
        return result

    def watch(self, intent_id: str) -> Any:
        """The streaming call (``await call.read()`` for each message; ``call.cancel()``)."""
        return self.stub.WatchPaymentIntent(
            payments_pb2.WatchPaymentIntentRequest(id=intent_id), timeout=TIMEOUT)

    async def refund(self, intent_id: str, amount: int, reason: str = "",
                     key: str | None = None) -> payments_pb2.Refund:
        result: payments_pb2.Refund = await self.stub.CreateRefund(
            payments_pb2.CreateRefundRequest(payment_intent=intent_id, amount=amount,
                                             reason=reason),
            metadata=metadata(key), timeout=TIMEOUT)
        return result

    async def get_refund(self, refund_id: str) -> payments_pb2.Refund:
        result: payments_pb2.Refund = await self.stub.GetRefund(
            payments_pb2.GetRefundRequest(id=refund_id), timeout=TIMEOUT)
        return result

    async def raw(self, method: str, request: Any, key: str | None = None) -> bytes:
        """The response of ``method`` exactly as it came over the wire (not parsed)."""
        call = self.channel.unary_unary(f"/{SERVICE}/{method}",
                                        request_serializer=_serialize,
                                        response_deserializer=None)
        data: bytes = await call(request, metadata=metadata(key), timeout=TIMEOUT)
        return data


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


@asynccontextmanager
async def payments(target: str, creds: Credentials) -> AsyncIterator[Payments]:
    """A :class:`Payments` client on a mutual-TLS channel presenting ``creds``."""
    async with client_channel(target, creds) as channel:
        yield Payments(channel)


async def tokenize_over_http(base_url: str, pan: str, publishable_key: str = "pk_test_acme",
                             **card: Any) -> dict[str, Any]:
    """Tokenize ``pan`` the way the iframe SDK does: fetch ``/v1/keys``, encrypt the card
    to the first key (JWE), ``POST /v1/tokens``; the JSON answer (``token``, ...)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/v1/keys") as response:
            assert response.status == 200, await response.text()
            jwk = (await response.json(content_type=None))["keys"][0]
        body = {"encrypted_card": jwe_encoder.encrypt_card(jwk, number=pan, **card)}
        async with http.post(f"{base_url}/v1/tokens", json=body,
                             headers={"Authorization": f"Bearer {publishable_key}"}) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = await response.json(content_type=None)
            return answer
