"""Which event loop a paygate process runs on.

Every long-running command (``paygate up``, ``edge serve``, ``netsim serve``,
``reconcile``) takes ``--loop auto|uvloop|asyncio``; ``auto`` (the default) is
uvloop when it is installed, else asyncio's own loop. uvloop's transports and
callbacks cost markedly less per message than asyncio's (see ``bench/README.md``);
the code runs unchanged on both, and the tests run the network paths on both.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["LOOPS", "add_loop_argument", "loop_factory", "run"]

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
#: The choices of ``--loop``.
LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(choice: str = "auto") -> LoopFactory | None:
    """The event loop to run on: uvloop's if installed (``auto``) or asked for,
    ``None`` for asyncio's default. Asking for uvloop without it is an error."""
    if choice not in LOOPS:
        raise ValueError(f"--loop must be one of {', '.join(LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("--loop uvloop: uvloop is not installed") from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


def add_loop_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--loop`` to a command's parser."""
    parser.add_argument("--loop", choices=LOOPS, default="auto",
                        help="event loop (default: uvloop when installed, else asyncio's)")


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``choice`` names."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
