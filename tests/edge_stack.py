"""Test helper: the tokenization stack (software HSM, SQLite store, vault, intake) and
the HTTP edge served on a real loopback socket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.edge import create_app
from gateway.edge.app import MAX_BODY
from gateway.edge.problems import DEFAULT_BODY_TIMEOUT
from gateway.edge.runner import DEFAULT_IDLE_TIMEOUT, EdgeRunner
from gateway.edge.server import bound_port
from gateway.intake import CardIntake, IntakePolicy
from gateway.merchants import DEMO, MerchantDirectory
from gateway.store.sqlite import SqliteDatabase
from gateway.vault import SqliteVaultStore, Vault
from hsm_sim import Hsm, SoftwareHsm


@dataclass
class Stack:
    data_dir: Path
    hsm: Hsm
    db: SqliteDatabase
    vault: Vault
    intake: CardIntake
    merchants: MerchantDirectory = field(default_factory=lambda: MerchantDirectory.from_data(DEMO))

    @property
    def jwk(self) -> dict[str, object]:
        key: dict[str, object] = self.hsm.jwks()["keys"][0]
        return key

    def close(self) -> None:
        self.db.close()
        self.hsm.close()


def build(data_dir: Path, *, hsm: Hsm | None = None, policy: IntakePolicy | None = None,
          clock: Callable[[], float] | None = None) -> Stack:
    hsm = hsm or SoftwareHsm(data_dir / "hsm", environ={})
    db = SqliteDatabase(data_dir / "paygate.db")
    vault = Vault(hsm, SqliteVaultStore(db))
    intake = (CardIntake(hsm, vault, policy=policy, clock=clock) if clock
              else CardIntake(hsm, vault, policy=policy))
    return Stack(data_dir, hsm, db, vault, intake)


@contextlib.asynccontextmanager
async def serve(stack: Stack, *, max_body: int = MAX_BODY,
                body_timeout: float = DEFAULT_BODY_TIMEOUT,
                idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> AsyncIterator[str]:
    """Serve the edge on 127.0.0.1 (a free port); yields its base URL."""
    app = create_app(stack.intake, stack.hsm, stack.merchants, max_body=max_body,
                     body_timeout=body_timeout)
    runner = EdgeRunner(app, idle_timeout=idle_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = bound_port(site, 0)
    assert port
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
