"""Demo traffic: scripted payments through the public interfaces of a running stack,
checked against netsim's ledger (the network's truth).

Each scenario tokenizes its card the way the iframe SDK does (a compact JWE to
``POST /v1/tokens`` with the merchant's publishable key), then drives the
payment over gRPC with mutual TLS as an internal service would, each mutating
call with its own ``idempotency-key``. Afterwards every intent is compared with
what netsim recorded for its authorization: held, captured, refunded, released.

The "lost response" scenario pays with the test card whose 0110 netsim never
sends: confirm answers PROCESSING, and the stack's reconciler reverses the
authorization (0420); the scenario waits (bounded) until the intent is back at
REQUIRES_PAYMENT_METHOD with ``network_timeout`` and netsim released the hold.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from paygate.v1 import payments_pb2, payments_pb2_grpc

from codec.errors import mask_pan
from gateway.api.server import client_channel
from gateway.jwe import encrypt_compact
from gateway.payments.model import AttemptKind, AttemptStatus
from gateway.stack import Stack

pb = payments_pb2
STATUS = {v.number: v.name.removeprefix("PAYMENT_INTENT_STATUS_")
          for v in pb.PaymentIntentStatus.DESCRIPTOR.values}


@dataclass
class Row:
    scenario: str
    card: str
    amount: int
    status: str = ""
    detail: str = ""
    network: str = ""
    agrees: bool = False
    intent_id: str = ""


class Client:
    """An internal service's view: gRPC stubs plus the HTTP edge for tokens."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession, stub: Any) -> None:
        assert stack.info is not None
        self.info = stack.info
        self.http = http
        self.stub = stub
        self._jwk: dict[str, Any] | None = None

    async def token(self, pan: str) -> str:
        if self._jwk is None:
            async with self.http.get(self.info.http + "/v1/keys") as response:
                self._jwk = (await response.json(content_type=None))["keys"][0]
        cvc = "1234" if pan.startswith(("34", "37")) else "123"   # Amex: 4 digits
        card = json.dumps({"number": pan, "exp_month": 12, "exp_year": 2034, "cvc": cvc,
                           "iat": int(time.time())}).encode()
        async with self.http.post(
                self.info.http + "/v1/tokens",
                json={"encrypted_card": encrypt_compact(card, self._jwk)},
                headers={"Authorization": f"Bearer {self.info.merchant['publishable_key']}"},
        ) as response:
            body = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"tokenization refused: {body.get('code')}")
            return str(body["token"])

    async def call(self, method: str, request: Any) -> Any:
        key = [("idempotency-key", uuid.uuid4().hex)] if method != "GetPaymentIntent" else []
        return await getattr(self.stub, method)(request, metadata=key)

    async def create(self, amount: int, capture: pb.CaptureMethod) -> Any:
        return await self.call("CreatePaymentIntent", pb.CreatePaymentIntentRequest(
            merchant_id=self.info.merchant["id"], amount=amount, currency="eur",
            capture_method=capture, description="paygate demo"))


async def _approved_manual(client: Client, row: Row) -> Any:
    intent = await client.create(row.amount, pb.CAPTURE_METHOD_MANUAL)
    intent = await client.call("ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
        id=intent.id, payment_method=await client.token("4242424242424242")))
    return await client.call("CapturePaymentIntent",
                             pb.CapturePaymentIntentRequest(id=intent.id))


async def _automatic(client: Client, row: Row) -> Any:
    intent = await client.create(row.amount, pb.CAPTURE_METHOD_AUTOMATIC)
    return await client.call("ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
        id=intent.id, payment_method=await client.token("5555555555554444")))


def _declined(pan: str) -> Callable[[Client, Row], Awaitable[Any]]:
    async def scenario(client: Client, row: Row) -> Any:
        intent = await client.create(row.amount, pb.CAPTURE_METHOD_MANUAL)
        return await client.call("ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
            id=intent.id, payment_method=await client.token(pan)))
    return scenario


async def _partial_capture_refund(client: Client, row: Row) -> Any:
    intent = await client.create(row.amount, pb.CAPTURE_METHOD_MANUAL)
    intent = await client.call("ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
        id=intent.id, payment_method=await client.token("378282246310005")))
    intent = await client.call("CapturePaymentIntent", pb.CapturePaymentIntentRequest(
        id=intent.id, amount_to_capture=row.amount * 6 // 10))
    await client.call("CreateRefund", pb.CreateRefundRequest(
        payment_intent=intent.id, amount=row.amount // 10, reason="requested_by_customer"))
    return await client.call("GetPaymentIntent", pb.GetPaymentIntentRequest(id=intent.id))


async def _voided(client: Client, row: Row) -> Any:
    intent = await client.create(row.amount, pb.CAPTURE_METHOD_MANUAL)
    intent = await client.call("ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
        id=intent.id, payment_method=await client.token("6011111111111117")))
    return await client.call("CancelPaymentIntent", pb.CancelPaymentIntentRequest(
        id=intent.id, cancellation_reason="requested_by_customer"))


#: How long the lost-response scenario waits for the reconciler to resolve it.
RECONCILE_WAIT = 10.0
LOST_RESPONSE_CARD = "4000000000000259"


async def _lost_response(client: Client, row: Row) -> Any:
    intent = await client.create(row.amount, pb.CAPTURE_METHOD_MANUAL)
    intent = await client.call("ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
        id=intent.id, payment_method=await client.token(LOST_RESPONSE_CARD)))
    end = time.monotonic() + RECONCILE_WAIT
    while STATUS.get(intent.status) == "PROCESSING" and time.monotonic() < end:
        await asyncio.sleep(0.1)
        intent = await client.call("GetPaymentIntent", pb.GetPaymentIntentRequest(id=intent.id))
    return intent


SCENARIOS: list[tuple[str, str, int, Callable[[Client, Row], Awaitable[Any]]]] = [
    ("approved, captured", "4242424242424242", 4999, _approved_manual),
    ("automatic capture", "5555555555554444", 1250, _automatic),
    ("declined (05)", "4000000000000002", 3000, _declined("4000000000000002")),
    ("insufficient funds", "4000000000009995", 8000, _declined("4000000000009995")),
    ("partial capture, refund", "378282246310005", 10000, _partial_capture_refund),
    ("voided", "6011111111111117", 2200, _voided),
    ("lost response, reversed", LOST_RESPONSE_CARD, 2500, _lost_response),
]


async def _check(stack: Stack, row: Row, intent: Any) -> None:
    """Compare the intent with netsim's ledger entry for its authorization."""
    assert stack.store is not None and stack.ledger is not None
    attempts = await stack.store.attempts_for_intent(intent.id)
    auths = [a for a in attempts if a.kind is AttemptKind.AUTHORIZATION]
    if not auths:
        row.network = "no authorization"
        return
    auth = auths[-1]
    record = stack.ledger.find_authorization(auth.terminal_id, auth.stan)
    if record is None:
        row.network = "not at the network"
        return
    row.network = (f"{record.response_code} held {record.held} captured {record.captured} "
                   f"refunded {record.refunded} released {record.reversed}")
    if auth.status is AttemptStatus.DECLINED:
        row.agrees = record.response_code == auth.response_code and record.held == 0
        return
    if auth.status is AttemptStatus.REVERSED:   # the reconciler's reversal of a lost reply
        error = intent.last_payment_error
        row.agrees = (STATUS.get(intent.status) == "REQUIRES_PAYMENT_METHOD"
                      and error.code == "network_timeout" and record.response_code == "00"
                      and record.held == 0 and record.reversed == auth.amount)
        return
    row.agrees = (record.response_code == "00" and record.held == intent.amount_capturable
                  and record.captured == intent.amount_received
                  and record.refunded == intent.amount_refunded)


async def run_traffic(stack: Stack) -> list[Row]:
    """Run every scenario against ``stack`` and check each against the ledger."""
    assert stack.info is not None
    rows = []
    async with aiohttp.ClientSession() as http, \
            client_channel(stack.info.grpc, stack.info.client_credentials()) as channel:
        client = Client(stack, http, payments_pb2_grpc.PaymentsStub(channel))  # type: ignore[no-untyped-call]
        for name, pan, amount, scenario in SCENARIOS:
            row = Row(name, mask_pan(pan), amount)
            try:
                intent = await scenario(client, row)
            except Exception as exc:
                row.status, row.detail = "ERROR", f"{type(exc).__name__}: {str(exc)[:60]}"
                rows.append(row)
                continue
            row.intent_id = intent.id
            row.status = STATUS.get(intent.status, str(intent.status))
            error = intent.last_payment_error
            row.detail = (error.code + (f"/{error.decline_code}" if error.decline_code else "")
                          + (f" ({error.network_response_code})"
                             if error.network_response_code else "")
                          if error.code else
                          f"received {intent.amount_received} refunded {intent.amount_refunded}")
            await _check(stack, row, intent)
            rows.append(row)
    return rows


def render(rows: list[Row]) -> str:
    """The table people read."""
    head = (f"{'scenario':25} {'card':17} {'amount':>7}  {'status':24} {'detail':34} "
            f"{'netsim ledger':48} agrees")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.scenario:25} {r.card:17} {r.amount:>7}  {r.status:24} "
                     f"{r.detail:34} {r.network:48} {'yes' if r.agrees else 'NO'}")
    return "\n".join(lines)
