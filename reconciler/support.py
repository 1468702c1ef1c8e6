"""The reconciler worker's small parts: when an entry is retried (:class:`Backoff`),
what a worker did (:class:`Stats`, :class:`PassResult`), and the relay that hands the
network client's late replies to a reconciler created after it (:class:`LateReplies`).
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

__all__ = ["Backoff", "LateHandler", "LateReplies", "PassResult", "Stats"]

log = structlog.get_logger("reconciler")


@dataclass(frozen=True)
class Backoff:
    """When an unresolved entry is due again: ``min(cap, initial * 2**(tries-1))``
    seconds, of which the fraction ``jitter`` is random (so entries spread out)."""

    initial: float = 0.5
    cap: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap or not 0 <= self.jitter <= 1:
            raise ValueError("backoff needs 0 < initial <= cap and 0 <= jitter <= 1")

    def delay(self, tries: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``tries``-th pass that did not resolve an entry."""
        base = min(self.cap, self.initial * 2 ** min(max(tries, 1) - 1, 62))
        draw = rng.random() if rng is not None else random.random()
        return float(base * (1 - self.jitter * draw))


@dataclass
class Stats:
    """What the worker did since it started (for tests, logs and metrics)."""

    reversal_tries: int = 0
    repeats: int = 0
    resolved: int = 0
    rescheduled: int = 0
    stale_marked: int = 0
    late_accepted: int = 0
    late_ignored: int = 0
    queued: int = 0          # entries in the durable queue after the last pass


@dataclass(frozen=True)
class PassResult:
    """One :meth:`Reconciler.run_once`."""

    ingested: int
    due: int
    resolved: int
    rescheduled: int


LateHandler = Callable[[dict[str, str]], Awaitable[None]]


@dataclass
class LateReplies:
    """A relay for ``NetworkClient(on_late_response=...)``, which must exist before the
    reconciler that handles the replies: set :attr:`target` once it does."""

    target: LateHandler | None = None
    dropped: int = field(default=0)

    async def __call__(self, doc: dict[str, str]) -> None:
        if self.target is None:
            self.dropped += 1
            log.warning("late reply dropped: no reconciler yet", mti=doc.get("t"),
                        terminal=doc.get("41"), stan=doc.get("11"))
            return
        result = self.target(doc)
        if inspect.isawaitable(result):
            await result
