"""Chooses the codec implementation: the Cython kernel, or its pure-Python twin.

The kernel is used whenever it is built and importable, unless the environment
variable ``PAYGATE_NO_EXTENSIONS=1`` forces the twin. ``IMPLEMENTATION`` says
which one was loaded ("kernel" or "twin"), so tests and operators can check
that the kernel did not silently fall back.
"""

from __future__ import annotations

import os
from types import ModuleType

from codec import _twin


def _choose() -> ModuleType:
    if os.environ.get("PAYGATE_NO_EXTENSIONS", "") not in ("", "0"):
        return _twin
    try:
        from codec import _kernel  # type: ignore[attr-defined]
    except ImportError:
        return _twin
    return _kernel  # type: ignore[no-any-return]


impl = _choose()
encode = impl.encode
decode = impl.decode
IMPLEMENTATION: str = impl.IMPLEMENTATION
