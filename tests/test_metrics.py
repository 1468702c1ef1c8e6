"""Prometheus metrics on the HTTP edge's /metrics: RPC latency by method and code,
network attempts by kind, outcome and response code, card intake results, and the
store's and the reconciler's figures read when scraped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.stack import Stack
from gateway.traffic import run_traffic


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_count_what_the_demo_traffic_did(tmp_path: Path) -> None:
    """After the demo payments, /metrics shows approved and declined authorizations with
    their response codes, RPC latencies by method and code, and successful tokenizations,
    and no label carries a card number."""
    config = load_config(None, {"PAYGATE_DATA_DIR": str(tmp_path),
                                "PAYGATE_GRPC_LISTEN": "127.0.0.1:0",
                                "PAYGATE_HTTP_LISTEN": "127.0.0.1:0",
                                "PAYGATE_NETWORK_PORT": "0"})

    async def main() -> tuple[str, str]:
        async with Stack(config) as stack:
            assert stack.info is not None
            rows = await run_traffic(stack)
            assert all(row.agrees for row in rows)
            async with aiohttp.ClientSession() as http:
                for _ in range(100):   # until a pass after the lost response's has counted
                    async with http.get(stack.info.http + "/metrics") as response:
                        assert response.status == 200
                        text = await response.text()
                    if ("paygate_reconciler_queue_entries 0.0" in text
                            and "paygate_reconciler_resolved_total 0.0" not in text):
                        break
                    await asyncio.sleep(0.1)
                return text, response.headers["Content-Type"]

    text, content_type = asyncio.run(main())
    assert content_type.startswith("text/plain")
    samples = _samples(text)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    attempts = "paygate_network_attempts_total"
    assert value(attempts, kind="authorization", outcome="approved", response_code="00") >= 4
    assert value(attempts, kind="authorization", outcome="declined", response_code="05") >= 1
    assert value(attempts, kind="authorization", outcome="declined", response_code="51") >= 1
    assert value(attempts, kind="release", outcome="approved", response_code="00") >= 1
    assert value("paygate_rpc_duration_seconds_count", method="CreatePaymentIntent",
                 code="OK") >= 6
    assert value("paygate_tokenizations_total", outcome="ok") >= 6
    commits = value("paygate_store_commits_total")
    assert commits > 0 and value("paygate_store_writes_total") >= commits
    # The demo's lost response: reversed by the reconciler, which then has nothing queued.
    assert value("paygate_reconciler_resolved_total") >= 1
    assert value("paygate_reconciler_reversal_tries_total") >= 1
    assert ("paygate_reconciler_queue_entries", ()) in samples
    assert value("paygate_reconciler_queue_entries") == 0
    assert ("paygate_reconciler_late_replies_total", (("accepted", "false"),)) in samples
    assert "4242424242424242" not in text and "424242" not in text
