"""Prometheus metrics of the gateway, served on the HTTP edge's ``/metrics``.

* ``paygate_rpc_duration_seconds{method, code}``: gRPC call latency by method and
  status code (observed by the API interceptor for every call);
* ``paygate_network_attempts_total{kind, outcome, response_code}``: network
  attempts by kind (authorization, capture, void, release, refund), outcome
  (approved, declined, unknown) and field 39;
* ``paygate_tokenizations_total{outcome}``: card intake results (``ok`` or the
  refusal code);
* read when scraped (:func:`watch`, registered by ``gateway.stack``): the store's
  ``paygate_store_commits_total`` and ``paygate_store_writes_total`` (writes per
  commit: how well group commit batches), and the reconciler's
  ``paygate_reconciler_queue_entries`` (unknown attempts waiting, as of its last
  pass), ``paygate_reconciler_resolved_total``,
  ``paygate_reconciler_reversal_tries_total``, ``paygate_reconciler_repeats_total``
  and ``paygate_reconciler_late_replies_total{accepted}``.

One registry per process (``REGISTRY``); labels never carry card data or ids.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

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


Reading = Callable[[], float]


class _Readings(Collector):
    """Metrics whose values are read from their owner when scraped (no cost in between)."""

    def __init__(self) -> None:
        self._metrics: dict[str, tuple[str, str, tuple[str, ...],
                                       dict[tuple[str, ...], Reading]]] = {}

    def watch(self, name: str, help_text: str, kind: Literal["counter", "gauge"],
              readings: Mapping[tuple[str, ...], Reading], labels: tuple[str, ...] = ()) -> None:
        self._metrics[name] = (kind, help_text, labels, dict(readings))

    def collect(self) -> Iterator[Metric]:
        for name, (kind, help_text, labels, readings) in sorted(self._metrics.items()):
            family: CounterMetricFamily | GaugeMetricFamily
            if kind == "counter":
                family = CounterMetricFamily(name, help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, read in readings.items():
                family.add_metric(list(values), read())
            yield family


_READINGS: Final = _Readings()
REGISTRY.register(_READINGS)


def watch(name: str, help_text: str, kind: Literal["counter", "gauge"], read: Reading) -> None:
    """Expose ``read()`` as ``name`` when scraped; watching a name again replaces it (the
    process's latest owner, e.g. a restarted stack, is the one shown)."""
    _READINGS.watch(name, help_text, kind, {(): read})


def watch_labelled(name: str, help_text: str, kind: Literal["counter", "gauge"],
                   labels: tuple[str, ...], readings: Mapping[tuple[str, ...], Reading]) -> None:
    """As :func:`watch`, one reading per set of label values."""
    _READINGS.watch(name, help_text, kind, readings, labels)
