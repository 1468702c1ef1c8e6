"""The `paygate` console script: --version, --help, the demo, pki and hsm commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway import __version__

PAYGATE = str(Path(sys.executable).with_name("paygate"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAYGATE, *args], capture_output=True, text=True, timeout=60,
                          cwd="/", check=False)


def test_version() -> None:
    """`paygate --version` prints the package version."""
    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"paygate {__version__}"


def test_help_lists_the_demo() -> None:
    """`paygate --help` describes the program and its subcommands."""
    proc = _run("--help")
    assert proc.returncode == 0
    assert "card-payment gateway" in proc.stdout and "demo" in proc.stdout


def test_no_command_prints_help_and_fails() -> None:
    """Without a subcommand paygate prints its usage and exits non-zero."""
    proc = _run()
    assert proc.returncode == 2 and "usage: paygate" in proc.stdout


def test_demo_round_trips_and_masks_the_pan() -> None:
    """The demo encodes and decodes a 0100 and 0110 and never prints the full PAN."""
    proc = _run("demo")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "0100" in out and "0110" in out
    assert out.count("decode(encode(x)) == x: True") == 2
    assert "424242******4242" in out
    assert "4242424242424242" not in out
    assert "9F26" in out  # field 55 is unfolded into EMV tags


def test_demo_runs_payments_that_agree_with_the_network() -> None:
    """The demo's second part runs every scripted payment through gRPC and the HTTP edge,
    finds each outcome in netsim's ledger, and no clear PAN in its data dir."""
    proc = _run("demo")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in ("approved, captured", "SUCCEEDED", "card_declined/generic_decline (05)",
                     "card_declined/insufficient_funds (51)", "CANCELED",
                     "captured 6000 refunded 1000 released 4000"):
        assert expected in out, expected
    assert "every outcome agrees with netsim's ledger: yes" in out
    assert "PAN in clear in none of them" in out and "paygate.db" in out
    table = out[out.index("scenario"):]
    assert " NO" not in table and "4242424242424242" not in out


def test_up_runs_the_demo_then_exits_when_asked(tmp_path: Path) -> None:
    """`paygate up --demo --exit-after-demo` brings the stack up, runs the demo, writes a
    0600 stack.json, prints how to call it, and exits 0."""
    import json
    proc = subprocess.run([PAYGATE, "up", "--demo", "--exit-after-demo", "--data-dir",
                           str(tmp_path), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
                           "--netsim-port", "0"], capture_output=True, text=True, timeout=120,
                          cwd="/", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every outcome agrees with netsim's ledger: yes" in proc.stdout
    assert "CreatePaymentIntent" in proc.stdout
    stack = tmp_path / "stack.json"
    assert stack.stat().st_mode & 0o777 == 0o600
    info = json.loads(stack.read_text())
    assert set(info) == {"grpc", "http", "netsim", "tls", "merchant"}
    assert info["merchant"] == {"id": "acme", "publishable_key": "pk_test_acme"}


def test_hsm_commands_list_rotate_and_retire(tmp_path: Path) -> None:
    """`paygate hsm` lists keys, rotates the JWE key and DEK, retires the old kid, and
    refuses to retire the active one."""
    def hsm(*args: str) -> subprocess.CompletedProcess[str]:
        return _run("hsm", "--data-dir", str(tmp_path), *args)
    assert hsm("health").returncode == 0
    first = hsm("keys").stdout
    old_kid = next(line.split()[1] for line in first.splitlines() if line.startswith("jwe "))
    rotated = hsm("rotate-jwe")
    assert rotated.returncode == 0 and "new active kid" in rotated.stdout
    new_kid = rotated.stdout.split()[-1]
    assert hsm("rotate-dek").stdout.strip() == "new active DEK v2"
    refused = hsm("retire-jwe", new_kid)
    assert refused.returncode == 1 and "rotate first" in refused.stdout
    assert hsm("retire-jwe", old_kid).returncode == 0
    listing = hsm("keys").stdout
    assert f"{old_kid}" in listing and "retired" in listing
    import json
    kids = [k["kid"] for k in json.loads(hsm("jwks").stdout)["keys"]]
    assert kids == [new_kid]


def test_hsm_commands_open_the_hsm_the_gateways_configuration_names(tmp_path: Path) -> None:
    """`paygate hsm --config FILE` opens the HSM the configuration names (here its [hsm]
    directory), as `paygate up` would, not one of its own; a bad configuration exits 2
    with the reason."""
    keys, data = tmp_path / "keys", tmp_path / "data"
    config = tmp_path / "paygate.toml"
    config.write_text(f'data_dir = "{data}"\n[hsm]\ndirectory = "{keys}"\n')
    proc = _run("hsm", "--config", str(config), "health")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (keys / "master.key").is_file() and not (data / "hsm").exists()
    listed = _run("hsm", "--config", str(config), "keys")
    assert listed.returncode == 0 and listed.stdout.count("jwe ") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text('[hsm]\nbackend = "tpm"\n')
    refused = _run("hsm", "--config", str(bad), "keys")
    assert refused.returncode == 2 and "hsm.backend" in refused.stdout, refused.stdout


def test_hsm_commands_report_a_damaged_key_store_without_a_traceback(tmp_path: Path) -> None:
    """`paygate hsm keys` on a key store that is a JSON list, or missing its master key,
    exits 1 with the KeyStoreError message and no traceback."""
    assert _run("hsm", "--data-dir", str(tmp_path), "keys").returncode == 0
    store, master = tmp_path / "hsm" / "keystore.json", tmp_path / "hsm" / "master.key"
    text = store.read_text()
    store.write_text("[]")
    listed = _run("hsm", "--data-dir", str(tmp_path), "keys")
    assert listed.returncode == 1 and "Traceback" not in listed.stderr, listed.stderr
    assert "is not a key store (expected a JSON object)" in listed.stdout
    store.write_text(text)
    master.unlink()
    listed = _run("hsm", "--data-dir", str(tmp_path), "keys")
    assert listed.returncode == 1 and "Traceback" not in listed.stderr, listed.stderr
    assert f"master key file {master} is missing" in listed.stdout
    assert not master.exists()


def test_pki_init_writes_working_credentials(tmp_path: Path) -> None:
    """`paygate pki init` writes a CA and netsim/gateway credentials that build mTLS
    contexts, with private keys readable by the owner only."""
    from gateway.pki import Credentials, client_context, server_context

    proc = _run("pki", "init", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    for name in ("netsim", "gateway"):
        key = tmp_path / f"{name}.key"
        assert key.stat().st_mode & 0o077 == 0
        creds = Credentials(tmp_path / f"{name}.crt", key, tmp_path / "ca.crt")
        (server_context if name == "netsim" else client_context)(creds)
