"""Built-in specs, shipped as JSON data beside this module.

* ``network`` - the dialect netsim speaks: ISO 8583:1987, ASCII fields, binary
  bitmaps, field 55 binary LLLVAR (ASCII length, up to 255 bytes).
* ``network_ascii`` - the all-ASCII variant: hex-text bitmaps, binary fields
  (PIN block, MAC, ICC data) carried as hex text.

Each is a plain dict in pyiso8583's format, so it also works with pyiso8583.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def load_builtin(name: str) -> dict[str, Any]:
    """Return a fresh copy of the built-in spec ``name`` (a JSON file here)."""
    text = (resources.files(__name__) / f"{name}.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


network: dict[str, Any] = load_builtin("network")
network_ascii: dict[str, Any] = load_builtin("network_ascii")

__all__ = ["load_builtin", "network", "network_ascii"]
