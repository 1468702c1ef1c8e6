"""The whole gateway in one process: what ``paygate up`` runs.

From one :class:`~gateway.config.GatewayConfig`: dev certificates (created under
``DATA_DIR/pki`` on first start), the HSM, the store (``DATA_DIR/paygate.db``:
vault and payments), netsim (embedded, its ledger in ``DATA_DIR/netsim.db``),
the network client, the payments service, the gRPC server (mutual TLS) and the
HTTP edge, and the reconciler (``reconciler.worker``) as a background task that
resolves every attempt left unknown and takes the network's late replies.
``DATA_DIR/stack.json`` (0600) tells clients where everything is. ``[reconciler]`` sets
the reconciler's pace; ``network.record_file`` records the network link's frames
(``netsim.certify.recorder``). Stopping turns
health to NOT_SERVING, drains RPCs for the grace period, then closes the edge,
stops the reconciler, closes the network link, netsim and the store, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from paygate.v1 import payments_pb2_grpc, tokens_pb2_grpc

from gateway import metrics
from gateway.api.identity import IdentityPolicy
from gateway.api.payments import PaymentsServicer
from gateway.api.ratelimit import Limit, RateLimiter
from gateway.api.server import RunningServer, build_server
from gateway.api.tokens import TokensServicer
from gateway.config import GatewayConfig, split_listen
from gateway.devcerts import write_dev_certs
from gateway.edge import create_app
from gateway.edge.checkout import DemoCheckout, add_checkout_routes, demo_origins
from gateway.edge.runner import EdgeRunner, listen
from gateway.edge.server import bound_port
from gateway.intake import CardIntake
from gateway.listening import CannotListen, address, probe, reason
from gateway.network import NetworkClient, SqliteStanStore, TraceAllocator
from gateway.payments.service import PaymentService
from gateway.payments.sqlite_store import SqlitePaymentStore
from gateway.pki import Credentials, client_context, server_context
from gateway.store.sqlite import SqliteDatabase
from gateway.vault import SqliteVaultStore, Vault
from hsm_sim.config import open_hsm
from netsim import Ledger, NetSim
from reconciler.queue import ReconcilerQueue
from reconciler.worker import Backoff, LateReplies, Reconciler

log = structlog.get_logger("gateway.stack")
CLIENT_IDENTITY = "checkout-service"


@dataclass(frozen=True)
class StackInfo:
    """Where the running stack is, as written to ``stack.json``."""

    grpc: str
    http: str
    netsim: str
    tls: dict[str, str]
    merchant: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"grpc": self.grpc, "http": self.http, "netsim": self.netsim, "tls": self.tls,
                "merchant": self.merchant}

    def client_credentials(self) -> Credentials:
        return Credentials(cert=Path(self.tls["client_cert"]), key=Path(self.tls["client_key"]),
                           ca=Path(self.tls["ca"]))


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _watch(db: SqliteDatabase, reconciler: Reconciler) -> None:
    """The store's and the reconciler's figures on ``/metrics``, read when scraped."""
    stats = reconciler.stats
    metrics.watch("paygate_store_commits", "group commits of the store", "counter",
                  lambda: db.commits)
    metrics.watch("paygate_store_writes", "writes committed by the store (in its group "
                  "commits)", "counter", lambda: db.jobs_committed)
    metrics.watch("paygate_reconciler_queue_entries", "unknown attempts waiting in the "
                  "reconciler's queue, as of its last pass", "gauge", lambda: stats.queued)
    metrics.watch("paygate_reconciler_resolved", "queue entries the reconciler resolved",
                  "counter", lambda: stats.resolved)
    metrics.watch("paygate_reconciler_reversal_tries", "reversal advices sent (0420, 0421)",
                  "counter", lambda: stats.reversal_tries)
    metrics.watch("paygate_reconciler_repeats", "repeats sent (0221, 0401, 0201)",
                  "counter", lambda: stats.repeats)
    metrics.watch_labelled("paygate_reconciler_late_replies", "replies that came after "
                           "their deadline, accepted or ignored (the reversal won)", "counter",
                           ("accepted",), {("true",): lambda: stats.late_accepted,
                                           ("false",): lambda: stats.late_ignored})


async def _stop_worker(stop: asyncio.Event, task: asyncio.Task[None], wait: float) -> None:
    """Let the reconciler finish its pass (a request in flight has a deadline), then go."""
    stop.set()
    done, _ = await asyncio.wait({task}, timeout=wait)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class Stack:
    """``async with Stack(config) as stack:`` everything runs; ``stack.info`` says where."""

    def __init__(self, config: GatewayConfig, *, embedded_netsim: bool = True,
                 demo_checkout: bool = False) -> None:
        self.config = config
        self.embedded_netsim = embedded_netsim
        self.demo_checkout = demo_checkout
        #: With ``demo_checkout``: the demo checkout page's URL (``gateway.edge.checkout``).
        self.checkout_url: str | None = None
        self._exit = AsyncExitStack()
        self.info: StackInfo | None = None
        self.service: PaymentService | None = None
        self.store: SqlitePaymentStore | None = None
        self.vault: Vault | None = None
        self.ledger: Ledger | None = None
        self.netsim: NetSim | None = None
        self.server: RunningServer | None = None
        self.reconciler: Reconciler | None = None

    async def __aenter__(self) -> Stack:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._exit.aclose()

    async def _start(self) -> None:
        config, exit_ = self.config, self._exit
        data = config.data_dir
        data.mkdir(parents=True, exist_ok=True)
        pki = data / "pki"
        await asyncio.to_thread(write_dev_certs, pki)

        hsm = await asyncio.to_thread(open_hsm, config.hsm)
        exit_.callback(hsm.close)
        db = SqliteDatabase(data / "paygate.db")
        exit_.callback(db.close)
        vault_executor = None
        if hsm.backend == "pkcs11":   # its calls queue on one lock: not on the event loop
            vault_executor = ThreadPoolExecutor(1, thread_name_prefix="hsm-vault")
            exit_.callback(vault_executor.shutdown)
        self.vault = vault = Vault(hsm, SqliteVaultStore(db), executor=vault_executor)
        self.store = store = SqlitePaymentStore(db)

        host, port = config.network.host, config.network.port
        if self.embedded_netsim:
            self.ledger = Ledger(data / "netsim.db")
            exit_.callback(self.ledger.close)
            netsim_creds = Credentials(pki / "netsim.crt", pki / "netsim.key", pki / "ca.crt")
            try:
                self.netsim = await exit_.enter_async_context(
                    NetSim(server_context(netsim_creds), self.ledger, host=host, port=port))
            except OSError as exc:
                raise CannotListen(address(host, port), reason(exc),
                                   "the embedded netsim") from None
            port = self.netsim.port
        stans = SqliteStanStore(data / "stan.db", reserve=config.network.stan_reserve)
        exit_.callback(stans.close)
        trace = TraceAllocator(stans, config.network.terminal_id)
        recorder = None
        if config.network.record_file:
            from netsim.certify.recorder import Recorder

            recorder = Recorder(Path(config.network.record_file))
            exit_.callback(recorder.close)
        late = LateReplies()   # the reconciler that takes late replies comes after the client
        network = NetworkClient(
            host, port, client_context(config.network.tls.credentials()),
            terminal_id=config.network.terminal_id, acquirer_id=config.network.acquirer_id,
            trace=trace, deadline=config.network.deadline_seconds,
            max_in_flight=config.network.max_in_flight,
            connections=config.network.connections, on_late_response=late,
            echo_interval=config.network.echo_interval_seconds,
            on_frame=recorder.frame if recorder is not None else None)
        # Sign-on gets more than one request deadline: a network that drops a reply or
        # two at start-up must not stop the gateway (the client retries with backoff).
        await network.start(timeout=max(10.0, 5 * config.network.deadline_seconds))
        exit_.push_async_callback(network.close)
        merchants = config.merchant_directory()
        self.service = service = PaymentService(store, vault, network, trace, merchants,
                                                acquirer_id=config.network.acquirer_id)
        self.reconciler = reconciler = Reconciler(
            store, ReconcilerQueue(db), network, trace, merchants,
            acquirer_id=config.network.acquirer_id, locks=service.locks, feed=service.feed,
            stale_after=max(30.0, 5 * config.network.deadline_seconds),
            backoff=Backoff(config.reconciler.backoff_initial_seconds,
                            config.reconciler.backoff_cap_seconds,
                            config.reconciler.backoff_jitter))
        late.target = reconciler.on_late_response
        _watch(db, reconciler)
        stop_reconciler = asyncio.Event()
        worker = asyncio.create_task(
            reconciler.run(stop_reconciler, config.reconciler.interval_seconds),
            name="reconciler")
        exit_.push_async_callback(_stop_worker, stop_reconciler, worker,
                                  config.network.deadline_seconds + 1.0)

        policy = IdentityPolicy({i.name: config.identities.merchants_for(i.name) or ()
                                 for i in config.identities})
        limits = {i.name: Limit(limit.rate, limit.burst) for i in config.identities
                  if (limit := config.identities.rate_limit_for(i.name)) is not None}
        limiter = RateLimiter(Limit(config.rate_limit.rate, config.rate_limit.burst), limits)
        executor = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="hsm")
        exit_.callback(executor.shutdown)
        intake = CardIntake(hsm, vault, policy=config.intake.policy(), executor=executor)
        payments = PaymentsServicer(service, store)
        grpc_host, grpc_port = split_listen(config.grpc.listen)
        try:
            self.server = server = build_server(
                [(payments_pb2_grpc.add_PaymentsServicer_to_server, payments),
                 (tokens_pb2_grpc.add_TokensServicer_to_server, TokensServicer(intake))],
                listen=config.grpc.listen, tls=config.grpc.tls.credentials(),
                identity_policy=policy, rate_limiter=limiter,
                max_concurrent_rpcs=config.grpc.max_concurrent_rpcs)
        except OSError:   # grpc does not say why: find out with a plain socket
            why = await asyncio.to_thread(probe, grpc_host, grpc_port)
            raise CannotListen(config.grpc.listen, why, "the gRPC API") from None
        await server.start()
        # On the way out (last in, first out): stop the server, then let the mutating
        # calls it leaves running finish their bookkeeping before the network link closes.
        exit_.push_async_callback(payments.drain, config.network.deadline_seconds + 1.0)
        exit_.push_async_callback(server.stop, config.grpc.grace_seconds)

        app = create_app(intake, hsm, merchants, max_body=config.http.max_body)
        first = next(iter(merchants))
        checkout = None
        if self.demo_checkout:
            checkout = DemoCheckout(
                grpc_target=f"{grpc_host}:{server.port}",
                credentials=Credentials(pki / f"{CLIENT_IDENTITY}.crt",
                                        pki / f"{CLIENT_IDENTITY}.key", pki / "ca.crt"),
                merchant_id=first.id, merchant_name=first.name,
                publishable_key=min(first.publishable_keys, default=""))
            add_checkout_routes(app, checkout)
        runner = EdgeRunner(app, access_log=None)
        await runner.setup()
        exit_.push_async_callback(runner.cleanup)
        http_host, http_port = split_listen(config.http.listen)
        site = await listen(runner, http_host, http_port, "the HTTP edge")
        if checkout is not None:
            # The demo merchant's page is served on the edge's own socket under another
            # host name; that origin (known only now, port 0 picks one) may frame the card.
            gateway_origin, page_origin = demo_origins(http_host, bound_port(site, http_port))
            checkout.bind(gateway_origin, page_origin)
            merchants.allow_origins(first.id, (page_origin,))
            self.checkout_url = checkout.url

        self.info = info = StackInfo(
            grpc=f"{grpc_host}:{server.port}",
            http=f"http://{http_host}:{bound_port(site, http_port)}",
            netsim=f"{host}:{port}",
            tls={"ca": str(pki / "ca.crt"), "client_cert": str(pki / f"{CLIENT_IDENTITY}.crt"),
                 "client_key": str(pki / f"{CLIENT_IDENTITY}.key"), "server_name": "localhost"},
            merchant={"id": first.id,
                      "publishable_key": sorted(first.publishable_keys)[0]
                      if first.publishable_keys else ""})
        _write_private(data / "stack.json", json.dumps(info.as_json(), indent=2) + "\n")
        log.info("stack_up", grpc=info.grpc, http=info.http, netsim=info.netsim)
