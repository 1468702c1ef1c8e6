"""Fault injection for netsim: what can go wrong between the issuer and the gateway.

Owns :class:`Faults`, the knobs a test (or ``paygate netsim serve``) turns to make
the network misbehave, and the seeded random source that decides, response by
response, whether a fault fires. It does no I/O itself: the server asks it
"how long do I wait?", "do I drop this?", "do I reset the connection?" and
"do I refuse this connection?".

Every fault applies *after* the request was processed and recorded in the
ledger, so a dropped or reset response is an approval (or decline) the gateway
never heard about, exactly the case its reconciler exists for.

A :class:`Faults` object is mutable while netsim runs: changing a field takes
effect for the next response or connection. Values are validated on every
assignment. With ``seed`` set, the sequence of decisions is reproducible (for a
given order of responses).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Faults"]

_RATES = frozenset({"drop_rate", "reset_rate"})
_DURATIONS = frozenset({"latency", "jitter"})


@dataclass(eq=False)
class Faults:
    """Network faults, applied by netsim to every response it is about to send.

    * ``latency``: seconds added before each response;
    * ``jitter``: up to this many more seconds, uniformly random, per response;
    * ``drop_rate``: probability that a response is not sent (the request is
      still processed and recorded);
    * ``reset_rate``: probability that, instead of answering, netsim aborts the
      connection the request came on (after processing and recording it);
    * ``refuse``: new connections are closed as soon as they are accepted;
    * ``seed``: seeds the random source (None: seeded from the OS); assigning a
      new seed restarts the sequence.
    """

    latency: float = 0.0
    jitter: float = 0.0
    drop_rate: float = 0.0
    reset_rate: float = 0.0
    refuse: bool = False
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _DURATIONS:
            value = _duration(name, value)
        elif name in _RATES:
            value = _rate(name, value)
        elif name == "refuse":
            if not isinstance(value, bool):
                raise TypeError("refuse must be a bool")
        elif name == "seed":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError("seed must be an int or None")
            if "_rng" in self.__dict__:
                self.__dict__["_rng"] = random.Random(value)
        super().__setattr__(name, value)

    def delay(self) -> float:
        """Seconds to wait before the next response: ``latency`` plus random jitter."""
        extra = self._rng.uniform(0.0, self.jitter) if self.jitter > 0 else 0.0
        return self.latency + extra

    def drops(self) -> bool:
        """Whether the next response is to be dropped (never sent)."""
        return self._chance(self.drop_rate)

    def resets(self) -> bool:
        """Whether the next response is replaced by aborting its connection."""
        return self._chance(self.reset_rate)

    def _chance(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        if rate >= 1.0:
            return True
        return self._rng.random() < rate


def _duration(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0")
    return seconds


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a probability")
    rate = float(value)
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and 1")
    return rate
