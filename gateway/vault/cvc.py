"""The CVC cache: the only place a card security code lives, and only for a while.

The CVC is never written anywhere. It is sealed by the HSM (bound to the
merchant and the token), kept in this process's memory for ``ttl`` seconds
(15 minutes by default) and handed out at most once, to the first
authorization that uses the token. Expired entries are dropped as the cache
is used.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from hsm_sim.interface import Hsm, HsmError, Sealed

DEFAULT_TTL: Final = 15 * 60.0


def _aad(merchant_id: str, token: str) -> bytes:
    return f"cvc:{merchant_id}:{token}".encode()


class CvcCache:
    """Sealed CVCs by (merchant, token), consumed on first use, gone after ``ttl``."""

    def __init__(self, hsm: Hsm, *, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.monotonic, max_entries: int = 1_000_000) -> None:
        self._hsm = hsm
        self._ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[float, Sealed]] = OrderedDict()

    def __repr__(self) -> str:
        return f"CvcCache({len(self._entries)} sealed entries, ttl={self._ttl:g}s)"

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (expires, _sealed) = next(iter(entries.items()))
            if expires > now and len(entries) <= self._max:
                break
            del entries[key]

    def put(self, merchant_id: str, token: str, cvc: str) -> None:
        """Hold ``cvc`` for the next authorization of ``token`` (replaces an older one)."""
        sealed = self._hsm.seal(cvc.encode("ascii"), _aad(merchant_id, token))
        now = self._clock()
        with self._lock:
            key = (merchant_id, token)
            self._entries.pop(key, None)
            self._entries[key] = (now + self._ttl, sealed)
            self._expire(now)

    def take(self, merchant_id: str, token: str) -> str | None:
        """The CVC for ``token``, removed from the cache; ``None`` if none or expired."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._entries.pop((merchant_id, token), None)
        if entry is None or entry[0] <= now:
            return None
        try:
            return self._hsm.unseal(entry[1], _aad(merchant_id, token)).decode("ascii")
        except HsmError:
            return None
