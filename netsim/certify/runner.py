"""The runner behind ``paygate certify``: a suite against a gateway, case by case.

:func:`run_suite` starts a :class:`~netsim.certify.host.ReplayHost` on a loopback
mutual-TLS port (the stack's dev PKI), then a :class:`gateway.stack.Stack` without
its embedded netsim, pointed at it, with certification settings (:data:`SETTINGS`:
short network deadline, quick reconciler backoff, an echo test after 2 idle seconds)
under any ``PAYGATE_*`` the caller passes. The sign-on the gateway sends when it
connects is checked against the suite's ``connect`` exchange (reported as the case
``connect``). Then each case, in order, with a fresh script on the host: the card is
tokenized (``Tokens.CreateToken`` with a JWE built from the edge's ``/v1/keys``), the
intent created and confirmed, the actions carried out, all through the public gRPC
API; the runner waits until every scripted exchange came (or the case's timeout),
polls ``GetPaymentIntent`` until the outcome is the expected one (or the timeout),
and listens a little longer (:data:`QUIET`) for messages the case does not expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from paygate.v1 import payments_pb2, payments_pb2_grpc, tokens_pb2, tokens_pb2_grpc

from gateway.api.server import client_channel
from gateway.config import load_config
from gateway.devcerts import write_dev_certs
from gateway.jwe import encrypt_compact
from gateway.pki import Credentials, server_context
from gateway.stack import Stack, StackInfo
from netsim.certify.host import ReplayHost, Script
from netsim.certify.matchers import Mismatch
from netsim.certify.script import Action, Case, Outcome, Suite

__all__ = ["QUIET", "SETTINGS", "CaseResult", "Client", "certify_config", "perform",
           "run_suite"]

#: The configuration a certification run gives the gateway (``PAYGATE_*``; the caller's
#: settings win).
SETTINGS: Mapping[str, str] = {
    "PAYGATE_NETWORK_DEADLINE_SECONDS": "1.0",
    "PAYGATE_NETWORK_ECHO_INTERVAL_SECONDS": "2.0",
    "PAYGATE_RECONCILER_INTERVAL_SECONDS": "0.05",
    "PAYGATE_RECONCILER_BACKOFF_INITIAL_SECONDS": "0.1",
    "PAYGATE_RECONCILER_BACKOFF_CAP_SECONDS": "0.4",
    "PAYGATE_RECONCILER_BACKOFF_JITTER": "0",
    "PAYGATE_GRPC_GRACE_SECONDS": "1",
    "PAYGATE_LOGGING_LEVEL": "error",
}
#: Seconds a case keeps listening after its outcome, for messages it does not expect.
QUIET = 0.3
_POLL = 0.05
_RPC_TIMEOUT = 10.0
_CONNECT_TIMEOUT = 15.0
_EXTERNAL_TIMEOUT = 120.0  # for the user to start `paygate up --no-netsim`
_STATUS = {v.number: v.name.removeprefix("PAYMENT_INTENT_STATUS_").lower()
           for v in payments_pb2.PaymentIntentStatus.DESCRIPTOR.values}


@dataclass
class CaseResult:
    """One case's verdict: passed when it has no mismatch."""

    name: str
    description: str
    seconds: float
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches


class Client:
    """The harness's view of the gateway: its public gRPC API (and the edge's JWKS)."""

    def __init__(self, channel: grpc.aio.Channel, http: str, merchant: str) -> None:
        self.payments = payments_pb2_grpc.PaymentsStub(channel)  # type: ignore[no-untyped-call]
        self.tokens = tokens_pb2_grpc.TokensStub(channel)  # type: ignore[no-untyped-call]
        self.http = http
        self.merchant = merchant
        self._jwk: dict[str, Any] | None = None

    async def call(self, stub: Any, method: str, request: Any) -> Any:
        key = () if method.startswith("Get") else (("idempotency-key", uuid.uuid4().hex),)
        return await getattr(stub, method)(request, metadata=key, timeout=_RPC_TIMEOUT)

    async def token(self, case: Case, merchant: str) -> str:
        if self._jwk is None:
            async with aiohttp.ClientSession() as session, \
                    session.get(self.http + "/v1/keys") as response:
                self._jwk = (await response.json(content_type=None))["keys"][0]
        p = case.payment
        card = json.dumps({"number": p.card, "exp_month": p.exp_month, "exp_year": p.exp_year,
                           "cvc": p.cvc, "iat": int(time.time()),
                           "nonce": uuid.uuid4().hex}).encode()
        token = await self.call(self.tokens, "CreateToken", tokens_pb2.CreateTokenRequest(
            merchant_id=merchant, encrypted_card=encrypt_compact(card, self._jwk)))
        return str(token.token)


def _rpc_error(exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    return str(code.name) if code is not None else "UNKNOWN"


def _outcome_mismatches(case: Case, intent: Any) -> list[Mismatch]:
    want: Outcome = case.outcome
    out: list[Mismatch] = []

    def check(name: str, expected: object, actual: object) -> None:
        if expected != actual:
            out.append(Mismatch(case.name, -1, "", name, repr(expected), repr(actual)))

    if want.status:
        check("status", want.status, _STATUS.get(intent.status, "?"))
    for key, value in want.error.items():
        check(f"last_payment_error.{key}", value, getattr(intent.last_payment_error, key))
    for key, amount in want.amounts.items():
        check(key, amount, getattr(intent, key))
    return out


async def _act(client: Client, case: Case, intent_id: str, action: Action) -> list[Mismatch]:
    pb = payments_pb2
    try:
        if action.kind == "wait":
            await asyncio.sleep(action.seconds)
        elif action.kind == "capture":
            await client.call(client.payments, "CapturePaymentIntent",
                              pb.CapturePaymentIntentRequest(id=intent_id,
                                                             amount_to_capture=action.amount))
        elif action.kind == "cancel":
            await client.call(client.payments, "CancelPaymentIntent",
                              pb.CancelPaymentIntentRequest(id=intent_id))
        elif action.kind == "refund":
            await client.call(client.payments, "CreateRefund",
                              pb.CreateRefundRequest(payment_intent=intent_id,
                                                     amount=action.amount))
    except grpc.aio.AioRpcError as exc:
        if _rpc_error(exc) != action.expect_error:
            return [Mismatch(case.name, -1, "", f"action {action.kind}",
                             repr(action.expect_error or "OK"),
                             f"{_rpc_error(exc)} ({exc.details()})")]
        return []
    if action.expect_error:
        return [Mismatch(case.name, -1, "", f"action {action.kind}",
                         repr(action.expect_error), "'OK'")]
    return []


async def perform(client: Client, case: Case) -> tuple[str, list[Mismatch]]:
    """Make ``case``'s payment and carry out its actions through the gRPC API; return
    the intent's id ("" if it could not be made) and the mismatches on the way."""
    merchant = case.payment.merchant or client.merchant
    pb = payments_pb2
    try:
        token = await client.token(case, merchant)
        intent = await client.call(client.payments, "CreatePaymentIntent",
                                   pb.CreatePaymentIntentRequest(
                                       merchant_id=merchant, amount=case.payment.amount,
                                       currency=case.payment.currency,
                                       capture_method=pb.CAPTURE_METHOD_AUTOMATIC
                                       if case.payment.capture_method == "automatic"
                                       else pb.CAPTURE_METHOD_MANUAL,
                                       description=f"certify {case.name}"))
        confirmed = await client.call(client.payments, "ConfirmPaymentIntent",
                                      pb.ConfirmPaymentIntentRequest(id=intent.id,
                                                                     payment_method=token))
    except grpc.aio.AioRpcError as exc:
        return "", [Mismatch(case.name, -1, "", "payment", "'OK'",
                             f"{_rpc_error(exc)} ({exc.details()})")]
    extra: list[Mismatch] = []
    got = _STATUS.get(confirmed.status, "?")
    if case.outcome.confirm_status and got != case.outcome.confirm_status:
        extra.append(Mismatch(case.name, -1, "", "confirm_status",
                              repr(case.outcome.confirm_status), repr(got)))
    for action in case.actions:
        extra += await _act(client, case, intent.id, action)
    return str(intent.id), extra


async def _run_case(client: Client, host: ReplayHost, case: Case) -> CaseResult:
    started = time.monotonic()
    end = started + case.timeout
    script = host.play(case.name, case.exchanges)
    result = CaseResult(case.name, case.description, 0.0)
    intent_id, extra = await perform(client, case)
    if not intent_id:
        result.mismatches = [*script.mismatches, *extra]
        result.seconds = time.monotonic() - started
        return result
    await _wait(script, end)
    pb = payments_pb2
    while True:
        latest = await client.call(client.payments, "GetPaymentIntent",
                                   pb.GetPaymentIntentRequest(id=intent_id))
        if not _outcome_mismatches(case, latest) or time.monotonic() >= end:
            break
        await asyncio.sleep(_POLL)
    await asyncio.sleep(QUIET)
    result.mismatches = [*script.mismatches, *script.missing(), *extra,
                         *_outcome_mismatches(case, latest)]
    result.seconds = time.monotonic() - started
    return result


async def _wait(script: Script, end: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(script.done.wait(), max(0.0, end - time.monotonic()))


def certify_config(data_dir: Path, port: int, config_file: Path | None = None,
                   settings: Mapping[str, str] | None = None) -> Any:
    """The gateway's configuration for a run against the replay host on ``port``."""
    environ = {**SETTINGS, "PAYGATE_DATA_DIR": str(data_dir),
               "PAYGATE_GRPC_LISTEN": "127.0.0.1:0", "PAYGATE_HTTP_LISTEN": "127.0.0.1:0",
               "PAYGATE_NETWORK_HOST": "127.0.0.1", **(settings or {}),
               "PAYGATE_NETWORK_PORT": str(port)}
    return load_config(config_file, environ=environ)


async def _stack_info(path: Path, since: float, end: float) -> StackInfo:
    """The ``stack.json`` an external ``paygate up`` wrote after ``since`` (epoch)."""
    while True:
        try:
            if path.stat().st_mtime >= since:
                return StackInfo(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            pass
        if time.monotonic() >= end:
            raise TimeoutError(f"no fresh {path} (is `paygate up --no-netsim` running?)")
        await asyncio.sleep(_POLL)


@contextlib.asynccontextmanager
async def _gateway(data_dir: Path, port: int, config_file: Path | None,
                   settings: Mapping[str, str] | None, external: Path | None,
                   connected: Script, since: float) -> AsyncIterator[StackInfo]:
    """The gateway under test, once it has signed on: started here, or (``external``:
    its ``stack.json``) a ``paygate up --no-netsim --netsim-port PORT`` started by the user."""
    if external is not None:
        await _wait(connected, time.monotonic() + _EXTERNAL_TIMEOUT)
        yield await _stack_info(external, since, time.monotonic() + _EXTERNAL_TIMEOUT)
        return
    config = certify_config(data_dir, port, config_file, settings)
    async with Stack(config, embedded_netsim=False) as stack:
        await _wait(connected, time.monotonic() + _CONNECT_TIMEOUT)
        assert stack.info is not None
        yield stack.info


async def run_suite(suite: Suite, data_dir: Path, *, only: Sequence[str] = (),
                    config_file: Path | None = None, settings: Mapping[str, str] | None = None,
                    on_result: Callable[[CaseResult], None] | None = None,
                    external: Path | None = None, port: int = 0) -> list[CaseResult]:
    """Run ``suite`` (its cases named in ``only``, or all) against a fresh gateway whose
    data lives in ``data_dir``, or (``external``: the ``stack.json`` it will write) one
    the user starts against the replay host on ``port``; return one result per case,
    ``connect`` first."""
    cases = [c for c in suite.cases if not only or c.name in only]
    unknown = sorted(set(only) - {c.name for c in suite.cases})
    if unknown:
        raise ValueError(f"no case named {unknown[0]!r} in the suite {suite.name}")
    pki = data_dir / "pki"
    await asyncio.to_thread(write_dev_certs, pki)
    host = ReplayHost(server_context(Credentials(pki / "netsim.crt", pki / "netsim.key",
                                                 pki / "ca.crt")), port=port)
    await host.start()
    results: list[CaseResult] = []

    def report(result: CaseResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    try:
        started, since = time.monotonic(), time.time() - 1.0
        connect = host.play("connect", suite.connect)
        async with _gateway(data_dir, host.port, config_file, settings, external, connect,
                            since) as info:
            report(CaseResult("connect", "sign-on when the gateway connects",
                              time.monotonic() - started,
                              [*connect.mismatches, *connect.missing()]))
            async with client_channel(info.grpc, info.client_credentials(),
                                      server_name=info.tls.get("server_name")) as channel:
                client = Client(channel, info.http, info.merchant["id"])
                for case in cases:
                    report(await _run_case(client, host, case))
    finally:
        await host.stop()
    return results
