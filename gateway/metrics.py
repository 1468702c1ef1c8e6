"""Prometheus metrics of the gateway, served on the HTTP edge's ``/metrics``.

* ``paygate_rpc_duration_seconds{method, code}``: gRPC call latency by method and
  status code (observed by the API interceptor for every call);
* ``paygate_network_attempts_total{kind, outcome, response_code}``: network
  attempts by kind (authorization, capture, void, release, refund), outcome
  (approved, declined, unknown) and field 39;
* ``paygate_tokenizations_total{outcome}``: card intake results (``ok`` or the
  refusal code).

One registry per process (``REGISTRY``); labels never carry card data or ids.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY: Final = CollectorRegistry(auto_describe=True)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

RPC_DURATION: Final = Histogram(
    "paygate_rpc_duration_seconds", "gRPC call latency by method and status code",
    ["method", "code"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
NETWORK_ATTEMPTS: Final = Counter(
    "paygate_network_attempts", "network attempts by kind, outcome and response code",
    ["kind", "outcome", "response_code"], registry=REGISTRY)
TOKENIZATIONS: Final = Counter(
    "paygate_tokenizations", "card intake results", ["outcome"], registry=REGISTRY)


def observe_rpc(method: str, code: str, seconds: float) -> None:
    RPC_DURATION.labels(method.rsplit("/", 1)[-1], code).observe(seconds)


def count_attempt(kind: str, outcome: str, response_code: str) -> None:
    NETWORK_ATTEMPTS.labels(kind, outcome, response_code or "none").inc()


def count_tokenization(outcome: str) -> None:
    TOKENIZATIONS.labels(outcome).inc()


def exposition() -> bytes:
    """The text format Prometheus scrapes."""
    return generate_latest(REGISTRY)
