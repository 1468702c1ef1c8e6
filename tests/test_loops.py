"""Which event loop a paygate process runs on (gateway.loops): uvloop by default when
installed, asyncio's own on request, and a clear refusal of anything else."""

from __future__ import annotations

import argparse
import asyncio

import pytest
import uvloop

from gateway.loops import LOOPS, add_loop_argument, loop_factory, run


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop_and_asyncio_on_asyncios_own_loop() -> None:
    """``auto`` (uvloop is a dependency, so installed) and ``uvloop`` give uvloop's loop;
    ``asyncio`` gives asyncio's default loop; run() returns the coroutine's result."""
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    assert issubclass(run(_loop_type()), uvloop.Loop)
    assert issubclass(run(_loop_type(), "uvloop"), uvloop.Loop)
    used = run(_loop_type(), "asyncio")
    assert issubclass(used, asyncio.BaseEventLoop) and not issubclass(used, uvloop.Loop)


def test_an_unknown_loop_is_refused_by_the_api_and_by_the_command_line() -> None:
    """A name outside LOOPS raises ValueError; the --loop option rejects it and defaults
    to auto."""
    with pytest.raises(ValueError, match="--loop must be one of"):
        loop_factory("trio")
    parser = argparse.ArgumentParser()
    add_loop_argument(parser)
    assert parser.parse_args([]).loop == "auto"
    assert parser.parse_args(["--loop", "asyncio"]).loop == "asyncio"
    with pytest.raises(SystemExit):
        parser.parse_args(["--loop", "trio"])
    assert LOOPS == ("auto", "uvloop", "asyncio")
