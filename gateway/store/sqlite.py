"""SQLite with one writer that group-commits.

Every write is a function of a ``sqlite3.Connection`` handed to the writer
thread. The writer takes whatever is queued (up to ``max_batch`` jobs), runs
each inside its own SAVEPOINT (a failing job rolls back alone), and commits
the batch once: many concurrent callers share one fsync. A caller's future
resolves only after the commit is durable (WAL, ``synchronous=FULL``).

Writes from asyncio are coalesced on the event loop first: every write
submitted during one turn of the loop goes to the writer as one batch, and
the batch's futures are resolved with a single wake-up of the loop. Under load
this is what makes batches big (one commit, one fsync, one set of WAL pages
for dozens of writes) without adding a timer.

Reads run on a separate thread with its own connection (WAL lets them proceed
while the writer works). Both are usable from asyncio (``write``/``read``) and
from plain threads (``write_sync``/``read_sync``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

T = TypeVar("T")
_STOP: Final = object()
_Job = tuple[Callable[[sqlite3.Connection], Any], "cf.Future[Any] | asyncio.Future[Any]"]


def _resolve(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in results:
        if future.done():
            continue                  # the caller gave up waiting (cancelled)
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class StoreClosed(RuntimeError):
    """The store was closed while work was queued."""


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
    """A SQLite file with a group-committing writer thread and a reader thread."""

    def __init__(self, path: Path | str, *, schema: Sequence[str] = (),
                 max_batch: int = 512, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_batch = max_batch
        self._writer_conn = connect(self.path, synchronous=synchronous)
        for statement in schema:
            self._writer_conn.execute(statement)
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
        self.commits = 0          # batches committed (for tests and metrics)
        self.jobs_committed = 0
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SqliteDatabase({str(self.path)!r})"

    # -- the writer ----------------------------------------------------------------
    def _run(self) -> None:
        conn = self._writer_conn
        while True:
            first = self._jobs.get()
            if first is _STOP:
                break
            groups = [first]
            size = len(first)
            stop = False
            while size < self._max_batch:
                try:
                    group = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if group is _STOP:
                    stop = True
                    break
                groups.append(group)
                size += len(group)
            self._commit(conn, [job for group in groups for job in group])
            if stop:
                break
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
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
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(batch)
        else:
            self.commits += 1
            self.jobs_committed += len(batch)
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
        for loop, results in by_loop.items():
            with contextlib.suppress(RuntimeError):       # that loop is closed
                loop.call_soon_threadsafe(_resolve, results)

    # -- the API -------------------------------------------------------------------
    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> cf.Future[T]:
        """Queue a write; the future resolves after its batch is committed."""
        if self._closed:
            raise StoreClosed("the store is closed")
        future: cf.Future[T] = cf.Future()
        self._jobs.put([(fn, future)])
        return future

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer's next batch and wait until it is durable."""
        if self._closed:
            raise StoreClosed("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._pending and self._pending_loop is not loop:
            self._flush()
        self._pending.append((fn, future))
        if len(self._pending) == 1:
            self._pending_loop = loop
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Hand what this turn of the loop wrote to the writer, as one group."""
        if self._pending:
            group, self._pending = self._pending, []
            self._jobs.put(group)

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
        self._flush()
        self._jobs.put(_STOP)
        self._thread.join()
        with self._now_lock:
            self._now_conn.close()
        self._reader.submit(self._reader_conn.close).result()
        self._reader.shutdown()
