"""The buffered CSPRNG (hsm_sim.randompool): fresh bytes per draw, safe across threads
and forks."""

from __future__ import annotations

import os
import threading

import pytest

from hsm_sim.randompool import POOL, RandomPool


def test_draws_are_the_requested_length_and_never_repeat_across_refills() -> None:
    """A small block forces many refills; every 16-byte draw is new and of length 16."""
    pool = RandomPool(block=64)
    draws = [pool.draw(16) for _ in range(5000)]
    assert {len(d) for d in draws} == {16}
    assert len(set(draws)) == 5000


def test_a_draw_larger_than_the_block_comes_from_the_os_whole() -> None:
    """Asking for more than a block returns that many bytes (straight from the OS)."""
    pool = RandomPool(block=32)
    assert len(pool.draw(100)) == 100
    assert pool.draw(0) == b""
    with pytest.raises(ValueError):
        pool.draw(-1)


def test_threads_drawing_at_once_never_get_the_same_bytes() -> None:
    """Four threads drawing 2,000 times each get 8,000 distinct draws."""
    pool = RandomPool(block=256)
    out: list[bytes] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [pool.draw(15) for _ in range(2000)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(out)) == 8000


def test_a_forked_child_does_not_draw_its_parents_buffered_bytes() -> None:
    """After a fork the child's next draw differs from the parent's next draw (the
    process pool is reset in the child), so two processes never hand out the same bytes."""
    POOL.draw(15)                      # the parent's pool now holds unread bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                       # the child: report its next draw and leave
        os.write(write, POOL.draw(15))
        os._exit(0)
    os.close(write)
    child = os.read(read, 100)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 15
    assert child != POOL.draw(15)
