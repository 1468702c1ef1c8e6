"""The yardstick for absolute bench figures: RSA-2048 OAEP-256 decrypts per second.

This VM drifts in speed by 25-30% between hours, so a figure in seconds or per second
means little without a reading of the machine's speed beside it. This module owns that
reading: ``cryptography``'s RSA-2048 OAEP (MGF1-SHA256, SHA-256) decrypt of a 32-byte
key, in one thread pinned to one core (when ``os.sched_setaffinity`` exists), counted
over about 1.5 s. It is the same operation as the raw peer of ``bench/tokenize.py``.

``bench/e2e.py``, ``bench/reconcile.py`` and ``bench/settlement.py`` load this file by
its path (this folder is not on their import path) and print a reading taken just
before their first round and one just after their last.

    .venv/bin/python bench/yardstick.py [--seconds 1.5] [--core 0]
"""

from __future__ import annotations

import os.path
import sys

# First of all: this file's folder must leave the import path (bench/tokenize.py would
# shadow the standard library's tokenize, bench/codec.py the codec package).
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse  # noqa: E402
import functools  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402

#: What one reading counts, as the bench scripts label it.
UNIT = "RSA-2048 OAEP-256 decrypts/s"
WARMUP_SECONDS = 0.1


@functools.cache
def decrypt() -> Callable[[], bytes]:
    """A function doing one decrypt of a 32-byte key (the key is generated once per
    process); also the raw peer of ``bench/tokenize.py`` and ``bench/http_floor.py``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=None)
    blob = key.public_key().encrypt(os.urandom(32), oaep)
    return lambda: key.decrypt(blob, oaep)


def count_rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls of ``fn`` per second over at least ``seconds`` (in batches of 20)."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            fn()
        count += 20
    return count / elapsed


def measure(seconds: float = 1.5, core: int | None = 0) -> tuple[float, int | None]:
    """(decrypts per second, the core the thread was pinned to or None if unpinned).

    The calling thread is pinned to ``core`` while it counts, if the platform has
    ``os.sched_setaffinity``, the machine has that core and the kernel allows it; its
    previous affinity is restored afterwards.
    """
    fn = decrypt()
    previous: set[int] | None = None
    pinned: int | None = None
    if core is not None and hasattr(os, "sched_setaffinity"):
        previous = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, {core})
            pinned = core
        except (OSError, ValueError):
            pass                     # no such core here, or not allowed: count unpinned
    try:
        count_rate(fn, WARMUP_SECONDS)
        rate = count_rate(fn, seconds)
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)
    return rate, pinned


def rsa_rate(seconds: float = 1.5, core: int | None = 0) -> float:
    """RSA-2048 OAEP-256 decrypts per second, one thread pinned to ``core``."""
    return measure(seconds, core)[0]


def bracket(before: float, after: float) -> str:
    """The line the bench scripts print: the yardstick before their first round and
    after their last."""
    return f"yardstick ({UNIT}, 1 thread): {before:.0f} before, {after:.0f} after"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--core", type=int, default=0, help="-1: leave the thread unpinned")
    args = parser.parse_args()
    rate, pinned = measure(args.seconds, None if args.core < 0 else args.core)
    where = "unpinned" if pinned is None else f"core {pinned}"
    print(f"yardstick: {rate:.0f} RSA-2048 OAEP-256 decrypts/s (1 thread, {where})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
