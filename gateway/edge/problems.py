"""RFC 9457 problem details: every error the HTTP edge returns.

The body is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and paygate's stable ``code`` (plus ``fields`` naming
the offending inputs, never their values).
"""

from __future__ import annotations

import json
from http import HTTPStatus

from aiohttp import web

PROBLEM_TYPE = "https://paygate.dev/problems/"
CONTENT_TYPE = "application/problem+json"


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


#: Stable codes for the statuses aiohttp itself raises.
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
