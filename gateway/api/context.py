"""The per-call context the API plumbing establishes, and how a failure becomes a status.

Every RPC passes through :class:`gateway.api.server.CallInterceptor`, which admits the
caller and binds a :class:`Caller` for the duration of the call. Servicer code reads it
with :func:`current_identity`, :func:`current_request_id` or :func:`current_caller`, and
checks a merchant with :func:`authorize_merchant`.

Servicers report refusals by *raising* :class:`~gateway.payments.errors.DomainError`: the
interceptor turns it into the matching gRPC status with a ``google.rpc.Status`` detail
(:func:`error_status`). Any other exception becomes INTERNAL ``internal`` with a fixed
message; :class:`NotImplementedError` (the generated servicer base classes) becomes
UNIMPLEMENTED ``unimplemented``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

import grpc

from gateway.api.identity import merchant_allowed
from gateway.payments.convert import rich_status
from gateway.payments.errors import DomainError
from hsm_sim.randompool import POOL

__all__ = [
    "REQUEST_ID_HEADER", "Caller", "authorize_merchant", "bind_caller", "current_caller",
    "current_identity", "current_request_id", "error_code_name", "error_status",
    "new_request_id", "request_id_from",
]

#: The metadata key of the request id (read from the client, echoed in initial metadata).
REQUEST_ID_HEADER: Final = "x-request-id"
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
INTERNAL_MESSAGE: Final = "internal error"


@dataclass(frozen=True)
class Caller:
    """The admitted caller of the current RPC."""

    identity: str
    request_id: str
    merchants: frozenset[str]


_CALLER: ContextVar[Caller | None] = ContextVar("paygate_api_caller", default=None)


@contextmanager
def bind_caller(caller: Caller) -> Iterator[Caller]:
    """Make ``caller`` the current caller inside the ``with`` block."""
    token = _CALLER.set(caller)
    try:
        yield caller
    finally:
        with suppress(ValueError):  # reset from another context: nothing leaks there
            _CALLER.reset(token)


def current_caller() -> Caller:
    """The caller of the RPC being served; ``RuntimeError`` outside an RPC."""
    caller = _CALLER.get()
    if caller is None:
        raise RuntimeError("no RPC is being served in this context")
    return caller


def current_identity() -> str:
    """The client certificate's common name of the RPC being served."""
    return current_caller().identity


def current_request_id() -> str:
    """The request id of the RPC being served (the client's ``x-request-id`` or a fresh one)."""
    return current_caller().request_id


def authorize_merchant(merchant_id: str) -> None:
    """Return if the current caller may act for ``merchant_id``; raise PERMISSION_DENIED."""
    if not merchant_allowed(current_caller().merchants, merchant_id):
        raise DomainError("PERMISSION_DENIED", "merchant_forbidden",
                          "this client may not act for this merchant",
                          {"merchant_id": merchant_id})


def new_request_id() -> str:
    """A fresh request id (32 hex digits: a version-4 UUID from the buffered CSPRNG, one
    ``getrandom`` per many calls rather than per call; see ``hsm_sim.randompool``)."""
    return uuid.UUID(bytes=POOL.draw(16), version=4).hex


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The client's ``x-request-id`` if well-formed (1-64 of ``[A-Za-z0-9_-]``), else a new one."""
    for key, value in metadata or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return new_request_id()


def error_code_name(exc: Exception) -> str:
    """The gRPC status code name :func:`error_status` gives ``exc``."""
    if isinstance(exc, DomainError):
        return exc.status
    if isinstance(exc, NotImplementedError):
        return "UNIMPLEMENTED"
    return "INTERNAL"


def error_status(exc: Exception) -> grpc.Status:
    """The ``grpc.Status`` (with ``ErrorInfo``) to abort a call that raised ``exc`` with.

    Only a :class:`DomainError`'s own (caller-safe) message and metadata are sent; any
    other exception's text is never included.
    """
    if isinstance(exc, DomainError):
        return rich_status(exc.status, exc.reason, exc.message, exc.metadata)
    if isinstance(exc, NotImplementedError):
        return rich_status("UNIMPLEMENTED", "unimplemented", "method not implemented")
    return rich_status("INTERNAL", "internal", INTERNAL_MESSAGE)
