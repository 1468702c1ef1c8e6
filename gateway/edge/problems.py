"""RFC 9457 problem details: every error the HTTP edge returns.

The body is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and paygate's stable ``code`` (plus ``fields`` naming
the offending inputs, never their values).
"""

from __future__ import annotations

import asyncio
import json
from http import HTTPStatus
from typing import Final

from aiohttp import web

PROBLEM_TYPE = "https://paygate.dev/problems/"
CONTENT_TYPE = "application/problem+json"
#: Seconds a client has to send a whole request body once its head has arrived.
DEFAULT_BODY_TIMEOUT: Final = 10.0
BODY_TIMEOUT: Final = web.AppKey("body_timeout", float)


def problem(status: int, code: str, detail: str, fields: tuple[str, ...] = (),
            headers: dict[str, str] | None = None,
            extra: dict[str, str] | None = None) -> web.Response:
    """A problem+json response (``extra``: more members, e.g. an upstream reason)."""
    body: dict[str, object] = {
        "type": PROBLEM_TYPE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if fields:
        body["fields"] = list(fields)
    if extra:
        body.update(extra)
    response = web.Response(status=status, body=json.dumps(body).encode(),
                            content_type=CONTENT_TYPE, headers=headers)
    response.headers["Cache-Control"] = "no-store"
    return response


class ProblemResponse(Exception):
    """Raised with a ready problem response; the edge's middleware answers with it."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def json_body(request: web.Request) -> object:
    """The request's JSON body; :class:`ProblemResponse` 415 unless it is sent as
    ``application/json`` without a ``Content-Encoding``, 400 ``invalid_json`` unless it
    parses, 408 ``request_timeout`` (and the connection closes) unless the whole body
    arrives within the app's ``BODY_TIMEOUT`` seconds (a client trickling a body must
    not hold the connection for good)."""
    if request.content_type != "application/json":
        raise ProblemResponse(problem(415, "unsupported_media_type",
                                      "send the body as application/json"))
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise ProblemResponse(problem(415, "unsupported_content_encoding",
                                      "send the body without a Content-Encoding"))
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT)):
            raw = await request.read()
    except TimeoutError:
        response = problem(408, "request_timeout", "the body did not arrive in time")
        response.force_close()
        raise ProblemResponse(response) from None
    except (web.RequestPayloadError, ConnectionError):   # cut short, or undecodable
        raise ProblemResponse(problem(400, "invalid_request",
                                      "the body could not be read")) from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ProblemResponse(problem(400, "invalid_json", "the body is not JSON")) from None


#: Stable codes for the statuses aiohttp itself raises.
HTTP_CODES = {
    400: "invalid_request",
    408: "request_timeout",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
