"""The one error type of the payments domain: a refusal the API reports as a gRPC status.

A :class:`DomainError` names a gRPC status code (``status``, the code's NAME such
as ``"FAILED_PRECONDITION"``), a stable snake_case ``reason`` (it becomes
``google.rpc.ErrorInfo.reason``), a ``message`` safe to show to the caller and
small string ``metadata`` (``ErrorInfo.metadata``). Messages are fixed texts
built by the domain code: they never contain card data. Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["GRPC_STATUS_NAMES", "DomainError"]

#: The gRPC status code names (``grpc.StatusCode`` member names).
GRPC_STATUS_NAMES: Final = frozenset({
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
})

_REASON = re.compile(r"[a-z][a-z0-9_]{0,62}")


class DomainError(Exception):
    """A command or outcome the payments rules refuse.

    ``status`` is a gRPC status code name (never ``"OK"``), ``reason`` a stable
    snake_case identifier, ``message`` a human text without card data, and
    ``metadata`` string pairs that help the caller (e.g. ``{"status": "succeeded"}``).
    """

    status: str
    reason: str
    message: str
    metadata: dict[str, str]

    def __init__(
        self, status: str, reason: str, message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if status not in GRPC_STATUS_NAMES or status == "OK":
            raise ValueError(f"not a gRPC error status name: {status!r}")
        if not _REASON.fullmatch(reason):
            raise ValueError(f"a reason is snake_case: {reason!r}")
        self.status = status
        self.reason = reason
        self.message = message
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"

    def __repr__(self) -> str:
        extra = f", {self.metadata!r}" if self.metadata else ""
        return (f"{type(self).__name__}({self.status!r}, {self.reason!r}, "
                f"{self.message!r}{extra})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.reason, self.message, dict(self.metadata)))
