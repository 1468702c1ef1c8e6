"""gRPC server plumbing for the payments API: identity, rate limits, errors, health.

* :mod:`gateway.api.identity` - caller identity (client certificate CN) and merchant policy;
* :mod:`gateway.api.ratelimit` - token buckets per identity;
* :mod:`gateway.api.context` - the current caller and request id, error-to-status mapping;
* :mod:`gateway.api.server` - the interceptor, :func:`build_server`, :func:`client_channel`.
"""

from __future__ import annotations

from gateway.api.context import (
    Caller,
    authorize_merchant,
    current_caller,
    current_identity,
    current_request_id,
)
from gateway.api.identity import IdentityPolicy
from gateway.api.ratelimit import Limit, RateLimiter, TokenBucket
from gateway.api.server import CallInterceptor, RunningServer, build_server, client_channel

__all__ = [
    "CallInterceptor", "Caller", "IdentityPolicy", "Limit", "RateLimiter", "RunningServer",
    "TokenBucket", "authorize_merchant", "build_server", "client_channel", "current_caller",
    "current_identity", "current_request_id",
]
