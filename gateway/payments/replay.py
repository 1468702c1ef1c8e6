"""Idempotent calls: the stored answer of a mutating RPC, replayed for its key.

The rules are ``gateway.payments.idempotency`` (pure); this module carries them
out against the store. Scope is the caller's identity. A call with a key
claims it (``in_progress``), runs, and stores what it answered: the serialized
response, or, for a definitive refusal (INVALID_ARGUMENT, FAILED_PRECONDITION,
NOT_FOUND, PERMISSION_DENIED), the serialized ``google.rpc.Status``. A
transient failure (UNAVAILABLE, INTERNAL, RESOURCE_EXHAUSTED, ABORTED, or an
unexpected exception) releases the claim so that the retry runs again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

import grpc

from gateway.payments import convert, idempotency
from gateway.payments.errors import DomainError
from gateway.payments.store import PaymentStore

#: Refusals that are final for these parameters, so they are stored and replayed.
DEFINITIVE: Final = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND",
                               "PERMISSION_DENIED", "OUT_OF_RANGE"})
_DETAILS_KEY: Final = "grpc-status-details-bin"


class ReplayedRefusal(Exception):
    """The key's first call was refused; this is that refusal, to be sent again."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__("replayed refusal")
        self.status = status


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _status_bytes(status: grpc.Status) -> bytes:
    for key, value in status.trailing_metadata:
        if key == _DETAILS_KEY:
            return bytes(value)
    return b""


def _status_from_bytes(code: int, details: bytes) -> grpc.Status:
    from google.rpc import status_pb2
    from grpc_status import rpc_status

    status = status_pb2.Status.FromString(details)
    status.code = code
    return rpc_status.to_status(status)


class IdempotentCalls:
    """Run mutating calls at most once per (identity, idempotency key)."""

    def __init__(self, store: PaymentStore, *, clock: Callable[[], int] = _now_ms) -> None:
        self._store = store
        self._clock = clock

    async def run(self, scope: str, key: str | None, method: str, request: bytes,
                  call: Callable[[], Awaitable[bytes]]) -> bytes:
        """The serialized response of ``call`` (run now, or stored from the first time).

        Raises :class:`DomainError` (the call's own, or ``idempotency_key_reused`` /
        ``idempotency_key_in_use`` / ``idempotency_key_invalid``) or
        :class:`ReplayedRefusal`.
        """
        if key is None:
            return await call()
        idempotency.validate_key(key)
        fingerprint = idempotency.request_fingerprint(method, request)
        now = self._clock()
        existing = await self._store.claim_idempotency(
            idempotency.new_record(scope, key, fingerprint, now))
        if existing is not None and idempotency.decide(existing, fingerprint, now) == "replay":
            if existing.code == 0:
                return existing.response
            raise ReplayedRefusal(_status_from_bytes(existing.code, existing.details))
        try:
            response = await call()
        except DomainError as exc:
            if exc.status in DEFINITIVE:
                status = convert.rich_status(exc.status, exc.reason, exc.message, exc.metadata)
                await self._store.complete_idempotency(scope, key, b"", status.code.value[0],
                                                       _status_bytes(status))
            else:
                await self._store.release_idempotency(scope, key)
            raise
        except BaseException:
            await self._store.release_idempotency(scope, key)
            raise
        await self._store.complete_idempotency(scope, key, response, 0, b"")
        return response
