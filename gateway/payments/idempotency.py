"""Idempotency keys: the rules that make a retried request safe. Pure, no I/O.

A caller sends an ``idempotency-key`` with each mutating request. The key is
scoped to the caller's identity; the store keeps one :class:`IdempotencyRecord`
per (scope, key). A request is fingerprinted (:func:`request_fingerprint`:
SHA-256 of the method name and the request's deterministic serialization) and
:func:`decide` says what to do with it:

* no record, or an expired one -> ``"claim"`` (store an ``in_progress`` record,
  run the request, then store its response with :func:`complete`);
* same fingerprint, ``done`` -> ``"replay"`` the stored response exactly;
* another fingerprint -> INVALID_ARGUMENT ``idempotency_key_reused``;
* same fingerprint, ``in_progress`` -> ABORTED ``idempotency_key_in_use``.

Records are kept at least :data:`RETENTION_MS` (24 hours) after their last write.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Final, Literal

from gateway.payments.errors import DomainError

__all__ = [
    "MAX_KEY_LEN",
    "RETENTION_MS",
    "IdempotencyRecord",
    "complete",
    "decide",
    "new_record",
    "request_fingerprint",
    "validate_key",
]

MAX_KEY_LEN: Final = 255
#: How long a record is kept after it was last written: 24 hours.
RETENTION_MS: Final = 24 * 60 * 60 * 1000

_KEY: Final = re.compile(r"[\x20-\x7e]{1,%d}" % MAX_KEY_LEN)  # noqa: UP031 - a regex


RecordState = Literal["in_progress", "done"]
Decision = Literal["claim", "replay"]


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What the store keeps for one (scope, key): the claim, then the response."""

    scope: str                 # the caller's identity
    key: str
    fingerprint: str           # request_fingerprint() of the request that claimed the key
    state: RecordState
    response: bytes            # serialized response message (state "done"), else b""
    code: int                  # gRPC status code of the response (0 = OK)
    details: bytes             # serialized google.rpc.Status details, when code != 0
    created: int               # ms since the epoch
    expires: int               # ms since the epoch; at or after it the record is absent

    def expired(self, now: int) -> bool:
        """Whether the record no longer counts at ``now``."""
        return now >= self.expires


def validate_key(key: object) -> str:
    """Return ``key`` if it is 1 to 255 printable ASCII characters (space to ``~``),
    else raise INVALID_ARGUMENT ``idempotency_key_invalid``."""
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise DomainError("INVALID_ARGUMENT", "idempotency_key_invalid",
                          f"idempotency key must be 1 to {MAX_KEY_LEN} printable ASCII "
                          "characters", {"max_length": str(MAX_KEY_LEN)})
    return key


def request_fingerprint(method: str, request_bytes: bytes) -> str:
    """SHA-256 (hex) of the method name, a NUL byte and the serialized request."""
    return hashlib.sha256(method.encode() + b"\x00" + request_bytes).hexdigest()


def new_record(scope: str, key: str, fingerprint: str, now: int) -> IdempotencyRecord:
    """The ``in_progress`` record that claims ``key`` for ``scope`` at ``now``."""
    return IdempotencyRecord(scope=scope, key=key, fingerprint=fingerprint,
                             state="in_progress", response=b"", code=0, details=b"",
                             created=now, expires=now + RETENTION_MS)


def complete(record: IdempotencyRecord, response: bytes, code: int, details: bytes,
             now: int) -> IdempotencyRecord:
    """``record`` done with the response to replay; kept ``RETENTION_MS`` from ``now``."""
    return dataclasses.replace(record, state="done", response=response, code=code,
                               details=details,
                               expires=max(record.expires, now + RETENTION_MS))


def decide(existing: IdempotencyRecord | None, fingerprint: str, now: int) -> Decision:
    """What to do with a request of ``fingerprint`` given the key's stored record."""
    if existing is None or existing.expired(now):
        return "claim"
    if existing.fingerprint != fingerprint:
        raise DomainError("INVALID_ARGUMENT", "idempotency_key_reused",
                          "this idempotency key was used with a different request")
    if existing.state == "in_progress":
        raise DomainError("ABORTED", "idempotency_key_in_use",
                          "a request with this idempotency key is still in progress; "
                          "retry later")
    return "replay"
