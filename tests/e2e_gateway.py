"""The shared setup of the end-to-end gRPC tests (test_e2e_grpc*.py): the whole gateway
(``gateway.stack.Stack``: netsim, store, vault, payments service, gRPC server, HTTP edge)
on free loopback ports, driven with the stubs generated from ``proto/paygate/v1``.

Each test module runs one stack (on its own event loop, in a thread). Its configuration
lets ``checkout-service`` act for ``acme`` only, ``globex-service`` for ``globex``,
``reports-service`` for the two merchants only the list tests use, and
``limited-service`` for ``acme`` with a burst of 3 and a rate that never refills within
a test run; ``intruder`` has a certificate of the same CA and no entry at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import grpc_stack
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_stack import BackgroundStack, Payments
from paygate.v1 import payments_pb2 as pb

from gateway.cards import Card, brand_of
from gateway.payments.convert import ERROR_DOMAIN, error_info_from
from gateway.payments.model import Attempt, AttemptKind
from gateway.pki import Credentials
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


def running_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A module's stack (a fixture body: ``yield from running_gateway(...)``)."""
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
