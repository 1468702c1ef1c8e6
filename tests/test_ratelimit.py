"""TokenBucket and RateLimiter with a fake clock: no sleeping, no wall time."""

from __future__ import annotations

import pytest

from gateway.api.ratelimit import Limit, RateLimiter, TokenBucket


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_bucket_starts_full_and_allows_a_burst() -> None:
    """A fresh bucket allows exactly `burst` takes at one instant, then refuses."""
    bucket = TokenBucket(rate=2.0, burst=3, clock=FakeClock())
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate() -> None:
    """After emptying, one token comes back every 1/rate seconds."""
    clock = FakeClock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    while bucket.take():
        pass
    clock.now += 0.25
    assert not bucket.take()
    clock.now += 0.25
    assert bucket.take()
    assert not bucket.take()


def test_bucket_never_exceeds_burst() -> None:
    """A long idle period refills to `burst` tokens, not more."""
    clock = FakeClock()
    bucket = TokenBucket(rate=10.0, burst=2, clock=clock)
    assert bucket.take()
    clock.now += 3600
    assert bucket.tokens == 2.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_retry_after_is_time_to_next_token() -> None:
    """retry_after is 0 while tokens remain and the refill time of the missing part after."""
    clock = FakeClock()
    bucket = TokenBucket(rate=4.0, burst=1, clock=clock)
    assert bucket.retry_after() == 0.0
    assert bucket.take()
    assert bucket.retry_after() == pytest.approx(0.25)
    clock.now += 0.125
    assert bucket.retry_after() == pytest.approx(0.125)
    clock.now += 0.125
    assert bucket.retry_after() == 0.0
    assert bucket.take()


def test_refused_take_costs_nothing() -> None:
    """A refused take(n) leaves the tokens there for a smaller take."""
    bucket = TokenBucket(rate=1.0, burst=3, clock=FakeClock())
    assert bucket.take(2)
    assert not bucket.take(2)
    assert bucket.take(1)


def test_clock_stepping_back_refills_nothing() -> None:
    """A clock that goes backwards neither refills nor breaks the bucket."""
    clock = FakeClock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert bucket.take()
    clock.now -= 50
    assert not bucket.take()
    clock.now += 51  # one second past the original instant
    assert bucket.take()


@pytest.mark.parametrize(("rate", "burst"), [
    (0.0, 1), (-1.0, 1), (float("inf"), 1), (float("nan"), 1), (1.0, 0), (1.0, True),
])
def test_invalid_limits_are_refused(rate: float, burst: int) -> None:
    """A non-positive or non-finite rate, or a burst below one, is a ValueError."""
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst, clock=FakeClock())


def test_take_more_than_burst_is_refused() -> None:
    """Asking for more tokens than the bucket can ever hold is a ValueError, not a wait."""
    bucket = TokenBucket(rate=1.0, burst=2, clock=FakeClock())
    with pytest.raises(ValueError):
        bucket.take(3)
    with pytest.raises(ValueError):
        bucket.retry_after(0)


def test_limiter_keeps_one_bucket_per_identity() -> None:
    """One identity exhausting its bucket does not affect another."""
    limiter = RateLimiter(Limit(rate=1.0, burst=1), clock=FakeClock())
    assert limiter.take("a")
    assert not limiter.take("a")
    assert limiter.take("b")


def test_limiter_applies_per_identity_limits_and_default() -> None:
    """An identity with its own Limit uses it; the others use the default."""
    limiter = RateLimiter(Limit(rate=1.0, burst=1), {"big": Limit(rate=1.0, burst=3)},
                          clock=FakeClock())
    assert [limiter.take("big") for _ in range(4)] == [True, True, True, False]
    assert [limiter.take("small") for _ in range(2)] == [True, False]
    assert limiter.retry_after("small") == pytest.approx(1.0)


def test_limiter_without_default_leaves_unlisted_identities_unlimited() -> None:
    """With default None only listed identities are limited."""
    limiter = RateLimiter(None, {"capped": Limit(rate=1.0, burst=1)}, clock=FakeClock())
    assert all(limiter.take("free") for _ in range(1000))
    assert limiter.retry_after("free") == 0.0
    assert limiter.take("capped")
    assert not limiter.take("capped")
