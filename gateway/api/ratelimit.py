"""Per-caller rate limiting: a token bucket per identity.

:class:`TokenBucket` is pure (the clock is injected): it holds up to ``burst`` tokens,
refills ``rate`` tokens per second and starts full. :class:`RateLimiter` keeps one
bucket per caller identity, sized by that identity's :class:`Limit` or the default.
The server's call interceptor answers RESOURCE_EXHAUSTED ``rate_limited`` (ErrorInfo
metadata ``retry_after_ms``) when the caller's bucket is empty.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["Clock", "Limit", "RateLimiter", "TokenBucket"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class Limit:
    """A sustained ``rate`` (calls per second, > 0) and a ``burst`` (calls, >= 1)."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ValueError(f"rate must be a positive number: {self.rate!r}")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"burst must be an integer >= 1: {self.burst!r}")


class TokenBucket:
    """Up to ``burst`` tokens, refilled at ``rate`` per second; starts full."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        limit = Limit(rate, burst)
        self.rate = limit.rate
        self.burst = limit.burst
        self._clock = clock
        self._tokens = float(limit.burst)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        if now > self._last:  # a clock that steps back refills nothing
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
            self._last = now

    def _check(self, n: int) -> None:
        if not 1 <= n <= self.burst:
            raise ValueError(f"can take 1 to {self.burst} tokens at once, not {n}")

    @property
    def tokens(self) -> float:
        """The tokens available now."""
        self._refill()
        return self._tokens

    def take(self, n: int = 1) -> bool:
        """Take ``n`` tokens if available (then ``True``); otherwise take none (``False``)."""
        self._check(n)
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def retry_after(self, n: int = 1) -> float:
        """Seconds until ``n`` tokens are available (0.0 if they are now)."""
        self._check(n)
        self._refill()
        missing = n - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate


class RateLimiter:
    """One :class:`TokenBucket` per caller identity.

    ``limits`` sets the limit of particular identities; the others get ``default``
    (``None``: not limited). Buckets are created on first use; the interceptor only
    asks for identities the :class:`~gateway.api.identity.IdentityPolicy` admitted, so
    their number is bounded by the policy.
    """

    def __init__(self, default: Limit | None, limits: Mapping[str, Limit] | None = None,
                 *, clock: Clock = time.monotonic) -> None:
        self._default = default
        self._limits = dict(limits or {})
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def limit_for(self, identity: str) -> Limit | None:
        """The limit that applies to ``identity`` (``None``: unlimited)."""
        return self._limits.get(identity, self._default)

    def _bucket(self, identity: str) -> TokenBucket | None:
        bucket = self._buckets.get(identity)
        if bucket is None:
            limit = self.limit_for(identity)
            if limit is None:
                return None
            bucket = self._buckets[identity] = TokenBucket(limit.rate, limit.burst, self._clock)
        return bucket

    def take(self, identity: str) -> bool:
        """Count one call of ``identity``; ``False`` if it is over its limit."""
        bucket = self._bucket(identity)
        return bucket is None or bucket.take()

    def retry_after(self, identity: str) -> float:
        """Seconds until ``identity`` may call again (0.0: now)."""
        bucket = self._bucket(identity)
        return 0.0 if bucket is None else bucket.retry_after()
