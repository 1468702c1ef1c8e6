"""Test helper: the payments service over real parts: a software HSM and vault, the
SQLite payments store, netsim over mutual TLS on loopback and the network client."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from conftest import Pki

from gateway.cards import Card, brand_of
from gateway.merchants import DEMO, MerchantDirectory
from gateway.network import NetworkClient, SqliteStanStore, TraceAllocator
from gateway.payments.service import PaymentService
from gateway.payments.sqlite_store import SqlitePaymentStore
from gateway.pki import client_context, server_context
from gateway.store.sqlite import SqliteDatabase
from gateway.vault import SqliteVaultStore, Vault
from hsm_sim import SoftwareHsm
from netsim import Faults, Ledger, NetSim

TERMINAL = "TERM0001"
ACQUIRER = "440001"


@dataclass
class PaymentsStack:
    service: PaymentService
    store: SqlitePaymentStore
    vault: Vault
    ledger: Ledger
    sim: NetSim
    db: SqliteDatabase
    data_dir: Path

    async def token(self, pan: str, merchant: str = "acme", cvc: str = "123") -> str:
        brand = brand_of(pan) or "visa"
        return (await self.vault.tokenize(merchant, Card(pan, 12, 2034, brand),
                                          cvc=cvc)).token


@contextlib.asynccontextmanager
async def running(pki: Pki, data_dir: Path, *, deadline: float = 1.0,
                  faults: Faults | None = None) -> AsyncIterator[PaymentsStack]:
    """Everything up, on fresh files under ``data_dir``; torn down afterwards."""
    data_dir.mkdir(parents=True, exist_ok=True)
    hsm = SoftwareHsm(data_dir / "hsm", environ={})
    db = SqliteDatabase(data_dir / "paygate.db")
    store = SqlitePaymentStore(db)
    vault = Vault(hsm, SqliteVaultStore(db))
    ledger = Ledger(data_dir / "netsim.db")
    stan_store = SqliteStanStore(data_dir / "stan.db")
    trace = TraceAllocator(stan_store, TERMINAL)
    try:
        async with NetSim(server_context(pki.netsim), ledger, faults=faults,
                          slow_delay=deadline * 3) as sim, \
                NetworkClient("127.0.0.1", sim.port, client_context(pki.gateway),
                              terminal_id=TERMINAL, acquirer_id=ACQUIRER, trace=trace,
                              deadline=deadline) as client:
            service = PaymentService(store, vault, client, trace,
                                     MerchantDirectory.from_data(DEMO), acquirer_id=ACQUIRER)
            yield PaymentsStack(service, store, vault, ledger, sim, db, data_dir)
    finally:
        db.close()
        ledger.close()
        stan_store.close()


def wait_for(predicate: object, timeout: float = 5.0) -> None:  # pragma: no cover - helper
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if callable(predicate) and predicate():
            return
        time.sleep(0.01)
