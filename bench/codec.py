"""Codec speed: our Cython kernel and pure-Python twin against pyiso8583, one run.

Prints microseconds per encode and per decode of a realistic 0100 (20 data
fields, 140-byte field 55) and its 0110, for the kernel, the twin and
pyiso8583, and the ratios. The implementations are timed in interleaved rounds
and the median round is reported, so background noise hits all of them alike.

    .venv/bin/python bench/codec.py [--rounds N] [--json]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import iso8583

# This file is named codec.py, like the package it measures: take its folder off
# the import path so that `codec` means the installed package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.modules.pop("codec", None)
codec = importlib.import_module("codec")
_twin = importlib.import_module("codec._twin")
examples = importlib.import_module("codec.examples")
specs = importlib.import_module("codec.specs")

GOAL_KERNEL = 30.0


def _kernel() -> ModuleType:
    try:
        return importlib.import_module("codec._kernel")
    except ImportError:
        sys.exit("codec._kernel is not built: run `make build` first")


def _per_call_us(fn: Callable[[], object], target_s: float = 0.05) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    number = max(1, int(number * target_s / 0.2))
    return timer.timeit(number) / number * 1e6


def measure(rounds: int) -> dict[str, Any]:
    kernel = _kernel()
    spec = specs.network
    impls: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
        "kernel": (kernel.encode, kernel.decode),
        "twin": (_twin.encode, _twin.decode),
        "pyiso8583": (iso8583.encode, iso8583.decode),
    }
    messages = {"0100": examples.auth_request(), "0110": examples.auth_response()}
    samples: dict[tuple[str, str, str], list[float]] = {}
    for msg, doc in messages.items():
        raw = kernel.encode(doc, spec)
        assert bytes(iso8583.encode(dict(doc), spec)[0]) == raw == _twin.encode(doc, spec)
        for _ in range(rounds):
            for name, (enc, dec) in impls.items():
                samples.setdefault((msg, "encode", name), []).append(
                    _per_call_us(functools.partial(enc, doc, spec)))
                samples.setdefault((msg, "decode", name), []).append(
                    _per_call_us(functools.partial(dec, raw, spec)))
    medians = {"|".join(k): statistics.median(v) for k, v in samples.items()}
    return {"rounds": rounds, "us": medians}


def report(result: dict[str, Any]) -> bool:
    us = result["us"]
    print(f"codec benchmark, median of {result['rounds']} interleaved rounds (us per call)")
    print(f"{'message':8} {'op':7} {'kernel':>8} {'twin':>8} {'pyiso8583':>10} "
          f"{'peer/kernel':>12} {'peer/twin':>10}")
    ok = True
    for msg in ("0100", "0110"):
        for op in ("encode", "decode"):
            k, t, p = (us[f"{msg}|{op}|{n}"] for n in ("kernel", "twin", "pyiso8583"))
            print(f"{msg:8} {op:7} {k:8.2f} {t:8.2f} {p:10.2f} {p / k:11.1f}x {p / t:9.2f}x")
            ok = ok and p / k >= GOAL_KERNEL and t <= p
    print(f"goal: kernel >= {GOAL_KERNEL:.0f}x pyiso8583 and twin no slower than pyiso8583 "
          f"on all four: {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args()
    result = measure(args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    return 0 if report(result) else 1


if __name__ == "__main__":
    sys.exit(main())
