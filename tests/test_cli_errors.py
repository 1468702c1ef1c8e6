"""Bad input to `paygate edge serve` and `paygate up`: a sentence and an exit code, never a
traceback (2 for usage errors, 1 for what fails at start)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.merchants import MerchantConfigError, MerchantDirectory

PAYGATE = str(Path(sys.executable).with_name("paygate"))


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PAYGATE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd="/", check=False)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def _edge(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run("edge", "serve", "--data-dir", str(tmp_path / "data"), "--port", "0", *args)


def _up(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    listen = {"--grpc": "127.0.0.1:0", "--http": "127.0.0.1:0", "--netsim-port": "0"}
    for flag in args:
        listen.pop(flag, None)
    defaults = [part for item in listen.items() for part in item]
    return _run("up", "--data-dir", str(tmp_path / "data"), *defaults, *args, timeout=60)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(("text", "message"), [
    ("{", "is not valid JSON"),
    (None, "cannot read"),
    ('[{"id": 5}]', "the merchant directory must be an object with a merchants list"),
], ids=["invalid-json", "missing", "list"])
def test_edge_serve_refuses_a_bad_merchant_file(tmp_path: Path, text: str | None,
                                                message: str) -> None:
    """A merchant file that is missing, not JSON or not a directory is a usage error."""
    path = tmp_path / "merchants.json"
    if text is not None:
        path.write_text(text)
    proc = _edge(tmp_path, "--merchants", str(path))
    assert proc.returncode == 2 and message in proc.stdout, proc.stdout + proc.stderr


def test_merchant_entries_must_be_objects_with_an_id() -> None:
    """An entry of the merchant directory that is not an object with an id is named."""
    with pytest.raises(MerchantConfigError, match=r"merchants\[1\] must be an object"):
        MerchantDirectory.from_data({"merchants": [{"id": "a"}, "b"]})


@pytest.mark.parametrize(("args", "message"), [
    (["--log-level", "LOUD"], "--log-level: invalid choice"),
    (["--port", "-1"], "port -1 is not in 0..65535"),
    (["--port", "99999"], "port 99999 is not in 0..65535"),
    (["--hsm-threads", "-1"], "--hsm-threads: must be 0 or more"),
], ids=["log-level", "negative-port", "big-port", "hsm-threads"])
def test_edge_serve_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    """A log level, port or thread count out of range is refused by the parser (exit 2)."""
    proc = _run("edge", "serve", "--data-dir", str(tmp_path), *args, timeout=20)
    assert proc.returncode == 2 and message in proc.stderr, proc.stdout + proc.stderr


def test_edge_serve_names_an_address_it_cannot_listen_on(tmp_path: Path,
                                                        busy_port: int) -> None:
    """An unresolvable host or a port in use is "cannot listen on HOST:PORT: why", exit 1."""
    proc = _edge(tmp_path, "--host", "999.9.9.9")
    assert proc.returncode == 1 and "cannot listen on 999.9.9.9:0: " in proc.stdout
    proc = _run("edge", "serve", "--data-dir", str(tmp_path / "data"),
                "--port", str(busy_port))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"cannot listen on 127.0.0.1:{busy_port}: address already in use" in proc.stdout


def test_edge_serve_names_a_port_file_it_cannot_write(tmp_path: Path) -> None:
    """A port file in a folder that does not exist is a clean error, exit 1."""
    proc = _edge(tmp_path, "--port-file", str(tmp_path / "nonexistent" / "port"))
    assert proc.returncode == 1 and "cannot write the port file" in proc.stdout


def test_edge_serve_refuses_a_master_key_others_can_read(tmp_path: Path) -> None:
    """A master key file with mode 0644 is refused with the key store's message, exit 1."""
    key = tmp_path / "data" / "hsm" / "master.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(bytes(32))
    key.chmod(0o644)
    proc = _edge(tmp_path)
    assert proc.returncode == 1 and "has mode 0644" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize(("flag", "what"), [
    ("--http", "the HTTP edge"), ("--grpc", "the gRPC API"),
    ("--netsim-port", "the embedded netsim"),
])
def test_up_names_the_listener_whose_port_is_in_use(tmp_path: Path, busy_port: int,
                                                    flag: str, what: str) -> None:
    """`paygate up` with a port in use says which listener failed and exits 1."""
    value = str(busy_port) if flag == "--netsim-port" else f"127.0.0.1:{busy_port}"
    proc = _up(tmp_path, flag, value)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert (f"paygate up: cannot listen on 127.0.0.1:{busy_port} for {what}: "
            "address already in use") in proc.stdout


@pytest.mark.parametrize("listen", ["999.1.1.1:0", "[::1:0"])
def test_up_names_a_grpc_address_it_cannot_use(tmp_path: Path, listen: str) -> None:
    """An unresolvable or malformed `[grpc] listen` is a clean error naming it, exit 1."""
    config = tmp_path / "paygate.toml"
    config.write_text(f'[grpc]\nlisten = "{listen}"\n')
    proc = _run("up", "--config", str(config), "--data-dir", str(tmp_path / "data"),
                "--http", "127.0.0.1:0", "--netsim-port", "0", timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"paygate up: cannot listen on {listen} for the gRPC API: " in proc.stdout


def test_up_exit_after_demo_needs_demo(tmp_path: Path) -> None:
    """`--exit-after-demo` ("with --demo" in the help) without `--demo` is a usage error."""
    proc = _up(tmp_path, "--exit-after-demo")
    assert proc.returncode == 2 and "needs --demo" in proc.stdout, proc.stdout + proc.stderr
