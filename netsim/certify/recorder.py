"""The recorder: a live session's frames as a replayable JSON-lines file.

One line per frame, in the order seen::

    {"t": 0.0123, "dir": "in", "mti": "0100", "fields": {"2": "4242424242424242", ...},
     "hex": "30313030..."}

``t`` is seconds since the recorder opened; ``dir`` is ``"in"`` (received) or
``"out"`` (sent) from the recording side's view (netsim: ``in`` = from the gateway;
the gateway's connection: ``in`` = from the network); ``fields`` holds every field
as decoded (not the bitmaps), ``hex`` the whole payload. Card data policy: the PAN of
a test card (:data:`netsim.rules.TEST_CARDS`) is kept; any other PAN is masked
(first 6 / last 4) and the frame's ``hex`` is left out (``null``); a card security
code (field 48) is always masked (``CVC03***``), so a frame carrying one never has
``hex`` either; other card data (tracks, PIN block, chip data) is never written
(``"<redacted>"``). A frame that does not decode is written with ``mti`` null, no
fields and no ``hex`` (it may hold card data). Lines are flushed as they are
written, so a crash keeps what came before.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import IO, Any

import codec
from codec import dialect
from codec.errors import SENSITIVE_FIELDS, mask_pan
from netsim.rules import TEST_CARDS

__all__ = ["Recorder", "masked_fields"]

_NOT_FIELDS = frozenset({"t", "p", "1"})


def masked_fields(doc: dict[str, str]) -> tuple[dict[str, str], bool]:
    """The fields of ``doc`` as a recording keeps them, and whether any was masked."""
    out: dict[str, str] = {}
    masked = False
    for key, value in doc.items():
        if key in _NOT_FIELDS:
            continue
        if key == "2" and value not in TEST_CARDS:
            out[key], masked = mask_pan(value), True
        elif key == "48" and value.startswith("CVC"):
            out[key], masked = value[:5] + "*" * (len(value) - 5), True
        elif key in SENSITIVE_FIELDS and key != "2":
            out[key], masked = "<redacted>", True
        else:
            out[key] = value
    return out, masked


class Recorder:
    """Writes frames to ``path`` (see the module docstring); thread-safe; close it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = path.open("w", encoding="utf-8")
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self.frames = 0

    def frame(self, direction: str, payload: bytes) -> None:
        """Record one frame's payload, ``direction`` ``"in"`` or ``"out"``."""
        line: dict[str, Any] = {"t": round(time.monotonic() - self._start, 4),
                                "dir": direction}
        try:
            doc = codec.decode(payload, dialect.SPEC)
        except codec.DecodeError:
            line.update(mti=None, fields={}, hex=None)
        else:
            fields, masked = masked_fields(doc)
            line.update(mti=doc.get("t"), fields=fields, hex=None if masked else payload.hex())
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is not None:
                self._file.write(text)
                self._file.flush()
                self.frames += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
