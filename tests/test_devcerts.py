"""`paygate dev-certs`: a dev CA and the certificates of every mutual-TLS hop, 0600 keys,
working mutual TLS on loopback, idempotent runs and --force."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.pki import Credentials, client_context, peer_common_name, server_context

PAYGATE = str(Path(sys.executable).with_name("paygate"))
NAMES = ("gateway-server", "netsim", "gateway", "checkout-service")


def _dev_certs(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PAYGATE_")}
    environ.update(env)
    return subprocess.run([PAYGATE, "dev-certs", *args], capture_output=True, text=True,
                          timeout=60, check=False, env=environ, cwd="/")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _creds(folder: Path, name: str) -> Credentials:
    return Credentials(folder / f"{name}.crt", folder / f"{name}.key", folder / "ca.crt")


async def _handshake(folder: Path, server_name: str, client_name: str) -> tuple[str, str]:
    """Connect a client to a server over mutual TLS on loopback; return (the CN the server
    saw, the CN the client saw)."""
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_common_name(writer.get_extra_info("ssl_object")))
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0,
                                        ssl=server_context(_creds(folder, server_name)))
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(_creds(folder, client_name)))
        try:
            assert await reader.readline() == b"ok\n"
            server_cn = peer_common_name(writer.get_extra_info("ssl_object"))
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    return seen[0], server_cn


def test_writes_every_certificate_with_private_keys(tmp_path: Path) -> None:
    """A first run writes the CA and the four certificates, every key readable by the
    owner only."""
    out = tmp_path / "pki"
    proc = _dev_certs("--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in NAMES:
        assert (out / f"{name}.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert stat.S_IMODE((out / f"{name}.key").stat().st_mode) == 0o600
        assert f"{name}: created" in proc.stdout
    assert (out / "ca.crt").exists()
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


@pytest.mark.parametrize(("server", "client"), [("gateway-server", "checkout-service"),
                                                 ("netsim", "gateway")])
def test_certificates_make_mutual_tls(tmp_path: Path, server: str, client: str) -> None:
    """The server and client certificates complete a mutual-TLS handshake on loopback and
    each side sees the other's common name."""
    assert _dev_certs("--out", str(tmp_path)).returncode == 0
    seen_by_server, seen_by_client = asyncio.run(_handshake(tmp_path, server, client))
    assert seen_by_server == client
    assert seen_by_client == server


def test_rerun_keeps_the_files(tmp_path: Path) -> None:
    """Running again changes no file and says so."""
    assert _dev_certs("--out", str(tmp_path)).returncode == 0
    before = _files(tmp_path)
    proc = _dev_certs("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path) == before
    assert proc.stdout.count(": kept") == len(NAMES)


def test_missing_certificate_is_issued_by_the_same_ca(tmp_path: Path) -> None:
    """A deleted certificate is issued again by the saved CA, so it still works with the
    certificates that were kept."""
    assert _dev_certs("--out", str(tmp_path)).returncode == 0
    before = _files(tmp_path)
    (tmp_path / "checkout-service.crt").unlink()
    proc = _dev_certs("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    after = _files(tmp_path)
    assert "checkout-service: created" in proc.stdout
    assert after["checkout-service.key"] != before["checkout-service.key"]
    assert {k: v for k, v in after.items() if not k.startswith("checkout-service")} == {
        k: v for k, v in before.items() if not k.startswith("checkout-service")}
    seen_by_server, _ = asyncio.run(_handshake(tmp_path, "gateway-server", "checkout-service"))
    assert seen_by_server == "checkout-service"


def test_force_replaces_everything(tmp_path: Path) -> None:
    """--force makes a new CA and new certificates, keys still 0600, and they work."""
    assert _dev_certs("--out", str(tmp_path)).returncode == 0
    before = _files(tmp_path)
    for name in NAMES:
        (tmp_path / f"{name}.key").chmod(0o644)
    proc = _dev_certs("--out", str(tmp_path), "--force")
    assert proc.returncode == 0, proc.stderr
    after = _files(tmp_path)
    assert after.keys() == before.keys()
    assert all(after[name] != before[name] for name in after)
    for name in NAMES:
        assert stat.S_IMODE((tmp_path / f"{name}.key").stat().st_mode) == 0o600
    seen_by_server, _ = asyncio.run(_handshake(tmp_path, "gateway-server", "checkout-service"))
    assert seen_by_server == "checkout-service"


def test_refuses_to_mix_with_a_ca_it_cannot_sign_for(tmp_path: Path) -> None:
    """With certificates present but no CA key, a run that would need to issue one fails
    and leaves the files as they were."""
    assert _dev_certs("--out", str(tmp_path)).returncode == 0
    (tmp_path / "ca.key").unlink()
    (tmp_path / "gateway.crt").unlink()
    before = _files(tmp_path)
    proc = _dev_certs("--out", str(tmp_path))
    assert proc.returncode == 1 and "--force" in proc.stderr
    assert _files(tmp_path) == before


def test_default_folder_follows_the_data_dir(tmp_path: Path) -> None:
    """Without --out the certificates go to DATA_DIR/pki, where the configuration expects
    them."""
    proc = _dev_certs(PAYGATE_DATA_DIR=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pki" / "gateway-server.crt").exists()
    assert (tmp_path / "pki" / "checkout-service.key").exists()
