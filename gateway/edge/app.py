"""The HTTP edge: what the iframe SDK talks to.

* ``GET /v1/keys``: the JWKS of the HSM's current public keys (public parts).
* ``POST /v1/tokens``: ``Authorization: Bearer <publishable key>`` and
  ``{"encrypted_card": "<compact JWE>"}`` → ``200 {"token", "brand", "last4",
  "exp_month", "exp_year"}``; every refusal is problem+json with a stable code.
* ``/sdk/v1/...``: the card iframe SDK (``gateway.edge.sdk``): ``paygate.js`` and the
  card frame with its strict Content-Security-Policy.
* ``GET /healthz``: the HSM's self-test.
* ``GET /metrics``: Prometheus metrics (``gateway.metrics``).

Bodies are capped (``max_body``, 16 KiB by default) and never compressed; requests that
are not valid HTTP are problems too (``gateway.edge.runner``); unexpected failures
become a bare 500 problem, logged without the request body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from aiohttp import web

from gateway import metrics
from gateway.edge.problems import (
    BODY_TIMEOUT,
    DEFAULT_BODY_TIMEOUT,
    HTTP_CODES,
    ProblemResponse,
    json_body,
    problem,
)
from gateway.edge.sdk import add_sdk_routes
from gateway.intake import CardIntake, IntakeError
from gateway.merchants import MerchantDirectory
from hsm_sim.interface import Hsm, HsmError

MAX_BODY: Final = 16 * 1024
log = structlog.get_logger("gateway.edge")
# The stdlib logger behind ``log``: asking it first spares the hot path building (and then
# dropping) a debug event per tokenization when debug is off.
_stdlib_log = logging.getLogger("gateway.edge")

INTAKE: Final = web.AppKey("intake", CardIntake)
HSM: Final = web.AppKey("hsm", Hsm)
MERCHANTS: Final = web.AppKey("merchants", MerchantDirectory)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into problem+json; never let an exception reach the client."""
    try:
        response = await handler(request)
    except ProblemResponse as exc:
        return exc.response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        detail = exc.reason if exc.status != 413 else f"the body exceeds {MAX_BODY} bytes"
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem(exc.status, code, detail, headers=headers)
    except HsmError as exc:
        log.error("hsm_failure", path=request.path, error=type(exc).__name__)
        return problem(503, "hsm_unavailable", "the key service is unavailable; retry later")
    except Exception as exc:
        log.error("edge_failure", path=request.path, error=type(exc).__name__)
        return problem(500, "internal_error", "an unexpected error occurred")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def keys(request: web.Request) -> web.Response:
    """The JWKS clients encrypt cards to (the first key is the active one)."""
    jwks = request.app[HSM].jwks()
    return web.json_response(jwks, content_type="application/jwk-set+json", headers={
        "Cache-Control": "public, max-age=300",
        "Access-Control-Allow-Origin": "*",
    })


def _publishable_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def create_token(request: web.Request) -> web.Response:
    """Tokenize one client-side encrypted card for the publishable key's merchant."""
    key = _publishable_key(request)
    merchant = request.app[MERCHANTS].by_publishable_key(key) if key else None
    if merchant is None:
        return problem(401, "invalid_publishable_key",
                       "send 'Authorization: Bearer <publishable key>' with a valid key",
                       headers={"WWW-Authenticate": 'Bearer realm="paygate"'})
    body = await json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("encrypted_card"), str):
        return problem(400, "invalid_request",
                       "the body must be {\"encrypted_card\": \"<compact JWE>\"}",
                       ("encrypted_card",))
    try:
        result = await request.app[INTAKE].tokenize(merchant.id, body["encrypted_card"])
    except IntakeError as exc:
        metrics.count_tokenization(exc.code)
        log.info("tokenize_refused", merchant=merchant.id, code=exc.code)
        return problem(exc.status, exc.code, exc.message, exc.fields)
    metrics.count_tokenization("ok")
    if _stdlib_log.isEnabledFor(logging.DEBUG):
        log.debug("tokenized", merchant=merchant.id, brand=result.brand, created=result.created)
    return web.json_response(
        {"token": result.token, "brand": result.brand, "last4": result.last4,
         "exp_month": result.exp_month, "exp_year": result.exp_year},
        headers={"Cache-Control": "no-store"})


async def metrics_page(_request: web.Request) -> web.Response:
    """Prometheus text exposition of ``gateway.metrics``."""
    response = web.Response(body=metrics.exposition())
    response.headers["Content-Type"] = metrics.CONTENT_TYPE
    return response


async def healthz(request: web.Request) -> web.Response:
    health = request.app[HSM].health()
    status = 200 if health.ok else 503
    return web.json_response({"ok": health.ok, "hsm": health.backend,
                              "active_kid": health.active_kid, "detail": health.detail},
                             status=status, headers={"Cache-Control": "no-store"})


def create_app(intake: CardIntake, hsm: Hsm, merchants: MerchantDirectory, *,
               max_body: int = MAX_BODY,
               body_timeout: float = DEFAULT_BODY_TIMEOUT) -> web.Application:
    """The edge as an aiohttp application, the card iframe SDK's routes included
    (serve it with :class:`gateway.edge.runner.EdgeRunner`)."""
    app = web.Application(client_max_size=max_body, middlewares=[problem_middleware])
    app[BODY_TIMEOUT] = body_timeout
    app[INTAKE] = intake
    app[HSM] = hsm
    app[MERCHANTS] = merchants
    app.router.add_get("/v1/keys", keys)
    app.router.add_post("/v1/tokens", create_token)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    add_sdk_routes(app)
    return app
