"""Serving the edge's aiohttp application: requests aiohttp refuses before any handler.

A request that is not valid HTTP (a bad request line or header, a ``Content-Length``
that disagrees with the bytes, a body in an encoding aiohttp cannot decode) never
reaches the application and its middleware: aiohttp answers it itself, with a
``text/plain`` body that quotes the offending bytes and a logged traceback that quotes
them again. Those bytes can be a card number and its CVC. :class:`EdgeRunner` serves an
application like :class:`aiohttp.web.AppRunner`, but such refusals are
``application/problem+json`` with a stable ``code``, and are logged by type only,
never with the request's bytes.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError

from gateway.edge.problems import HTTP_CODES, problem
from gateway.listening import CannotListen, address, reason

__all__ = ["EdgeRunner", "listen"]

log = structlog.get_logger("gateway.edge")


class _EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, with :meth:`handle_error` answering a problem."""

    __slots__ = ()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own failures (a body that does not decompress while it drains one,
        say) by type only: their text and traceback may quote the request's bytes."""
        exc = kw.get("exc_info")
        log.warning("http_connection_failed", what=str(args[0]) if args else "",
                    error=type(exc).__name__ if isinstance(exc, BaseException) else None)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # ``message`` and ``exc`` quote the request's bytes: only their type is kept.
        log.warning("http_request_refused", status=status,
                    error=type(exc).__name__ if exc is not None else None)
        if request.writer.output_size > 0:
            raise ConnectionError("a response is already on its way: the connection closes")
        if status >= 500:
            response = problem(status, "internal_error", "an unexpected error occurred")
        elif isinstance(exc, ContentEncodingError):   # br, zstd...: refused at parse time
            response = problem(415, "unsupported_content_encoding",
                               "send the body without a Content-Encoding")
        else:
            response = problem(status, HTTP_CODES.get(status, "invalid_request"),
                               "the request is not valid HTTP/1.1 for this endpoint")
        response.force_close()
        return response


class _EdgeServer(web.Server):
    """aiohttp's low-level server, making :class:`_EdgeRequestHandler` connections."""

    def __call__(self) -> web.RequestHandler:
        return _EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


#: Seconds a connection may stay without a complete request head (on a new connection,
#: or idle between requests) before the edge closes it: a client that trickles its
#: headers, or never sends any, does not hold a connection for good. (aiohttp's own
#: default is an hour.) The body has its own deadline: ``gateway.edge.problems``.
DEFAULT_IDLE_TIMEOUT = 15.0
#: Seconds the edge keeps reading (and dropping) a refused request's unread body before
#: it closes, so that the client sees the answer rather than a reset (aiohttp: 10).
LINGERING_TIME = 2.0


async def listen(runner: web.AppRunner, host: str, port: int, what: str = "") -> web.TCPSite:
    """Start ``runner`` on ``host:port``; a failure to bind is :class:`CannotListen`."""
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        raise CannotListen(address(host, port), reason(exc), what) from None
    return site


class EdgeRunner(web.AppRunner):
    """:class:`aiohttp.web.AppRunner` whose connections answer malformed requests with
    problem+json and log them without their bytes (see the module docstring), and close
    after ``idle_timeout`` seconds without a complete request head."""

    def __init__(self, app: web.Application, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 **kwargs: Any) -> None:
        kwargs.setdefault("lingering_time", LINGERING_TIME)
        super().__init__(app, keepalive_timeout=idle_timeout, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EdgeServer   # same object and state, the handler class swapped
        return server
