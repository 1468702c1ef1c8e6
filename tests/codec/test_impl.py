"""The implementation switch: kernel unless PAYGATE_NO_EXTENSIONS=1, and never a
silent fallback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import KERNEL, KERNEL_EXPECTED

import codec


def test_kernel_is_loaded_when_it_was_built() -> None:
    """When the kernel is expected (the default build), codec runs on it, not the twin."""
    if not KERNEL_EXPECTED:
        pytest.skip("PAYGATE_NO_EXTENSIONS=1: the twin is expected")
    assert KERNEL is not None, "codec._kernel did not import: the build fell back silently"
    assert codec.IMPLEMENTATION == "kernel"
    assert codec.encode.__module__ == "codec" and KERNEL.IMPLEMENTATION == "kernel"


def _implementation_with(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PAYGATE_NO_EXTENSIONS"}
    if env_value is not None:
        env["PAYGATE_NO_EXTENSIONS"] = env_value
    out = subprocess.run([sys.executable, "-c", "import codec; print(codec.IMPLEMENTATION)"],
                         capture_output=True, text=True, env=env, check=True, cwd="/")
    return out.stdout.strip()


def test_environment_variable_forces_the_twin() -> None:
    """PAYGATE_NO_EXTENSIONS=1 makes codec use the pure-Python twin."""
    assert _implementation_with("1") == "twin"


def test_without_the_variable_the_kernel_is_chosen() -> None:
    """With the variable unset or 0, codec chooses the kernel (when built)."""
    if not KERNEL_EXPECTED:
        pytest.skip("PAYGATE_NO_EXTENSIONS=1: the kernel is not built")
    assert _implementation_with(None) == "kernel"
    assert _implementation_with("0") == "kernel"
