"""The gateway's network client: persistent mutual-TLS ISO 8583 connections to the
card network (sign-on, echo, reconnect, back-pressure, request/response matching),
and the trace numbers (STAN, RRN) its requests carry.
"""

from __future__ import annotations

from .client import LateResponseHandler, NetworkClient
from .connection import Connection, UnsolicitedHandler
from .errors import NetworkError, NotSent, OutcomeUnknown
from .trace import (
    STAN_MAX,
    SqliteStanStore,
    StanStore,
    Trace,
    TraceAllocator,
    format_stan,
    retrieval_reference,
)

__all__ = [
    "STAN_MAX",
    "Connection",
    "LateResponseHandler",
    "NetworkClient",
    "NetworkError",
    "NotSent",
    "OutcomeUnknown",
    "SqliteStanStore",
    "StanStore",
    "Trace",
    "TraceAllocator",
    "UnsolicitedHandler",
    "format_stan",
    "retrieval_reference",
]
