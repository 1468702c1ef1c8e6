"""Trace numbers for network requests: the STAN (field 11) and the RRN (field 37).

:class:`StanStore` is the store interface: ``next_stan(terminal_id, day)``
returns a STAN in 1..999999 that is not handed out again for that terminal and
day (until 999,999 allocations wrap the counter), across restarts.
:class:`SqliteStanStore` implements it on a SQLite file; with ``reserve=N`` it
makes a block of N STANs durable with one commit and hands them out from memory
(a restart skips what was left of the block, as a jPOS sequencer would), so
most requests need no fsync of their own for the STAN.

:class:`TraceAllocator` turns a STAN into everything a request needs to be
traced: fields 7, 11, 12, 13 and 37. Allocation is separate from sending: the
caller allocates, records the attempt durably, and only then sends.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from types import TracebackType
from typing import Protocol, runtime_checkable

from codec.dialect import transmission_time

__all__ = [
    "STAN_MAX",
    "SqliteStanStore",
    "StanStore",
    "Trace",
    "TraceAllocator",
    "format_stan",
    "retrieval_reference",
]

#: The largest STAN; the one after it is 1 again (0 is never used).
STAN_MAX = 999_999


@runtime_checkable
class StanStore(Protocol):
    """Where STANs come from; the gateway's store implements the same interface."""

    def next_stan(self, terminal_id: str, day: date) -> int:
        """Return the next STAN (1..999999) for ``terminal_id``, durably.

        A value is never returned twice for the same terminal and day, also
        across restarts, unless 999,999 STANs were allocated in between.
        """
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS network_stan (
    terminal_id TEXT PRIMARY KEY,
    last_stan   INTEGER NOT NULL CHECK (last_stan BETWEEN 1 AND 999999),
    last_day    TEXT NOT NULL
)
"""

# One atomic step: reserve the first block, or advance the counter by a block (a block
# never straddles the wrap: one that would runs 1..reserve instead). The value stored,
# and returned, is the last STAN of the block.
_NEXT = """
INSERT INTO network_stan (terminal_id, last_stan, last_day) VALUES (:terminal, :reserve, :day)
ON CONFLICT (terminal_id) DO UPDATE SET
    last_stan = CASE WHEN last_stan + :reserve > :max THEN :reserve
                     ELSE last_stan + :reserve END,
    last_day = excluded.last_day
RETURNING last_stan
"""


class SqliteStanStore:
    """A :class:`StanStore` on a SQLite file (WAL, ``synchronous=FULL``).

    One counter per terminal that keeps counting across days (so a STAN of
    late yesterday is not reused early today, when a late response for it may
    still be on its way), wrapping from 999999 to 1. Each call is one
    ``BEGIN IMMEDIATE`` transaction with a single upsert ... RETURNING, committed
    (and fsynced) before the value is returned. Thread-safe; several processes
    may share the file (writers serialize on SQLite's lock, and each process's
    blocks are its own). Calls that reserve a block block for the commit: from
    asyncio, try :meth:`next_stan_nowait` and call :meth:`next_stan` in a thread
    only when it returns None.

    ``reserve`` STANs are made durable per commit (1: every STAN its own
    commit). The rest of a reserved block is never handed out again, also after a
    restart, which starts a new block: a crash skips at most ``reserve - 1``.
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0,
                 reserve: int = 1) -> None:
        if not 1 <= reserve <= 10_000:
            raise ValueError("reserve must be in 1..10000")
        self.path = Path(path)
        self.reserve = reserve
        self._lock = threading.Lock()
        # terminal -> (next STAN to hand out, last STAN of the durable block)
        self._blocks: dict[str, tuple[int, int]] = {}
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def next_stan(self, terminal_id: str, day: date) -> int:
        """Advance the terminal's counter and return the new STAN (see :class:`StanStore`)."""
        if not terminal_id:
            raise ValueError("terminal_id must not be empty")
        with self._lock:
            stan = self._from_block(terminal_id)
            if stan is not None:
                return stan
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                rows = db.execute(_NEXT, {"terminal": terminal_id, "reserve": self.reserve,
                                          "day": day.isoformat(), "max": STAN_MAX}).fetchall()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            last = int(rows[0][0])
            self._blocks[terminal_id] = (last - self.reserve + 2, last)
            return last - self.reserve + 1

    def next_stan_nowait(self, terminal_id: str) -> int | None:
        """The next STAN of the terminal's durable block, without I/O or waiting; None
        when the block is used up (or another thread holds the store): then call
        :meth:`next_stan`."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            return self._from_block(terminal_id)
        finally:
            self._lock.release()

    def _from_block(self, terminal_id: str) -> int | None:
        block = self._blocks.get(terminal_id)
        if block is None or block[0] > block[1]:
            return None
        self._blocks[terminal_id] = (block[0] + 1, block[1])
        return block[0]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteStanStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def format_stan(stan: int) -> str:
    """Field 11: the STAN as 6 digits."""
    if not 1 <= stan <= STAN_MAX:
        raise ValueError("a STAN is in 1..999999")
    return f"{stan:06d}"


def retrieval_reference(moment: datetime, stan: str) -> str:
    """Field 37: last digit of the year, day of the year (3), hour (2), STAN (6)."""
    if len(stan) != 6 or not stan.isdigit():
        raise ValueError("the STAN must be 6 digits")
    return f"{moment.year % 10}{moment.timetuple().tm_yday:03d}{moment.hour:02d}{stan}"


@dataclass(frozen=True, slots=True)
class Trace:
    """The trace of one request: the fields that identify it on the network."""

    stan: str          # field 11
    rrn: str           # field 37
    transmitted: str   # field 7, MMDDhhmmss UTC
    local_time: str    # field 12, hhmmss
    local_date: str    # field 13, MMDD
    terminal_id: str   # field 41

    def fields(self) -> dict[str, str]:
        """The trace as message fields: 7, 11, 12, 13, 37 and 41."""
        return {"7": self.transmitted, "11": self.stan, "12": self.local_time,
                "13": self.local_date, "37": self.rrn, "41": self.terminal_id}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TraceAllocator:
    """Allocates a :class:`Trace` per request for one terminal.

    ``clock`` returns the current time (timezone-aware; naive values are taken
    as UTC). The STAN's day, the RRN and field 7 use UTC; fields 12 and 13 use
    ``local_tz`` (the card acceptor's time zone), or the clock's own zone when
    ``local_tz`` is None. :meth:`allocate` blocks for the store's commit.
    """

    def __init__(
        self,
        store: StanStore,
        terminal_id: str,
        *,
        clock: Callable[[], datetime] = _utc_now,
        local_tz: tzinfo | None = None,
    ) -> None:
        if not terminal_id or len(terminal_id) > 8:
            raise ValueError("terminal_id (field 41) must be 1 to 8 characters")
        self._store = store
        self._terminal_id = terminal_id
        self._clock = clock
        self._local_tz = local_tz

    @property
    def terminal_id(self) -> str:
        """Field 41 of every trace this allocator hands out."""
        return self._terminal_id

    def allocate(self) -> Trace:
        """Allocate the next STAN durably and return the request's trace (blocks for
        the store's commit when it needs one)."""
        now = self._now()
        return self._trace(now, self._store.next_stan(self._terminal_id,
                                                      now.astimezone(UTC).date()))

    async def allocate_async(self) -> Trace:
        """:meth:`allocate` for the event loop: from the store's durable block when it
        has one ready, else the commit runs in a thread."""
        nowait = getattr(self._store, "next_stan_nowait", None)
        stan = nowait(self._terminal_id) if nowait is not None else None
        if stan is None:
            return await asyncio.to_thread(self.allocate)
        return self._trace(self._now(), stan)

    def _now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now

    def _trace(self, now: datetime, number: int) -> Trace:
        utc = now.astimezone(UTC)
        local = now.astimezone(self._local_tz) if self._local_tz is not None else now
        stan = format_stan(number)
        return Trace(
            stan=stan,
            rrn=retrieval_reference(utc, stan),
            transmitted=transmission_time(utc),
            local_time=local.strftime("%H%M%S"),
            local_date=local.strftime("%m%d"),
            terminal_id=self._terminal_id,
        )
