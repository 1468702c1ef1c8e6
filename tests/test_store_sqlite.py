"""The SQLite database under the gateway's stores (gateway.store.sqlite): where writes
run and how they are batched and committed, and what reads see of them, on the reader
thread and in the caller's thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from gateway.store.sqlite import SqliteDatabase

SCHEMA = ("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",)


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


def _insert(key: str, value: int) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        return int(conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value)).rowcount)
    return job


def _where(conn: sqlite3.Connection) -> int:
    return threading.get_ident()


def test_read_now_runs_in_the_callers_thread_and_sees_every_committed_write(
        tmp_path: Path) -> None:
    """After a write is awaited (committed), read_now sees it, without leaving the event
    loop's thread; read (the reader thread) sees the same."""
    db = SqliteDatabase(tmp_path / "db.sqlite", schema=SCHEMA)
    try:
        async def run() -> tuple[int, int, int, int]:
            for i in range(5):
                await db.write(_insert(f"k{i}", i))
            here = threading.get_ident()
            return (await db.read_now(_count), await db.read(_count),
                    int(await db.read_now(_where) == here), int(await db.read(_where) == here))

        now_count, reader_count, now_here, reader_here = asyncio.run(run())
        assert (now_count, reader_count) == (5, 5)
        assert (now_here, reader_here) == (1, 0)
    finally:
        db.close()


def test_read_now_falls_back_to_the_reader_thread_while_its_connection_is_busy(
        tmp_path: Path) -> None:
    """If another thread holds the in-thread connection, read_now does not wait for it:
    the read goes to the reader thread and still answers."""
    db = SqliteDatabase(tmp_path / "db.sqlite", schema=SCHEMA)
    try:
        async def run() -> tuple[int, bool]:
            await db.write(_insert("a", 1))
            here = threading.get_ident()
            with db._now_lock:                   # as if another thread were reading
                count = await db.read_now(_count)
                where = await db.read_now(_where)
            return count, where != here

        assert asyncio.run(run()) == (1, True)
    finally:
        db.close()


def test_async_writes_run_their_statements_on_the_loop_and_sync_writes_on_the_writer(
        tmp_path: Path) -> None:
    """A write awaited from asyncio runs its job in the event loop's thread (only the
    COMMIT goes to the writer thread); a write from a plain thread runs on the writer."""
    db = SqliteDatabase(tmp_path / "db.sqlite", schema=SCHEMA)
    try:
        async def run() -> tuple[bool, int]:
            where = await db.write(_where)
            return where == threading.get_ident(), await db.write(_insert("a", 1))

        on_loop, inserted = asyncio.run(run())
        from_thread = db.write_sync(_where)
        assert (on_loop, inserted) == (True, 1)
        assert from_thread == db._thread.ident
        assert db.read_sync(_count) == 1
    finally:
        db.close()


def test_more_writes_than_one_batch_holds_all_commit_in_several_batches(
        tmp_path: Path) -> None:
    """Concurrent writes beyond max_batch are split into batches of at most max_batch,
    and every one of them is committed (none waits forever for a wake-up)."""
    db = SqliteDatabase(tmp_path / "db.sqlite", schema=SCHEMA, max_batch=8)
    try:
        async def run() -> list[int]:
            return await asyncio.wait_for(asyncio.gather(
                *(db.write(_insert(f"k{i}", i)) for i in range(100))), 30)

        assert asyncio.run(run()) == [1] * 100
        assert db.read_sync(_count) == 100
        assert 13 <= db.commits < 100
    finally:
        db.close()


def test_async_and_thread_writes_interleave_without_losing_any(tmp_path: Path) -> None:
    """While the loop writes in batches, another thread's write_sync calls take their
    turns on the connection: every write of both commits, each exactly once."""
    db = SqliteDatabase(tmp_path / "db.sqlite", schema=SCHEMA)
    try:
        def from_thread() -> None:
            for i in range(50):
                db.write_sync(_insert(f"t{i}", i))

        async def run() -> None:
            worker = asyncio.create_task(asyncio.to_thread(from_thread))
            for burst in range(20):
                await asyncio.gather(*(db.write(_insert(f"a{burst}.{i}", i))
                                       for i in range(10)))
            await asyncio.wait_for(worker, 30)

        asyncio.run(run())
        assert db.read_sync(_count) == 250
        assert db.jobs_committed == 250
    finally:
        db.close()


def test_a_write_waits_for_another_connections_lock_without_blocking_the_loop(
        tmp_path: Path) -> None:
    """If another connection (another process) holds the write lock, an awaited write
    waits on the writer thread while the event loop keeps running; it commits once the
    lock is released."""
    db = SqliteDatabase(tmp_path / "db.sqlite", schema=SCHEMA)
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")

        async def run() -> tuple[int, int, bool]:
            write = asyncio.create_task(db.write(_insert("a", 1)))
            ticks = 0
            for _ in range(20):                      # the loop turns while the write waits
                await asyncio.sleep(0.01)
                ticks += 1
            waiting = not write.done()
            other.execute("COMMIT")
            return await asyncio.wait_for(write, 30), ticks, waiting

        inserted, ticks, waited = asyncio.run(run())
        assert (inserted, ticks, waited) == (1, 20, True)
        assert db.read_sync(_count) == 1
    finally:
        other.close()
        db.close()


def test_a_failing_job_rolls_back_alone_and_its_batch_commits(tmp_path: Path) -> None:
    """In one batch, a job that raises leaves no trace and gets its exception; the
    other jobs of the batch commit."""
    db = SqliteDatabase(tmp_path / "db.sqlite", schema=SCHEMA)
    try:
        def failing(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO t (k, v) VALUES ('bad', 0)")
            raise ValueError("refused")

        async def run() -> list[object]:
            return list(await asyncio.gather(db.write(_insert("a", 1)), db.write(failing),
                                             db.write(_insert("b", 2)),
                                             return_exceptions=True))

        first, error, last = asyncio.run(run())
        assert (first, last) == (1, 1)
        assert isinstance(error, ValueError) and str(error) == "refused"
        assert db.read_sync(lambda conn: [r[0] for r in conn.execute(
            "SELECT k FROM t ORDER BY k")]) == ["a", "b"]
        assert db.commits == 1
    finally:
        db.close()


def test_two_databases_on_one_file_write_concurrently_without_losing_a_write(
        tmp_path: Path) -> None:
    """Two SqliteDatabase objects on the same file (as two processes would be: the
    gateway and a standalone reconciler), each under a burst of writes from its own event
    loop: every write of both commits exactly once; whoever finds the file locked waits
    on its writer thread instead of failing."""
    path = tmp_path / "db.sqlite"
    first, second = (SqliteDatabase(path, schema=SCHEMA) for _ in range(2))
    errors: list[BaseException] = []

    def writer(db: SqliteDatabase, name: str) -> None:
        async def run() -> None:
            for burst in range(10):
                await asyncio.gather(*(db.write(_insert(f"{name}{burst}.{i}", i))
                                       for i in range(30)))
        try:
            asyncio.run(run())
        except BaseException as exc:   # reported below, in the test's thread
            errors.append(exc)

    try:
        threads = [threading.Thread(target=writer, args=(db, name))
                   for db, name in ((first, "a"), (second, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert first.read_sync(_count) == 600
        assert first.jobs_committed == second.jobs_committed == 300
    finally:
        first.close()
        second.close()
