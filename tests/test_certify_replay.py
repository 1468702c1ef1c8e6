"""Recorded sessions: a live session recorded by netsim (and by the gateway's own
connection) replays green against a fresh gateway making the same payments, and a
replay against a gateway whose 0100 differs names the field."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import Pki

from gateway.api.server import client_channel
from gateway.devcerts import write_dev_certs
from gateway.payments import messages
from gateway.pki import Credentials, server_context
from gateway.stack import Stack
from netsim import Ledger, NetSim
from netsim.certify import SUITES
from netsim.certify.host import ReplayHost
from netsim.certify.matchers import CaseError, Mismatch
from netsim.certify.recorder import Recorder
from netsim.certify.recording import load_recording
from netsim.certify.replay_cli import load_script
from netsim.certify.runner import CaseResult, Client, certify_config, perform, run_suite
from netsim.certify.script import Action, Case, Outcome, Payment, load_suite

PAYGATE = str(Path(sys.executable).with_name("paygate"))

#: The session: an approval captured, a decline, an automatic capture refunded in part.
SESSION = (
    Case("approve-capture", Path("-"), "", Payment("4242424242424242", 2100), (Action("capture"),),
         (), Outcome()),
    Case("decline", Path("-"), "", Payment("4000000000000002", 2200), (), (), Outcome()),
    Case("refund", Path("-"), "", Payment("4242424242424242", 2300, capture_method="automatic"),
         (Action("refund", amount=1000),), (), Outcome()),
)


def _server(data: Path) -> Any:
    pki = data / "pki"
    write_dev_certs(pki)
    return server_context(Credentials(pki / "netsim.crt", pki / "netsim.key", pki / "ca.crt"))


async def _drive(data: Path, port: int, settings: Mapping[str, str] | None = None) -> None:
    """A fresh gateway (data in ``data``) on the network at ``port`` makes the session."""
    async with Stack(certify_config(data, port, settings=settings),
                     embedded_netsim=False) as stack:
        info = stack.info
        assert info is not None
        async with client_channel(info.grpc, info.client_credentials(),
                                  server_name=info.tls["server_name"]) as channel:
            client = Client(channel, info.http, info.merchant["id"])
            for case in SESSION:
                intent_id, problems = await perform(client, case)
                assert intent_id and not problems, problems


async def _record(tmp: Path) -> tuple[Path, Path]:
    """Record the session on netsim's side and on the gateway's side."""
    data = tmp / "live"
    netsim_side, gateway_side = tmp / "netsim.jsonl", tmp / "gateway.jsonl"
    recorder = Recorder(netsim_side)
    ledger = Ledger(tmp / "ledger.db")
    try:
        async with NetSim(_server(data), ledger, on_frame=recorder.frame) as sim:
            await _drive(data, sim.port,
                         {"PAYGATE_NETWORK_RECORD_FILE": str(gateway_side)})
    finally:
        recorder.close()
        ledger.close()
    return netsim_side, gateway_side


async def _replay(recording: Path, data: Path) -> list[Mismatch]:
    host = ReplayHost(_server(data))
    await host.start()
    try:
        script = host.play(recording.name, load_recording(recording))
        await _drive(data, host.port)
        await asyncio.wait_for(script.done.wait(), 10)
        return [*script.mismatches, *script.missing()]
    finally:
        await host.stop()


def test_recorded_session_replays_green(tmp_path: Path) -> None:
    """A live session recorded by netsim, and the same session recorded by the gateway's
    connection (network.record_file), each replay with no mismatch against a fresh gateway
    making the same payments."""
    netsim_side, gateway_side = asyncio.run(_record(tmp_path))
    exchanges = load_recording(netsim_side)
    assert [e.mti for e in exchanges] == ["0100", "0220", "0100", "0100", "0220", "0200"]
    assert [e.mti for e in load_recording(gateway_side)] == [e.mti for e in exchanges]
    assert asyncio.run(_replay(netsim_side, tmp_path / "again")) == []
    assert asyncio.run(_replay(gateway_side, tmp_path / "once-more")) == []


def test_replay_names_a_changed_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replayed against a gateway whose 0100 carries another field 22, the replay fails
    naming field 22 of each 0100 with the recorded and the actual value."""
    netsim_side, _ = asyncio.run(_record(tmp_path))
    original: Callable[..., dict[str, str]] = messages.authorization

    def changed(*args: Any, **kwargs: Any) -> dict[str, str]:
        return {**original(*args, **kwargs), "22": "051"}

    monkeypatch.setattr(messages, "authorization", changed)
    mismatches = asyncio.run(_replay(netsim_side, tmp_path / "changed"))
    assert [(m.index, m.mti, m.field, m.expected, m.actual) for m in mismatches] == [
        (0, "0100", "22", "'812'", "'051'"), (2, "0100", "22", "'812'", "'051'"),
        (3, "0100", "22", "'812'", "'051'")]
    assert "field 22: expected '812', got '051'" in mismatches[0].render()


def test_netsim_replay_command_reports_what_never_came(tmp_path: Path) -> None:
    """`paygate netsim replay` serves a recording and, when its time is up, reports each
    recorded exchange that never came and exits 1."""
    netsim_side, _ = asyncio.run(_record(tmp_path))
    pki = tmp_path / "live" / "pki"
    run = subprocess.run([PAYGATE, "netsim", "replay", str(netsim_side), "--port", "0",
                          "--cert", str(pki / "netsim.crt"), "--key", str(pki / "netsim.key"),
                          "--ca", str(pki / "ca.crt"), "--timeout", "0.2"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "exchange 0 (0100) field message: expected a 0100, got nothing received" in run.stdout
    assert "replay FAILED: 0 of 6 exchanges" in run.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError("the replay host never listened")


def test_certify_a_gateway_started_separately(tmp_path: Path) -> None:
    """With an external gateway (its stack.json), the runner listens on the given port,
    waits for the gateway to sign on and runs the cases against it."""
    suite = load_suite(SUITES / "base")
    names = ["approve-manual", "decline-05-do-not-honour", "timeout-reversal"]
    data, port = tmp_path / "external", _free_port()

    async def main() -> list[CaseResult]:
        runner = asyncio.create_task(run_suite(suite, data, only=names, port=port,
                                               external=data / "stack.json"))
        await _listening(port)
        async with Stack(certify_config(data, port), embedded_netsim=False):
            return await runner

    results = asyncio.run(main())
    assert [(r.name, r.mismatches) for r in results] == [
        (name, []) for name in ["connect", *names]]


def _replay_file(pki: Pki, path: Path) -> subprocess.CompletedProcess[str]:
    creds = pki.netsim
    return subprocess.run([PAYGATE, "netsim", "replay", "--cert", str(creds.cert),
                           "--key", str(creds.key), "--ca", str(creds.ca), "--port", "0",
                           "--timeout", "2", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_replay_refuses_a_file_that_is_not_utf8(pki: Pki, tmp_path: Path) -> None:
    """`paygate netsim replay` refuses a file of invalid UTF-8 (exit 2) the way certify does."""
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"name": "\xff\xfe"}')
    run = _replay_file(pki, path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"{path}: cannot read JSON: 'utf-8' codec can't decode" in run.stderr
    assert "Traceback" not in run.stderr


def test_json_nested_too_deeply_is_a_load_error(pki: Pki, tmp_path: Path) -> None:
    """Deeply nested JSON is a load error (exit 2) in `netsim replay` and `certify`, and a
    recording line nested too deeply is named by its line number."""
    folder = tmp_path / "suite"
    folder.mkdir()
    deep = folder / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    message = f"{deep}: not valid JSON (nested too deeply)"
    run = _replay_file(pki, deep)
    assert run.returncode == 2 and message in run.stderr, run.stdout + run.stderr
    run = subprocess.run([PAYGATE, "certify", str(folder), "--case", "deep"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 2 and message in run.stderr, run.stdout + run.stderr
    recording = tmp_path / "deep.jsonl"
    recording.write_text('{"t": 0, "dir": "in", "mti": "0800", "fields": {}, "hex": null}\n'
                         + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(CaseError, match=r"deep\.jsonl:2: not valid JSON \(nested too deeply\)"):
        load_script(recording)


def test_replay_refuses_an_empty_file(pki: Pki, tmp_path: Path) -> None:
    """`paygate netsim replay` of an empty file exits 2 instead of passing 0 of 0 exchanges."""
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    run = _replay_file(pki, path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"{path}: empty, nothing to replay" in run.stderr


def test_replay_names_what_a_case_file_lacks(tmp_path: Path) -> None:
    """A case file without `exchanges` is refused naming the missing key, and a JSON array
    as neither a case nor a recording, not with the recording-line message."""
    case = json.loads((SUITES / "base" / "void.json").read_text())
    del case["exchanges"]
    path = tmp_path / "void.json"
    path.write_text(json.dumps(case, indent=2))
    with pytest.raises(CaseError, match=r"void\.json: \$: missing 'exchanges'$"):
        load_script(path)
    path.write_text(json.dumps([case], indent=2))
    with pytest.raises(CaseError, match=r"void\.json: \$: expected a case .* not an array$"):
        load_script(path)
