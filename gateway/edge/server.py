"""Running the HTTP edge as a process: build the tokenization stack from a data
directory (HSM, store, vault, intake), serve it, stop cleanly on SIGINT/SIGTERM.

The process runs on uvloop when it is installed (its transports cost about a
third less CPU per request than asyncio's own), else on asyncio's loop: see
:mod:`gateway.loops`."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway.edge.app import create_app
from gateway.edge.runner import EdgeRunner, listen
from gateway.intake import CardIntake, IntakePolicy
from gateway.listening import reason
from gateway.merchants import DEMO, MerchantDirectory
from gateway.store.sqlite import SqliteDatabase
from gateway.vault import SqliteVaultStore, Vault
from hsm_sim.config import HsmConfig, open_hsm
from hsm_sim.interface import Hsm

log = structlog.get_logger("gateway.edge")


class PortFileError(OSError):
    """``serve``'s ``port_file`` could not be written."""


@dataclass
class Tokenization:
    """The pieces behind the edge, built from one data directory."""

    hsm: Hsm
    db: SqliteDatabase
    vault: Vault
    intake: CardIntake
    executor: ThreadPoolExecutor

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.db.close()
        self.hsm.close()


def build_tokenization(data_dir: Path, hsm: Hsm | None = None, *,
                       policy: IntakePolicy | None = None,
                       hsm_threads: int | None = None) -> Tokenization:
    """Open (or create) the store ``paygate.db`` and the vault under ``data_dir``, with
    ``hsm`` (the commands pass the configured one; without it, the software HSM under
    ``data_dir/hsm``).

    HSM calls run on ``hsm_threads`` threads (default: one per core for the
    software HSM, which releases the GIL in RSA; one for PKCS#11, which is
    serialised anyway) so that the event loop never waits on a decrypt;
    ``hsm_threads=0`` decrypts on the event loop itself (cheapest on one core).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    hsm = hsm or open_hsm(HsmConfig(directory=data_dir / "hsm"))   # the software HSM
    if hsm_threads is None:
        hsm_threads = (os.cpu_count() or 1) if hsm.backend == "software" else 1
    executor = ThreadPoolExecutor(max(hsm_threads, 1), thread_name_prefix="hsm")
    db = SqliteDatabase(data_dir / "paygate.db")
    # A PKCS#11 HSM's calls queue on one lock: the vault's go to the same thread(s).
    vault = Vault(hsm, SqliteVaultStore(db),
                  executor=executor if hsm.backend == "pkcs11" and hsm_threads > 0 else None)
    intake = CardIntake(hsm, vault, policy=policy,
                        executor=executor if hsm_threads > 0 else None)
    return Tokenization(hsm, db, vault, intake, executor)


#: One access-log line per request, through the redacting log pipeline.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'
PURGE_INTERVAL = 60.0


async def purge_replay_records(tokenization: Tokenization, interval: float) -> None:
    """Forget accepted-JWE digests once their freshness window is over, every ``interval``
    seconds (they can no longer be replayed: their ``iat`` is refused first)."""
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await tokenization.vault.purge_replay_records(int(time.time()))
        except Exception as exc:  # a failed purge is retried next time, never fatal
            log.warning("replay_purge_failed", error=type(exc).__name__)
        else:
            if removed:
                log.debug("replay_records_purged", count=removed)


async def serve(tokenization: Tokenization, merchants: MerchantDirectory, host: str,
                port: int, *, port_file: Path | None = None,
                stop: asyncio.Event | None = None, access_log: bool = False,
                purge_interval: float = PURGE_INTERVAL) -> None:
    """Serve the edge until ``stop`` is set (or SIGINT/SIGTERM)."""
    app = create_app(tokenization.intake, tokenization.hsm, merchants)
    runner = EdgeRunner(
        app, access_log=logging.getLogger("aiohttp.access") if access_log else None,
        access_log_format=ACCESS_LOG_FORMAT)
    await runner.setup()
    try:
        site = await listen(runner, host, port)
        bound = bound_port(site, port)
        if port_file:
            try:
                port_file.write_text(f"{bound}\n")
            except OSError as exc:
                raise PortFileError(f"cannot write the port file {port_file}: "
                                    f"{reason(exc)}") from None
    except BaseException:
        await runner.cleanup()
        raise
    log.info("edge_listening", url=f"http://{host}:{bound}", hsm=tokenization.hsm.backend)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    purger = asyncio.create_task(purge_replay_records(tokenization, purge_interval))
    try:
        await stop.wait()
    finally:
        purger.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        log.info("edge_stopped")


def bound_port(site: web.TCPSite, default: int) -> int:
    """The port a site listens on (useful with port 0)."""
    server: Any = site._server
    sockets = getattr(server, "sockets", None)
    return int(sockets[0].getsockname()[1]) if sockets else default


def load_merchants(path: Path | None) -> MerchantDirectory:
    return MerchantDirectory.load(path) if path else MerchantDirectory.from_data(DEMO)
