"""STAN and RRN allocation: persistence, wrap-around, uniqueness under threads, formats."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from scripted_host import MemoryStanStore

from gateway.network import (
    SqliteStanStore,
    StanStore,
    TraceAllocator,
    format_stan,
    retrieval_reference,
)

DAY = date(2026, 11, 22)


def test_stan_starts_at_one_and_counts_per_terminal(tmp_path: Path) -> None:
    """Each terminal has its own counter starting at 000001."""
    with SqliteStanStore(tmp_path / "stan.db") as store:
        assert [store.next_stan("T1", DAY) for _ in range(3)] == [1, 2, 3]
        assert store.next_stan("T2", DAY) == 1
        assert store.next_stan("T1", DAY) == 4


def test_stan_survives_a_restart(tmp_path: Path) -> None:
    """A new store on the same file continues after the last STAN handed out."""
    path = tmp_path / "stan.db"
    with SqliteStanStore(path) as store:
        first = [store.next_stan("TERM0001", DAY) for _ in range(5)]
    with SqliteStanStore(path) as store:
        second = [store.next_stan("TERM0001", DAY) for _ in range(5)]
    assert first == [1, 2, 3, 4, 5]
    assert second == [6, 7, 8, 9, 10]


def test_stan_is_not_reset_at_midnight(tmp_path: Path) -> None:
    """The counter keeps counting into the next day, so no STAN of yesterday is reused early."""
    with SqliteStanStore(tmp_path / "stan.db") as store:
        assert store.next_stan("TERM0001", DAY) == 1
        assert store.next_stan("TERM0001", DAY + timedelta(days=1)) == 2


def test_stan_wraps_from_999999_to_000001(tmp_path: Path) -> None:
    """After 999999 the next STAN is 1 (never 0, never 7 digits)."""
    path = tmp_path / "stan.db"
    with SqliteStanStore(path) as store:
        store.next_stan("TERM0001", DAY)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE network_stan SET last_stan = 999998 WHERE terminal_id = 'TERM0001'")
    db.close()
    with SqliteStanStore(path) as store:
        got = [store.next_stan("TERM0001", DAY) for _ in range(3)]
    assert got == [999_999, 1, 2]
    assert [format_stan(s) for s in got] == ["999999", "000001", "000002"]


def _draw_in_threads(stores: tuple[SqliteStanStore, SqliteStanStore],
                     draw: Callable[[SqliteStanStore], list[int]]) -> list[int]:
    """Six threads, three on each store, each running ``draw``; every STAN they got."""
    got: list[int] = []
    lock = threading.Lock()

    def work(store: SqliteStanStore) -> None:
        mine = draw(store)
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=work, args=(stores[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return got


def test_stan_unique_under_threads_and_two_stores(tmp_path: Path) -> None:
    """Threads sharing one store and a second store on the same file never get the same STAN."""
    path = tmp_path / "stan.db"
    with SqliteStanStore(path) as one, SqliteStanStore(path) as two:
        got = _draw_in_threads((one, two), lambda store: [
            store.next_stan("TERM0001", DAY) for _ in range(40)])
    assert len(got) == 240
    assert sorted(got) == list(range(1, 241))


def _stored_last(path: Path, terminal: str = "TERM0001") -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT last_stan FROM network_stan WHERE terminal_id = ?",
                              (terminal,)).fetchone()[0])
    finally:
        db.close()


def test_a_reserved_block_is_durable_before_its_first_stan_is_handed_out(tmp_path: Path) -> None:
    """With reserve=10 the first call makes STANs 1..10 durable in one commit and the next
    nine come from memory; the eleventh reserves 11..20."""
    path = tmp_path / "stan.db"
    with SqliteStanStore(path, reserve=10) as store:
        assert store.next_stan("TERM0001", DAY) == 1
        assert _stored_last(path) == 10
        assert [store.next_stan("TERM0001", DAY) for _ in range(9)] == list(range(2, 11))
        assert _stored_last(path) == 10
        assert store.next_stan("TERM0001", DAY) == 11
        assert _stored_last(path) == 20


def test_a_restart_skips_the_rest_of_a_reserved_block_and_never_repeats(tmp_path: Path) -> None:
    """A new store (a restarted process) starts after the last block, never inside it."""
    path = tmp_path / "stan.db"
    with SqliteStanStore(path, reserve=10) as store:
        first = [store.next_stan("TERM0001", DAY) for _ in range(3)]
    with SqliteStanStore(path, reserve=10) as store:
        second = [store.next_stan("TERM0001", DAY) for _ in range(3)]
    assert first == [1, 2, 3]
    assert second == [11, 12, 13]


def test_next_stan_nowait_hands_out_only_what_is_already_durable(tmp_path: Path) -> None:
    """Without a reserved block ``next_stan_nowait`` returns None (no I/O on the event loop);
    inside one it returns the next STAN, and None again once the block is used up."""
    with SqliteStanStore(tmp_path / "stan.db", reserve=3) as store:
        assert store.next_stan_nowait("TERM0001") is None
        assert store.next_stan("TERM0001", DAY) == 1
        assert [store.next_stan_nowait("TERM0001") for _ in range(3)] == [2, 3, None]
        assert store.next_stan_nowait("OTHER") is None


def test_a_block_that_would_straddle_the_wrap_starts_again_at_one(tmp_path: Path) -> None:
    """Near 999999 a block never runs past it: the next block is 1..reserve."""
    path = tmp_path / "stan.db"
    with SqliteStanStore(path) as store:
        store.next_stan("TERM0001", DAY)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE network_stan SET last_stan = 999995 WHERE terminal_id = 'TERM0001'")
    db.close()
    with SqliteStanStore(path, reserve=4) as store:
        got = [store.next_stan("TERM0001", DAY) for _ in range(8)]
    assert got == [999_996, 999_997, 999_998, 999_999, 1, 2, 3, 4]


def test_reserved_blocks_are_unique_under_threads_and_two_stores(tmp_path: Path) -> None:
    """Two stores on one file, each with its own blocks, and threads on each: no STAN twice."""
    path = tmp_path / "stan.db"
    with SqliteStanStore(path, reserve=7) as one, SqliteStanStore(path, reserve=7) as two:
        got = _draw_in_threads((one, two), lambda store: [
            store.next_stan("TERM0001", DAY) if i % 2 else
            (store.next_stan_nowait("TERM0001") or store.next_stan("TERM0001", DAY))
            for i in range(50)])
    assert len(got) == 300 and len(set(got)) == 300


def test_a_reserve_outside_1_to_10000_is_refused(tmp_path: Path) -> None:
    """A block of 0 STANs, or one that would eat 1% of the STAN space per restart, is refused."""
    for reserve in (0, 10_001):
        with pytest.raises(ValueError):
            SqliteStanStore(tmp_path / "stan.db", reserve=reserve)


def test_allocate_async_uses_the_block_and_falls_back_to_a_commit(tmp_path: Path) -> None:
    """``allocate_async`` gives consecutive STANs across block boundaries, as ``allocate``."""
    async def run() -> list[str]:
        with SqliteStanStore(tmp_path / "stan.db", reserve=2) as store:
            allocator = TraceAllocator(store, "TERM0001")
            return [(await allocator.allocate_async()).stan for _ in range(5)]

    assert asyncio.run(run()) == ["000001", "000002", "000003", "000004", "000005"]


def test_stores_implement_the_store_interface(tmp_path: Path) -> None:
    """The SQLite store and the tests' memory store both satisfy the StanStore protocol."""
    with SqliteStanStore(tmp_path / "stan.db") as store:
        assert isinstance(store, StanStore)
    assert isinstance(MemoryStanStore(), StanStore)


def test_format_stan_rejects_out_of_range() -> None:
    """0 and 1,000,000 are not STANs."""
    with pytest.raises(ValueError):
        format_stan(0)
    with pytest.raises(ValueError):
        format_stan(1_000_000)


def test_trace_fields_and_rrn_format(tmp_path: Path) -> None:
    """A trace carries field 7 (UTC), 11, 12/13 (local) and a 12-digit RRN y+ddd+hh+STAN."""
    moment = datetime(2026, 11, 22, 19, 30, 12, tzinfo=UTC)
    cet = timezone(timedelta(hours=1))
    with SqliteStanStore(tmp_path / "stan.db") as store:
        allocator = TraceAllocator(store, "TERM0001", clock=lambda: moment, local_tz=cet)
        first = allocator.allocate()
        second = allocator.allocate()
    assert first.stan == "000001" and second.stan == "000002"
    assert first.transmitted == "1122193012"
    assert first.local_time == "203012" and first.local_date == "1122"
    assert first.rrn == "6326" + "19" + "000001"
    assert len(first.rrn) == 12 and first.rrn.isdigit()
    assert second.rrn == "632619000002"
    assert first.fields() == {"7": "1122193012", "11": "000001", "12": "203012",
                              "13": "1122", "37": "632619000001", "41": "TERM0001"}


def test_rrn_uses_day_of_year_and_hour() -> None:
    """The RRN's day of year is zero-padded to 3 digits and the hour to 2."""
    assert retrieval_reference(datetime(2030, 1, 5, 3, tzinfo=UTC), "000042") == "000503000042"
    with pytest.raises(ValueError):
        retrieval_reference(datetime(2030, 1, 5, tzinfo=UTC), "42")


def test_trace_allocator_rejects_a_bad_terminal() -> None:
    """Field 41 is 1 to 8 characters."""
    with pytest.raises(ValueError):
        TraceAllocator(MemoryStanStore(), "")
    with pytest.raises(ValueError):
        TraceAllocator(MemoryStanStore(), "TERMINAL9")
