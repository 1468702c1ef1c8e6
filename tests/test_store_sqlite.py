"""The SQLite database under the gateway's stores (gateway.store.sqlite): what reads see
of the group-committing writer's work, on the reader thread and in the caller's thread."""

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
