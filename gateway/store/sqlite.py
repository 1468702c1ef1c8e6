"""SQLite with one writer connection that group-commits.

Every write is a function of a ``sqlite3.Connection`` (a *job*). Jobs run in
batches inside one transaction, each job in its own SAVEPOINT (a failing job
rolls back alone), and the batch commits once: many concurrent callers share
one fsync. A caller's future resolves only after the commit is durable (WAL,
``synchronous=FULL``).

Writes from asyncio are batched on the event loop: every write submitted
during one turn of the loop, or while the previous batch was committing, forms
the next batch. The loop runs that batch's statements itself (``BEGIN
IMMEDIATE``, the jobs) and hands only the ``COMMIT`` (the WAL write and its
fsync) to the writer thread, which resolves the batch's futures with one
wake-up of the loop and then lets the loop start the next batch. Running the
statements where the callers are avoids a GIL hand-off per statement between
the loop and the writer thread (each ``sqlite3`` call releases the GIL); the
commit, which waits on the disk, is the part worth a thread. The loop never
waits for another process's lock: if ``BEGIN IMMEDIATE`` finds the database
locked, the batch goes to the writer thread, which waits (up to ``busy_wait``
seconds) and runs it there.

Writes from plain threads (``submit``/``write_sync``) run on the writer thread.
The connection has one owner at a time (the loop's batch, from its ``BEGIN``
to the writer's ``COMMIT``, or the writer thread's own batch); the other waits
its turn without blocking anyone.

Reads run on a separate thread with its own connection (WAL lets them proceed
while a batch is open), or in the caller's thread on a third connection
(``read_now``). Both are usable from asyncio (``read``/``read_now``) and from
plain threads (``read_sync``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

T = TypeVar("T")
_STOP: Final = object()
_SQLITE_BUSY: Final = 5
_Job = tuple[Callable[[sqlite3.Connection], Any], "cf.Future[Any] | asyncio.Future[Any]"]
_Outcome = tuple[bool, Any]


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():
            continue                  # the caller gave up waiting (cancelled)
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _is_busy(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == _SQLITE_BUSY


class StoreClosed(RuntimeError):
    """The store was closed while work was queued."""


class _Locked(Exception):
    """``BEGIN IMMEDIATE`` found the database locked by another connection."""


@dataclass(frozen=True)
class _Opened:
    """A batch whose statements ran on the event loop; the writer commits it."""
    batch: list[_Job]
    outcomes: list[_Outcome] | BaseException


def connect(path: Path | str, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection configured as the gateway's store expects (WAL, FULL, FKs on)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False,
                           timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SqliteDatabase:
    """A SQLite file with a group-committing writer and a reader thread."""

    def __init__(self, path: Path | str, *, schema: Sequence[str] = (),
                 max_batch: int = 512, synchronous: str = "FULL",
                 busy_wait: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_batch = max_batch
        self._busy_wait = busy_wait
        self._writer_conn = connect(self.path, synchronous=synchronous)
        for statement in schema:
            self._writer_conn.execute(statement)
        # The writer connection never sleeps inside SQLite: the loop must not block on
        # another process's lock, and the writer thread retries on its own (_begin).
        self._writer_conn.execute("PRAGMA busy_timeout=0")
        self._reader_conn = connect(self.path, synchronous=synchronous)
        # For short point reads run in the caller's thread (read_now): its own connection,
        # used by one thread at a time.
        self._now_conn = connect(self.path, synchronous=synchronous)
        self._now_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader = cf.ThreadPoolExecutor(1, thread_name_prefix="store-reader")
        self._closed = False
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._pending_loop: asyncio.AbstractEventLoop | None = None
        # Who owns the writer connection: _owned is set from a batch's BEGIN to its
        # COMMIT. _waiting: groups the writer thread took while the loop owned it;
        # _wake: the loop to call back (_flush) once the connection is free.
        self._state = threading.Lock()
        self._owned = False
        self._waiting: list[list[_Job]] = []
        self._wake: asyncio.AbstractEventLoop | None = None
        self.commits = 0          # batches committed (for tests and metrics)
        self.jobs_committed = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SqliteDatabase({str(self.path)!r})"

    # -- running a batch -------------------------------------------------------------
    def _begin(self, conn: sqlite3.Connection, *, wait: bool) -> None:
        """``BEGIN IMMEDIATE``; on a lock held elsewhere raise :class:`_Locked` at once
        (``wait=False``) or retry with a capped backoff for up to ``busy_wait`` s."""
        deadline = time.monotonic() + self._busy_wait
        delay = 0.001
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if not wait:
                    raise _Locked from None
                if time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    @staticmethod
    def _run_jobs(conn: sqlite3.Connection, batch: list[_Job]) -> list[_Outcome]:
        """Each job in its own SAVEPOINT, inside the open transaction."""
        outcomes: list[_Outcome] = []
        for fn, _future in batch:
            conn.execute("SAVEPOINT job")
            try:
                result = fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((True, result))
        return outcomes

    def _finish(self, conn: sqlite3.Connection, batch: list[_Job],
                outcomes: list[_Outcome] | BaseException) -> None:
        """On the writer thread: COMMIT (unless the batch already failed), free the
        connection, resolve the batch's futures."""
        if isinstance(outcomes, BaseException):
            outcomes = [(False, outcomes)] * len(batch)
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                outcomes = [(False, exc)] * len(batch)
            else:
                self.commits += 1
                self.jobs_committed += len(batch)
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        with self._state:
            wake, self._wake = self._wake, None
            self._owned = bool(self._waiting)   # a waiting group takes it over at once
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_fn, target), (ok, value) in zip(batch, outcomes, strict=True):
            if isinstance(target, cf.Future):
                if target.set_running_or_notify_cancel():
                    if ok:
                        target.set_result(value)
                    else:
                        target.set_exception(value)
            else:
                by_loop.setdefault(target.get_loop(), []).append((target, ok, value))
        if wake is not None:
            by_loop.setdefault(wake, [])
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):       # that loop is closed
                loop.call_soon_threadsafe(self._committed, results, loop is wake)

    def _committed(self, results: list[tuple[asyncio.Future[Any], bool, Any]],
                   flush: bool) -> None:
        """On the loop: resolve a batch's futures; start the next batch if one waits."""
        _resolve(results)
        if flush:
            self._flush()

    def _run_group(self, conn: sqlite3.Connection, group: list[_Job]) -> None:
        """On the writer thread, owning the connection: run and commit ``group``."""
        try:
            self._begin(conn, wait=True)
            outcomes: list[_Outcome] | BaseException = self._run_jobs(conn, group)
        except sqlite3.Error as exc:
            outcomes = exc
        self._finish(conn, group, outcomes)

    # -- the writer thread -----------------------------------------------------------
    def _run(self) -> None:
        conn = self._writer_conn
        while True:
            item = self._jobs.get()
            if item is _STOP:
                break
            if isinstance(item, _Opened):
                self._finish(conn, item.batch, item.outcomes)
            else:
                with self._state:
                    if self._owned:            # the loop's batch is open: after it
                        self._waiting.append(item)
                        continue
                    self._owned = True
                self._run_group(conn, item)
            self._run_waiting(conn)
        self._run_waiting(conn)
        conn.close()

    def _run_waiting(self, conn: sqlite3.Connection) -> None:
        """Groups that waited for the loop's batch: ``_finish`` left the connection
        owned on their behalf."""
        while True:
            with self._state:
                if not self._waiting:
                    return
                group = self._waiting.pop(0)
            self._run_group(conn, group)

    # -- the API -------------------------------------------------------------------
    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> cf.Future[T]:
        """Queue a write for the writer thread; the future resolves after its batch
        is committed."""
        if self._closed:
            raise StoreClosed("the store is closed")
        future: cf.Future[T] = cf.Future()
        self._jobs.put([(fn, future)])
        return future

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the next batch and wait until it is durable."""
        if self._closed:
            raise StoreClosed("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._pending and self._pending_loop is not loop:
            self._hand_over()
        self._pending.append((fn, future))
        if len(self._pending) == 1:
            self._pending_loop = loop
            loop.call_soon(self._flush)
        return await future

    def _hand_over(self) -> None:
        """Give the pending writes to the writer thread (another loop's, or at close)."""
        group, self._pending = self._pending, []
        with self._state:
            if self._wake is self._pending_loop:
                self._wake = None
        self._jobs.put(list(group))

    def _flush(self) -> None:
        """On the loop: run the pending writes as one batch, then hand its COMMIT to the
        writer thread. While the previous batch is still committing, wait for it (the
        writer calls back), so that the writes of several turns share one commit."""
        if (not self._pending or self._closed
                or self._pending_loop is not asyncio.get_running_loop()):
            return
        batch: list[_Job] = list(self._pending[:self._max_batch])
        with self._state:
            if self._owned:
                self._wake = self._pending_loop
                return
            self._owned = True
            del self._pending[:self._max_batch]
            if self._pending:               # more than one batch: the rest follows it
                self._wake = self._pending_loop
        conn = self._writer_conn
        try:
            self._begin(conn, wait=False)
            outcomes: list[_Outcome] | BaseException = self._run_jobs(conn, batch)
        except _Locked:                     # another process writes: the thread waits
            with self._state:
                self._owned = False         # the writer thread claims it for the group
            self._jobs.put(batch)
            return
        except sqlite3.Error as exc:        # the writer rolls back and fails the batch
            outcomes = exc
        self._jobs.put(_Opened(batch, outcomes))

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self.submit(fn).result()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the reader connection (sees every committed write)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, fn, self._reader_conn)

    async def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` right here, on a connection of its own, without a thread hop: for
        short point reads by key (an indexed lookup in a WAL database: tens of
        microseconds, less than the hop to the reader thread and back). Falls back to
        :meth:`read` when another thread is using that connection."""
        if not self._now_lock.acquire(blocking=False):
            return await self.read(fn)
        try:
            return fn(self._now_conn)
        finally:
            self._now_lock.release()

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._reader.submit(fn, self._reader_conn).result()

    def close(self) -> None:
        """Commit what is queued, then stop the threads and close the connections."""
        if self._closed:
            return
        self._closed = True
        if self._pending:
            self._hand_over()
        self._jobs.put(_STOP)
        self._thread.join()
        with self._now_lock:
            self._now_conn.close()
        self._reader.submit(self._reader_conn.close).result()
        self._reader.shutdown()
