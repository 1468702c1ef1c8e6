"""Random bytes from the OS's CSPRNG, read in 4 KiB blocks and handed out in draws.

Every ``os.urandom`` / ``secrets.token_bytes`` is a ``getrandom`` system call that
also releases the GIL: under load, the event loop's thread then waits for the
store's writer thread to hand the GIL back (a convoy), which cost more than the
work itself on the reconciler's and the edge's hot paths (a nonce per seal, an
id per attempt). One call per block instead of one per draw removes that.

The bytes are the CSPRNG's own, in order, each handed out once; the pool is
reset in a forked child (``os.register_at_fork``), so two processes never draw
the same bytes. Not for key material: keys are generated with
``secrets.token_bytes`` directly, so no key's bytes sit in a buffer beforehand.
"""

from __future__ import annotations

import os
import secrets
import threading
from typing import Final

__all__ = ["BLOCK", "POOL", "RandomPool"]

#: Bytes read from the OS at a time.
BLOCK: Final = 4096


class RandomPool:
    """Thread-safe draws of ``n`` bytes (``n`` up to :data:`BLOCK`) from buffered
    CSPRNG output; larger draws go to the OS directly."""

    def __init__(self, block: int = BLOCK) -> None:
        if block < 1:
            raise ValueError("block must be positive")
        self._block = block
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def draw(self, n: int) -> bytes:
        """``n`` fresh random bytes."""
        if n < 0:
            raise ValueError("n must not be negative")
        if n > self._block:
            return secrets.token_bytes(n)
        with self._lock:
            if self._offset + n > len(self._buffer):
                self._buffer, self._offset = secrets.token_bytes(self._block), 0
            start = self._offset
            self._offset = start + n
            return self._buffer[start:start + n]

    def reset(self) -> None:
        """Forget what is buffered (a forked child must not draw its parent's bytes)."""
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0


#: The process's pool.
POOL: Final = RandomPool()
os.register_at_fork(after_in_child=POOL.reset)
