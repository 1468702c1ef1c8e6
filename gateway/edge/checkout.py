"""The demo checkout on the HTTP edge: a merchant's page and its tiny backend.

It plays the merchant, on purpose from a *different origin* than the gateway: the
page is served at ``http://localhost:PORT/demo/checkout`` (a request for it on any
other host is redirected there), while it loads ``paygate.js`` and the card frame
from the gateway's origin ``http://127.0.0.1:PORT``. So the browser keeps the card
frame out of the page's reach exactly as it would on a real merchant's site.

* ``GET /demo/checkout`` (+ ``checkout.js``, ``checkout.css``): the page, with its
  own strict CSP (scripts from itself and the gateway, frames from the gateway).
* ``POST /demo/checkout/pay`` ``{"token": "..."}``: the merchant's server side.
  It creates a payment intent over gRPC with mutual TLS (the stack's
  ``checkout-service`` client certificate, an ``idempotency-key`` per call), as
  an internal service would, confirms it with the token and answers
  ``{"status", "intent", "amount", "currency", "error"}`` (``error``: the
  intent's ``last_payment_error`` when declined, else null). Refusals are
  problem+json: ``invalid_request`` (400), ``origin_not_allowed`` (403, a
  cross-site ``Origin``), ``unsupported_media_type`` (415), ``payment_refused``
  (422, the gRPC refusal's ErrorInfo reason in ``reason``), ``gateway_unavailable``
  (503). The card never reaches this code: only the token does.

The origins are known only once the edge's socket is bound (port 0 picks one), so
:class:`DemoCheckout` is registered first and :meth:`DemoCheckout.bind` completes it;
until then the routes answer 503.
"""

from __future__ import annotations

import html
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from aiohttp import web
from paygate.v1 import payments_pb2, payments_pb2_grpc

from gateway.api.server import client_channel
from gateway.edge.problems import json_body, problem
from gateway.payments.convert import error_info_from
from gateway.pki import Credentials

ASSETS_DIR: Final = Path(__file__).resolve().parent / "checkout_assets"
PATH: Final = "/demo/checkout"
_TOKEN: Final = re.compile(r"[A-Za-z0-9_]{8,64}")
_STATUS_PREFIX: Final = "PAYMENT_INTENT_STATUS_"
#: gRPC codes that mean "the request was refused" rather than "the gateway is down".
_REFUSALS: Final = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                              grpc.StatusCode.FAILED_PRECONDITION,
                              grpc.StatusCode.ALREADY_EXISTS,
                              grpc.StatusCode.PERMISSION_DENIED})
_UNAVAILABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE,
                                 grpc.StatusCode.DEADLINE_EXCEEDED})
RPC_TIMEOUT: Final = 30.0


def demo_origins(http_host: str, port: int) -> tuple[str, str]:
    """``(gateway origin, merchant page origin)`` for an edge bound to ``http_host:port``:
    the gateway as ``127.0.0.1`` (any loopback or wildcard listen address) and the
    page as ``localhost``, two different origins on the same socket."""
    host = http_host if http_host not in ("127.0.0.1", "0.0.0.0", "localhost", "") \
        else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}", f"http://localhost:{port}"


@dataclass
class DemoCheckout:
    """The demo merchant: who it is, how it reaches the Payments API, what it sells."""

    grpc_target: str
    credentials: Credentials
    merchant_id: str
    merchant_name: str
    publishable_key: str
    amount: int = 1999
    currency: str = "eur"
    gateway_origin: str = ""
    page_origin: str = ""
    _channel: grpc.aio.Channel | None = field(default=None, repr=False)

    def bind(self, gateway_origin: str, page_origin: str) -> None:
        self.gateway_origin, self.page_origin = gateway_origin, page_origin

    @property
    def url(self) -> str:
        return self.page_origin + PATH

    def stub(self) -> Any:
        if self._channel is None:
            self._channel = client_channel(self.grpc_target, self.credentials)
        return payments_pb2_grpc.PaymentsStub(self._channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


CHECKOUT: Final = web.AppKey("demo_checkout", DemoCheckout)
ASSETS: Final = web.AppKey("demo_checkout_assets", dict)


def page_csp(gateway_origin: str) -> str:
    """The merchant page's own policy: its scripts and the gateway's, the gateway's frame."""
    return (f"default-src 'none'; script-src 'self' {gateway_origin}; style-src 'self'; "
            f"connect-src 'self'; frame-src {gateway_origin}; img-src 'self' data:; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _money(amount: int, currency: str) -> str:
    symbol = {"eur": "\u20ac", "usd": "$", "gbp": "\u00a3"}.get(currency, currency.upper() + " ")
    return f"{symbol}{amount // 100}.{amount % 100:02d}"


def _bound(request: web.Request) -> DemoCheckout:
    checkout = request.app[CHECKOUT]
    if not checkout.page_origin:
        raise web.HTTPServiceUnavailable(reason="the demo checkout is starting")
    return checkout


async def page(request: web.Request) -> web.Response:
    """The checkout page, always from the page origin (``localhost``)."""
    checkout = _bound(request)
    if f"{request.scheme}://{request.host}" != checkout.page_origin:
        raise web.HTTPSeeOther(checkout.url)
    values = {
        "merchant_name": checkout.merchant_name,
        "publishable_key": checkout.publishable_key,
        "gateway_origin": checkout.gateway_origin,
        "page_origin": checkout.page_origin,
        "amount_display": _money(checkout.amount, checkout.currency),
    }
    text = request.app[ASSETS]["checkout.html"].decode("utf-8")
    for name, value in values.items():
        text = text.replace("{" + name + "}", html.escape(value, quote=True))
    response = web.Response(text=text, content_type="text/html", charset="utf-8")
    response.headers["Content-Security-Policy"] = page_csp(checkout.gateway_origin)
    response.headers["Referrer-Policy"] = "strict-origin-when-cross-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {"checkout.js": "text/javascript", "checkout.css": "text/css"}
    if name not in types:
        raise web.HTTPNotFound()
    response = web.Response(body=request.app[ASSETS][name], content_type=types[name],
                            charset="utf-8")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _status_name(status: int) -> str:
    return str(payments_pb2.PaymentIntentStatus.Name(status)).removeprefix(_STATUS_PREFIX).lower()


async def pay(request: web.Request) -> web.Response:
    """The merchant's backend: create the intent, confirm it with the token."""
    checkout = _bound(request)
    origin = request.headers.get("Origin")
    if origin is not None and origin != checkout.page_origin:
        return problem(403, "origin_not_allowed", "pay from the checkout page's origin",
                       ("Origin",))
    body = await json_body(request)
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        return problem(400, "invalid_request", 'the body must be {"token": "<card token>"}',
                       ("token",))
    stub = checkout.stub()
    order = uuid.uuid4().hex
    try:
        intent = await stub.CreatePaymentIntent(
            payments_pb2.CreatePaymentIntentRequest(
                merchant_id=checkout.merchant_id, amount=checkout.amount,
                currency=checkout.currency,
                capture_method=payments_pb2.CAPTURE_METHOD_AUTOMATIC,
                description="paygate demo checkout"),
            metadata=[("idempotency-key", f"checkout-{order}-create")], timeout=RPC_TIMEOUT)
        intent = await stub.ConfirmPaymentIntent(
            payments_pb2.ConfirmPaymentIntentRequest(id=intent.id, payment_method=token),
            metadata=[("idempotency-key", f"checkout-{order}-confirm")], timeout=RPC_TIMEOUT)
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        if code in _UNAVAILABLE:
            return problem(503, "gateway_unavailable", "the payments API did not answer")
        info = error_info_from(exc)
        reason = info.reason if info is not None else code.name.lower()
        if code in _REFUSALS:
            return problem(422, "payment_refused", f"the payment was refused ({reason})",
                           extra={"reason": reason})
        return problem(502, "payment_failed", f"the payments API failed ({reason})",
                       extra={"reason": reason})
    error = None
    if intent.HasField("last_payment_error"):
        e = intent.last_payment_error
        error = {"code": e.code, "decline_code": e.decline_code, "message": e.message,
                 "network_response_code": e.network_response_code}
    return web.json_response(
        {"status": _status_name(intent.status), "intent": intent.id, "amount": intent.amount,
         "currency": intent.currency, "error": error},
        headers={"Cache-Control": "no-store"})


def add_checkout_routes(app: web.Application, checkout: DemoCheckout) -> None:
    """Register the demo checkout; call :meth:`DemoCheckout.bind` once the port is known."""
    app[CHECKOUT] = checkout
    app[ASSETS] = {name: (ASSETS_DIR / name).read_bytes()
                   for name in ("checkout.html", "checkout.js", "checkout.css")}
    app.router.add_get(PATH, page)
    app.router.add_post(PATH + "/pay", pay)
    app.router.add_get("/demo/{name}", asset)

    async def _close(_app: web.Application) -> None:
        await checkout.close()

    app.on_cleanup.append(_close)
